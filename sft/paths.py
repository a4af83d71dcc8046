"""Where sft keeps its cache, what the files of a run directory are called, and how files are written
safely. Every module names a run's files through the constants here, never through a literal."""

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

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
MODEL_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")

# What `sft eval` and `sft compare` write into their output directory.
RESPONSES_FILE = "responses.json"
EVAL_METRICS_FILE = "metrics.json"
REPORT_FILE = "report.md"
COMPARE_FILE = "compare.json"
# Where `sft push --dry-run` stages the exact upload, inside the model directory.
HUB_STAGING_DIR = "hub-upload"
# Where `sft reproduce` puts the fine-tune's evaluation, which the model card reads when it is there.
EVAL_DIR = "eval"


def cache_dir() -> Path:
    """The cache root: `$SFT_CACHE`, else `~/.cache/sft`."""
    root = os.environ.get("SFT_CACHE") or Path.home() / ".cache" / "sft"
    path = Path(root).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write `text` to `path` so that readers see the old file or the whole new one, never a part."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes files private; outputs are ordinary files
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


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
    """Yield a temporary sibling directory that replaces `path` only once the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    os.chmod(tmp, 0o777 & ~current_umask())
    try:
        yield tmp
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


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
    "generation_config.json",
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
