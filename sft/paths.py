"""Where sft keeps its cache, what the files of a run directory are called, and how files are written
safely. Every module names a run's files through the constants here, never through a literal."""

import errno
import fnmatch
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sft.errors import SFTError

# What `sft train` writes beside the model (or adapter) and its tokenizer.
TEMPLATE_FILE = "sft_template.json"  # the prompt layout, so inference renders prompts as training did
RECIPE_FILE = "sft_config.yaml"  # the merged recipe, secrets left out
METRICS_FILE = "metrics.json"  # training and validation loss, runtime, tokens/s
TRAINER_STATE_FILE = "trainer_state.json"
LOSS_PLOT = "loss.png"
LOSS_PLOTS = (LOSS_PLOT, "loss.pdf")
CHECKPOINT_PREFIX = "checkpoint-"
# What PEFT and Transformers write for an adapter and for a full model.
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
MODEL_CONFIG = "config.json"
GENERATION_CONFIG = "generation_config.json"
MODEL_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")

# What `sft eval` and `sft compare` write into their output directory. None shares a name with a training
# file, so evaluating into a model's directory keeps its training metrics.json; the model card reads
# EVAL_METRICS_FILE there.
RESPONSES_FILE = "responses.json"
EVAL_METRICS_FILE = "eval_metrics.json"
REPORT_FILE = "report.md"
COMPARE_FILE = "compare.json"
# What `sft judge` (and eval or compare with a judge) writes: none shares a name with eval's or training's
# files, so a judgement can sit beside the evaluation it judges.
JUDGEMENTS_FILE = "judgements.json"
JUDGE_METRICS_FILE = "judge_metrics.json"
JUDGE_REPORT_FILE = "judge_report.md"
JUDGE_CACHE_FILE = "judge_cache.jsonl"  # answers as they arrive, so a stopped run resumes
# Human ratings of a responses file, saved beside it by the review tab of `sft ui`; the format is in
# sft/evaluation/agreement.py. `sft score` and `sft eval` read them; nothing sft writes replaces them.
HUMAN_RATINGS_FILE = "human_ratings.json"
# Where `sft push --dry-run` stages the exact upload, inside the model directory.
HUB_STAGING_DIR = "hub-upload"
# Where `sft reproduce` puts the fine-tune's evaluation.
EVAL_DIR = "eval"


