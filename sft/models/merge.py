"""Fold a LoRA adapter into its base model and save a standalone model.

Merging happens in float32 so that the merged weights match base plus adapter to rounding error,
whatever precision the adapter was trained in.
"""

import shutil
from pathlib import Path

from sft.errors import SFTError
from sft.models.load import is_adapter_dir
from sft.paths import ADAPTER_CONFIG, EVAL_DIR, EVAL_METRICS_FILE, LOSS_PLOT, METRICS_FILE, RECIPE_FILE, TEMPLATE_FILE

# Carried over so that inference, `sft push` and its model card see the same run as the adapter's.
CARRIED_FILES = (TEMPLATE_FILE, RECIPE_FILE, METRICS_FILE, LOSS_PLOT, f"{EVAL_DIR}/{EVAL_METRICS_FILE}")


def merge_adapter(adapter_dir: str | Path, output_dir: str | Path) -> Path:
    """Base model + adapter, merged, saved to `output_dir` (replaced only once complete); returns it."""
    import torch

    from sft.models.load import load_model, load_tokenizer
    from sft.paths import atomic_directory

    adapter_dir, output = Path(adapter_dir), Path(output_dir)
    if not is_adapter_dir(adapter_dir):
        raise SFTError(f"{adapter_dir} is not an adapter directory (no {ADAPTER_CONFIG}); nothing to merge")
    if output.resolve() == adapter_dir.resolve():
        raise SFTError("--output must differ from the adapter directory, which the merge reads")
    check_mergeable(adapter_dir)
    model = load_model(str(adapter_dir), dtype=torch.float32)
    tokenizer = load_tokenizer(str(adapter_dir))
    merged = model.merge_and_unload()
    with atomic_directory(output) as staging:
        merged.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        for name in CARRIED_FILES:
            if (adapter_dir / name).is_file():
                (staging / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(adapter_dir / name, staging / name)
    return output


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
