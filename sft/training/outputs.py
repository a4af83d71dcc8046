"""A training run's output directory: locked while a run uses it, refused where it holds another run,
cleared of exactly that run's files when the user asks to replace it, and filled with the run's files at
the end, all at once: they are written into a staging folder and then moved into place."""

import json
import logging
import os
import shutil
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sft.errors import SFTError
from sft.paths import (
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    CHECKPOINT_PREFIX,
    GENERATION_CONFIG,
    INCOMPLETE_MARKER,
    LOCK_FILE,
    METRICS_FILE,
    MODEL_WEIGHTS,
    RECIPE_FILE,
    STAGING_PREFIX,
    TRAINER_STATE_FILE,
    TRAINING_OUTPUTS,
    atomic_write_json,
    atomic_write_text,
    listing,
    matches,
    os_errors,
    publish,
    remove,
    user_entries,
)

# The files the final save replaces; checkpoints stay, as the run may be resumed or load its best one.
FINAL_OUTPUTS = tuple(pattern for pattern in TRAINING_OUTPUTS if not pattern.startswith(CHECKPOINT_PREFIX))
FINAL_STAGING = f"{STAGING_PREFIX}final"  # one fixed name: every process of a run saves into it

logger = logging.getLogger(__name__)


def prepare_output_dir(
    output_dir: str | Path, trains_adapter: bool, overwrite: bool, resume: Any, remove: bool = True
) -> None:
    """Stop before any work where `output_dir` holds another run, unless the user said what to do with it.

    A directory must never end up holding both a full model and an adapter: every command would then
    load the adapter, whatever was trained last.
    """
    path = Path(output_dir)
    if path.exists() and not path.is_dir():
        raise SFTError(f"output_dir {path} is a file, not a directory; choose another --output_dir")
    contents = user_entries(path)
    if not contents and not (path / INCOMPLETE_MARKER).exists():
        return
    if overwrite:
        if not remove:
            return
        removed = remove_training_outputs(path)
        if removed:
            logger.info("Removed the earlier run in %s (%s)", path, listing(removed))
        return
    held = what_it_holds(path)
    if resume:
        other = "full model" if trains_adapter else "adapter"
        if other in held:
            mine = "an adapter" if trains_adapter else "a full model"
            raise SFTError(
                f"{path} holds a {other} from another run and this recipe trains {mine}; resuming there would "
                "leave both side by side. Choose another --output_dir, or replace the old run with "
                "--overwrite_output_dir true"
            )
        return
    found = ", ".join(held) if held else f"{len(contents)} other files ({listing(contents)})"
    raise SFTError(
        f"output_dir {path} already holds {found}; choose a new --output_dir, continue that run with "
        "--resume_from_checkpoint true, or replace it with --overwrite_output_dir true"
    )


def what_it_holds(path: Path) -> list[str]:
    """Which kinds of training output `path` holds, in words."""
    held = []
    if any((path / name).is_file() for name in MODEL_WEIGHTS):
        held.append("full model")
    if (path / ADAPTER_CONFIG).is_file() or any((path / name).is_file() for name in ADAPTER_WEIGHTS):
        held.append("adapter")
    checkpoints = sorted(path.glob(f"{CHECKPOINT_PREFIX}*"))
    if checkpoints:
        held.append(f"checkpoints ({listing([c.name for c in checkpoints])})")
    if (path / INCOMPLETE_MARKER).exists():
        held.append("a run stopped while saving")
    elif not held and any((path / name).is_file() for name in (RECIPE_FILE, METRICS_FILE, TRAINER_STATE_FILE)):
        held.append("an incomplete run's files")
    return held


def remove_training_outputs(path: Path) -> list[str]:
    """Delete the files and checkpoint folders a training run writes; returns their names. Anything else
    in `path` is the user's and stays."""
    removed = []
    for entry in sorted(path.iterdir()):
        if matches(entry.name, TRAINING_OUTPUTS):
            remove(entry)
            removed.append(entry.name)
    (path / INCOMPLETE_MARKER).unlink(missing_ok=True)
    return removed