def cache_dir() -> Path:
    """The cache root: `$SFT_CACHE`, else `~/.cache/sft`."""
    root = os.environ.get("SFT_CACHE") or Path.home() / ".cache" / "sft"
    path = Path(root).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` so that readers see the old file or the whole new one, never a part. A full
    disk or a read-only folder is a one-line error naming the path, and leaves no temporary file."""
    path = Path(path)
    check_file_output(path)
    with os_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes files private; outputs are ordinary files
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def check_file_output(path: str | os.PathLike) -> None:
    """Before the work: a command that writes one file refuses a path that is a directory."""
    if Path(path).is_dir():
        raise SFTError(f"{path} is a directory; give a file name to write, e.g. {Path(path) / 'out.json'}")


def atomic_write_json(path: str | os.PathLike, data: Any) -> Path:
    return atomic_write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_directory(path: str | os.PathLike) -> Iterator[Path]:
    """For directories sft alone owns (its cache): yield a temporary sibling that becomes `path` once the
    block succeeds. `path` must not exist yet, so nothing already there is ever replaced."""
    path = Path(path)
    if path.exists():
        raise FileExistsError(f"{path} exists; atomic_directory only creates new directories")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    os.chmod(tmp, 0o777 & ~current_umask())
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


# Output directories that users name ----------------------------------------------------------------------
#
# A command writes its files into a staging folder inside the output directory, then moves them into
# place. While they move, a marker file says the directory is incomplete; every loader refuses a
# directory with the marker, so a run killed part way is never taken for a whole one. A command never
# deletes a file it did not write: an existing non-empty output directory is refused unless the user
# says to overwrite, and then only the files the command owns (its `owned` name patterns) are replaced.

INCOMPLETE_MARKER = ".sft-incomplete"
STAGING_PREFIX = ".sft-staging-"
LOCK_FILE = ".sft-lock"
# `check_writable`'s test file, there for an instant: another process of the same run (every rank checks) can see it.
PROBE_PREFIX = ".sft-probe-"
# Left by sft itself, never the user's: they do not make a directory "not empty".
OWN_BOOKKEEPING = (INCOMPLETE_MARKER, f"{STAGING_PREFIX}*", LOCK_FILE, f"{PROBE_PREFIX}*")
DISK_ERRNOS = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is used up"}
ACCESS_ERRNOS = {errno.EACCES: "permission denied", errno.EPERM: "permission denied", errno.EROFS: "read-only"}


def matches(name: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatch(name, pattern) for pattern in patterns)


def user_entries(directory: Path) -> list[str]:
    """What `directory` holds, leaving out sft's own staging, lock and marker files."""
    if not directory.is_dir():
        return []
    return sorted(entry.name for entry in directory.iterdir() if not matches(entry.name, OWN_BOOKKEEPING))


def listing(names: Sequence[str], shown: int = 4) -> str:
    return ", ".join(names[:shown]) + (f" and {len(names) - shown} more" if len(names) > shown else "")


def check_output_dir(
    target: str | os.PathLike,
    overwrite: bool,
    option: str = "--overwrite",
    inputs: Sequence[str | os.PathLike] = (),
) -> None:
    """Refuse, before any work, an output directory that is a file, that holds or sits inside one of the
    command's `inputs`, or that is not empty (unless `overwrite`)."""
    target = Path(target)
    if target.exists() and not target.is_dir():
        raise SFTError(f"{target} is a file, not a directory; choose a directory for the output")
    resolved = target.resolve()
    for source in inputs:
        source = Path(source).resolve()
        if source == resolved or resolved in source.parents or source in resolved.parents:
            raise SFTError(
                f"the output directory {target} holds or sits inside {source}, which this command reads; "
                "choose a directory outside it"
            )
    entries = user_entries(target)
    if entries and not overwrite:
        raise SFTError(
            f"{target} is not empty ({listing(entries)}); choose a new directory, or pass {option} to replace "
            "the files this command writes there (anything else stays)"
        )


def check_complete(directory: str | os.PathLike) -> None:
    """Refuse a directory whose last save was interrupted: its files may come from two different runs."""
    directory = Path(directory)
    if (directory / INCOMPLETE_MARKER).exists():
        raise SFTError(
            f"{directory} holds an incomplete output: the command that wrote it was stopped while saving; "
            "run that command again"
        )


@contextmanager
def staged_output(target: str | os.PathLike, owned: Sequence[str]) -> Iterator[Path]:
    """Yield an empty staging folder inside `target`; once the block succeeds, its contents replace the
    same-named entries of `target`, and the entries matching `owned` that the new output lacks (an earlier
    run's adapter beside a new full model, say) are removed. On failure the staging folder goes and
    `target` is left as it was (removed again where this call created it). A full disk or a read-only folder,
    in the block or while moving, is one line naming the path."""
    target = Path(target)
    created = not target.exists()
    with os_errors(target):
        target.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(dir=target, prefix=STAGING_PREFIX))
        os.chmod(staging, 0o777 & ~current_umask())
    try:
        with os_errors(target):
            yield staging
            publish(staging, target, owned)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if created and not any(target.iterdir()):
            target.rmdir()
        raise


def publish(staging: Path, target: Path, owned: Sequence[str]) -> None:
    """Move everything in `staging` into `target`, with the incomplete marker in place while it moves."""
    marker = target / INCOMPLETE_MARKER
    marker.write_text(f"{os.getpid()}\n", encoding="utf-8")
    new = {entry.name for entry in staging.iterdir()}
    for entry in target.iterdir():
        if entry.name not in new and matches(entry.name, owned) and not matches(entry.name, OWN_BOOKKEEPING):
            remove(entry)
    for name in sorted(new):
        source, destination = staging / name, target / name
        if destination.exists() and os.path.samefile(source, destination):
            source.unlink()  # a hard link to the file already in place: renaming one onto the other does nothing
            continue
        if destination.is_dir() and not destination.is_symlink():
            shutil.rmtree(destination)
        os.replace(source, destination)
    marker.unlink()
    staging.rmdir()


def remove(entry: Path) -> None:
    if entry.is_dir() and not entry.is_symlink():
        shutil.rmtree(entry)
    else:
        entry.unlink()


@contextmanager
def os_errors(path: str | os.PathLike) -> Iterator[None]:
    """Disk-full and permission errors as one line naming `path`, instead of a traceback."""
    try:
        yield
    except OSError as error:
        why = DISK_ERRNOS.get(error.errno) or ACCESS_ERRNOS.get(error.errno)
        if why is None:
            raise
        where = error.filename or path
        raise SFTError(f"cannot write {where}: {why}; free space or choose a writable directory") from None


def check_writable(directory: str | os.PathLike, needed_bytes: int = 0) -> None:
    """Fail in a second, not after hours of training: `directory` (or the nearest existing folder above it)
    must accept a file and have `needed_bytes` free."""
    directory = Path(directory)
    existing = directory
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise SFTError(f"{existing} is a file, not a directory; choose a directory for the output")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise SFTError(f"cannot write to {existing}: permission denied; choose a writable directory")
    with os_errors(existing):
        fd, probe = tempfile.mkstemp(dir=existing, prefix=PROBE_PREFIX)
        os.close(fd)
        os.unlink(probe)
    free = shutil.disk_usage(existing).free
    if needed_bytes and free < needed_bytes:
        raise SFTError(
            f"{existing} has {size(free)} free, and the output needs about {size(needed_bytes)}; "
            "free space or choose another directory"
        )


def size(count: float) -> str:
    """A byte count as people read it: 812 B, 3.4 MB, 1.2 GB."""
    for unit in ("B", "kB", "MB", "GB"):
        if count < 1000 or unit == "GB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    return f"{count:.1f} TB"


# Every file and folder a training run may write into its output directory, so that replacing an
# earlier run (`--overwrite_output_dir true`) removes exactly those and nothing of the user's.
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "vocab.txt",
    "merges.txt",
    "tokenizer.model",
    "chat_template.jinja",
    "chat_template.json",
)
TRAINING_OUTPUTS = (
    *MODEL_WEIGHTS,
    "model-*-of-*.safetensors",
    MODEL_CONFIG,
    GENERATION_CONFIG,
    ADAPTER_CONFIG,
    *ADAPTER_WEIGHTS,
    "README.md",  # PEFT writes a model card stub beside an adapter
    *TOKENIZER_FILES,
    TEMPLATE_FILE,
    RECIPE_FILE,
    METRICS_FILE,
    TRAINER_STATE_FILE,
    *LOSS_PLOTS,
    "training_args.bin",
    f"{CHECKPOINT_PREFIX}*",
)
