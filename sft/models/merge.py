"""Fold a LoRA adapter into its base model and save a standalone model.

Merging happens in float32 so that the merged weights match base plus adapter to rounding error,
whatever precision the adapter was trained in.
"""

import shutil
from pathlib import Path

from sft.errors import SFTError
from sft.models.load import OFFLINE_DEFAULT, TINY_MODELS, adapter_base, is_adapter_dir
from sft.paths import (
    ADAPTER_CONFIG,
    EVAL_METRICS_FILE,
    GENERATION_CONFIG,
    LOSS_PLOT,
    METRICS_FILE,
    MODEL_CONFIG,
    MODEL_WEIGHTS,
    RECIPE_FILE,
    TEMPLATE_FILE,
    TOKENIZER_FILES,
    cache_dir,
    check_complete,
    check_output_dir,
    check_writable,
    staged_output,
)

# Carried over so that inference, `sft push` and its model card see the same run as the adapter's.
CARRIED_FILES = (TEMPLATE_FILE, RECIPE_FILE, METRICS_FILE, LOSS_PLOT, EVAL_METRICS_FILE)
# What a merge writes, and so all it may replace in an existing output directory (`--overwrite`): one
# of these that the new merge lacks (an earlier run's loss plot, say) goes too, so that no file
# describes another model.
MERGED_FILES = (
    *MODEL_WEIGHTS,
    "model-*-of-*.safetensors",
    MODEL_CONFIG,
    GENERATION_CONFIG,
    *TOKENIZER_FILES,
    *CARRIED_FILES,
)


def merge_adapter(adapter_dir: str | Path, output_dir: str | Path, overwrite: bool = False) -> Path:
    """Base model + adapter, merged, saved to `output_dir`; returns it. The files appear there all at once,
    only once every one is written. A non-empty `output_dir` is refused unless `overwrite`, and then only
    the merged model's files are replaced there."""
    import torch

    from sft.models.chat_template import stop_at_trained_eos
    from sft.models.load import load_model, load_tokenizer

    adapter_dir, output = Path(adapter_dir), Path(output_dir)
    if not is_adapter_dir(adapter_dir):
        raise SFTError(f"{adapter_dir} is not an adapter directory (no {ADAPTER_CONFIG}); nothing to merge")
    check_complete(adapter_dir)
    check_output(adapter_dir, output, overwrite)
    check_mergeable(adapter_dir)
    model = load_model(str(adapter_dir), dtype=torch.float32)
    tokenizer = load_tokenizer(str(adapter_dir))
    merged = model.merge_and_unload()
    stop_at_trained_eos(merged.generation_config, tokenizer)
    with staged_output(output, owned=MERGED_FILES) as staging:
        merged.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        for name in CARRIED_FILES:
            if (adapter_dir / name).is_file():
                shutil.copy2(adapter_dir / name, staging / name)
    return output


def check_output(adapter_dir: Path, output: Path, overwrite: bool) -> None:
    """Refuse, before anything is loaded, an output that is a file, holds or sits inside the adapter or a
    local base model, holds someone's files (without `overwrite`), is not writable, or holds an adapter,
    which loaders would take instead of the merged model."""
    base = adapter_base(adapter_dir)
    local_base = Path(base).expanduser()
    if base.lower() in (OFFLINE_DEFAULT, *TINY_MODELS):
        local_base = cache_dir() / "models" / base.lower()
    check_output_dir(output, overwrite, inputs=[adapter_dir, *([local_base] if local_base.is_dir() else [])])
    check_writable(output)
    if (output / ADAPTER_CONFIG).exists():
        raise SFTError(
            f"{output} holds an adapter ({ADAPTER_CONFIG}), which loaders would take instead of the merged model; "
            "choose another directory for the merged model"
        )


def check_mergeable(adapter_dir: Path) -> None:
    """Prompt-learning adapters (soft prompts) add inputs rather than weight deltas: nothing to fold in."""
    from peft import PeftConfig

    config = PeftConfig.from_pretrained(str(adapter_dir))
    if config.is_prompt_learning:
        kind = config.peft_type.value.lower().replace("_", " ")
        raise SFTError(
            f"{adapter_dir} holds a {kind} adapter, which cannot be merged into the weights; "
            "load the adapter directory directly instead"
        )