@contextmanager
def run_lock(output_dir: str | Path) -> Iterator[None]:
    """Hold `output_dir` for this run: a second run into it is refused while this one lives. The lock file
    names its holder; a lock whose process is gone (killed, crashed) is taken over."""
    path = Path(output_dir) / LOCK_FILE
    with os_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
    holder = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    while True:
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            other = read_holder(path)
            if holder_alive(other):
                raise SFTError(
                    f"output_dir {output_dir} is in use by another training run (PID {other.get('pid')} on "
                    f"{other.get('host')}, since {other.get('started')}); wait for it or choose another --output_dir"
                ) from None
            logger.info("Taking over %s: PID %s is no longer running", path, other.get("pid"))
            path.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(holder, handle)
        break
    try:
        yield
    finally:
        if read_holder(path).get("pid") == holder["pid"]:
            path.unlink(missing_ok=True)


def read_holder(path: Path) -> dict[str, Any]:
    try:
        holder = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


def holder_alive(holder: dict[str, Any]) -> bool:
    """Whether the process that wrote a lock still runs. On another machine (a shared disk) that cannot be
    told, so the lock is respected."""
    pid = holder.get("pid")
    if not isinstance(pid, int):
        return False  # unreadable: a holder killed while writing it
    if holder.get("host") != socket.gethostname():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's live process
    return True


def clear_leftover_staging(output_dir: str | Path) -> None:
    """Staging folders of an earlier run of sft that was killed while saving; the lock says none is in use."""
    for entry in Path(output_dir).glob(f"{STAGING_PREFIX}*"):
        remove(entry)


@contextmanager
def final_staging(output_dir: str | Path, main_process: bool) -> Iterator[Path]:
    """The folder every process saves the final model into; on the main process its contents then replace
    the earlier outputs in one move (a marker file says the directory is incomplete while they move)."""
    output_dir = Path(output_dir)
    staging = output_dir / FINAL_STAGING
    if main_process:
        with os_errors(output_dir):
            if staging.exists():
                remove(staging)
            staging.mkdir(parents=True)
    try:
        with os_errors(output_dir):
            yield staging
            if main_process:
                publish(staging, output_dir, FINAL_OUTPUTS)
    except BaseException:
        if main_process:
            shutil.rmtree(staging, ignore_errors=True)
        raise


def save_run_files(
    trainer: Any, tokenizer: Any, template: Any, metrics: dict[str, Any], recipe: dict[str, Any], output_dir: Path
) -> None:
    """Everything but the weights: tokenizer with the chat template of the prompt it was trained on,
    generation config (an adapter's too), prompt template, recipe, metrics, trainer state, loss plot."""
    from sft.models.chat_template import install_chat_template
    from sft.training.plots import plot_losses

    output_dir = Path(output_dir)
    # The Trainer pickles its arguments beside the model; sft_config.yaml carries them instead.
    (output_dir / "training_args.bin").unlink(missing_ok=True)
    install_chat_template(tokenizer, template)
    tokenizer.save_pretrained(output_dir)
    if not (output_dir / GENERATION_CONFIG).is_file():  # PEFT saves an adapter without one
        trainer.accelerator.unwrap_model(trainer.model).generation_config.save_pretrained(output_dir)
    template.save(output_dir)
    atomic_write_text(output_dir / RECIPE_FILE, dump_yaml(recipe))
    trainer.state.save_to_json(str(output_dir / TRAINER_STATE_FILE))
    atomic_write_json(output_dir / METRICS_FILE, {k: round_metric(v) for k, v in metrics.items()})
    plot_losses(trainer.state.log_history, output_dir)


def round_metric(value: Any) -> Any:
    return round(value, 6) if isinstance(value, float) else value


def dump_yaml(data: dict[str, Any]) -> str:
    import yaml

    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
