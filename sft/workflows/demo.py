"""The demo: the main job on the offline default, end to end in a few minutes on a CPU. LoRA
fine-tuning of SmolLM2-135M-Instruct on the built-in data, then the base model and its fine-tune
side by side on held-out records of the same split training used."""

import time
from pathlib import Path

from sft.workflows.timing import minutes

REPO = Path(__file__).resolve().parents[2]
DEMO_RECIPE = REPO / "recipes" / "smollm2-135m-lora.yaml"


def run_demo(
    output_dir: Path, recipe_path: str, train_records: int, eval_records: int, max_new_tokens: int, overwrite: bool
) -> None:
    from sft.data.load import display_source
    from sft.data.split import load_splits
    from sft.evaluation.compare import compare_models
    from sft.evaluation.report import results_table
    from sft.inference.settings import GenerationSettings
    from sft.training.config import parse_recipe
    from sft.training.run import train

    model_dir = output_dir / "model"
    argv = [recipe_path, "--output_dir", str(model_dir), "--max_train_records", str(train_records)]
    # --overwrite covers the demo's own training run too: it replaces what that run wrote, nothing else.
    recipe = parse_recipe([*argv, *(["--overwrite_output_dir", "true"] if overwrite else [])])
    started = time.perf_counter()
    train(recipe)
    seconds = time.perf_counter() - started
    held_out = load_splits(recipe.data)["test"][:eval_records]
    comparison = compare_models(
        recipe.model.model_name_or_path,
        str(model_dir),
        held_out,
        output_dir / "compare",
        GenerationSettings(max_new_tokens=max_new_tokens),
        data=recipe.data.dataset_name,
        split="test",
    )
    base_name = recipe.model.model_name_or_path
    rows = {f"{base_name} (before)": comparison["base"], "fine-tuned (after)": comparison["model"]}
    shown = display_source(recipe.data.dataset_name)
    print(f"\ntrained in {minutes(seconds)}; {len(held_out)} held-out records of {shown}\n")
    print(results_table(rows))
    print(f"\nmodel (LoRA adapter), metrics.json, loss.png: {model_dir}")
    print(f"side-by-side report: {output_dir / 'compare' / 'report.md'}")
    print(f"try it: sft chat {model_dir}")
