"""A training run's output directory: refused where it holds another run, cleared of exactly that run's
files when the user asks to replace it, and filled with the run's files at the end."""

import fnmatch
import logging
import shutil
from pathlib import Path
from typing import Any

from sft.errors import SFTError
from sft.paths import (
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    CHECKPOINT_PREFIX,
    METRICS_FILE,
    MODEL_WEIGHTS,
    RECIPE_FILE,
    TRAINER_STATE_FILE,
    TRAINING_OUTPUTS,
    atomic_write_json,
    atomic_write_text,
)

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
    contents = sorted(entry.name for entry in path.iterdir()) if path.is_dir() else []
    if not contents:
        return
    if overwrite:
        if not remove:
            return
        removed = remove_training_outputs(path)
        if removed:
            logger.info("Removed the earlier run in %s (%s)", path, summary(removed))
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
    found = ", ".join(held) if held else f"{len(contents)} other files ({summary(contents)})"
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
        held.append(f"checkpoints ({summary([c.name for c in checkpoints])})")
    if not held and any((path / name).is_file() for name in (RECIPE_FILE, METRICS_FILE, TRAINER_STATE_FILE)):
        held.append("an incomplete run's files")
    return held


def remove_training_outputs(path: Path) -> list[str]:
    """Delete the files and checkpoint folders a training run writes; returns their names. Anything else
    in `path` is the user's and stays."""
    removed = []
    for entry in sorted(path.iterdir()):
        if not any(fnmatch.fnmatch(entry.name, pattern) for pattern in TRAINING_OUTPUTS):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()
        removed.append(entry.name)
    return removed


def summary(names: list[str], shown: int = 4) -> str:
    return ", ".join(names[:shown]) + (f" and {len(names) - shown} more" if len(names) > shown else "")


def save_run_files(
    trainer: Any, tokenizer: Any, template: Any, metrics: dict[str, Any], recipe: dict[str, Any], output_dir: str
) -> None:
    """Everything but the weights: tokenizer, prompt template, recipe, metrics, trainer state, loss plot."""
    from sft.training.plots import plot_losses

    output_dir = Path(output_dir)
    # The Trainer pickles its arguments beside the model; sft_config.yaml carries them instead.
    (output_dir / "training_args.bin").unlink(missing_ok=True)
    tokenizer.save_pretrained(output_dir)
    template.save(output_dir)
    atomic_write_text(output_dir / RECIPE_FILE, dump_yaml(recipe))
    trainer.state.save_to_json(str(output_dir / TRAINER_STATE_FILE))
    atomic_write_json(output_dir / METRICS_FILE, {k: round_metric(v) for k, v in metrics.items()})
    plot_losses(trainer.state.log_history, output_dir)
    logger.info(
        "Wrote the model, tokenizer, %s, %s, %s and the loss plot to %s",
        RECIPE_FILE,
        METRICS_FILE,
        TRAINER_STATE_FILE,
        output_dir,
    )


def round_metric(value: Any) -> Any:
    return round(value, 6) if isinstance(value, float) else value


def dump_yaml(data: dict[str, Any]) -> str:
    import yaml

    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
