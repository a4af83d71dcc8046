"""The results run: split an instruction file as the recipe says, fine-tune the offline default with the
project's best recipe, generate and score the test responses, and compare with the base model and,
where available, the book's GPT-2 medium responses."""

import time
from pathlib import Path
from typing import Any

from sft.errors import SFTError
from sft.workflows.timing import minutes

REPO = Path(__file__).resolve().parents[2]
DEFAULT_RECIPE = REPO / "recipes" / "smollm2-135m.yaml"
REFERENCE_NAME = "instruction-data-with-response.json"
HEADLINE_KEYS = ("rouge_l", "bleu", "exact_match", "ended_at_eos", "n")


def reproduce(
    data: str, out: Path, recipe_path: Path, overrides: list[str], reference: str | None, skip_base: bool
) -> dict[str, Any]:
    from sft.data.load import display_source, save_records
    from sft.data.split import load_splits
    from sft.evaluation.evaluate import evaluate_model
    from sft.evaluation.report import results_table
    from sft.evaluation.score import score_file
    from sft.paths import EVAL_DIR, LOSS_PLOTS, atomic_write_json, atomic_write_text
    from sft.training.config import parse_recipe
    from sft.training.run import train

    if not recipe_path.is_file():
        raise SFTError(f"recipe not found: {recipe_path}")
    model_dir = out / "model"
    recipe = parse_recipe([str(recipe_path), *overrides, "--dataset_name", data, "--output_dir", str(model_dir)])
    # The split training will use, the same settings; saved so that every split can be inspected.
    splits = load_splits(recipe.data)
    for name, records in splits.items():
        save_records(out / "data" / f"{name}.json", records)
    print(
        f"split {display_source(data)}: {len(splits['train'])} train, {len(splits['validation'])} validation, "
        f"{len(splits['test'])} test ({recipe.data.describe_split()}) -> {out / 'data'}"
    )

    started = time.perf_counter()
    train_metrics = train(recipe)
    train_seconds = time.perf_counter() - started
    base_name = recipe.model.model_name_or_path
    rows: dict[str, dict[str, Any]] = {}
    if not skip_base:
        rows[f"{base_name} (base)"] = evaluate_model(
            base_name, splits["test"], out / "base-eval", data=data, split="test"
        ).metrics
    tuned = evaluate_model(str(model_dir), splits["test"], out / EVAL_DIR, data=data, split="test").metrics
    rows[f"{base_name} fine-tuned ({recipe_path.name})"] = tuned
    reference_path = Path(reference) if reference else Path(data).with_name(REFERENCE_NAME)
    if reference_path.is_file():
        rows["book's GPT-2 medium (355M) responses"] = score_file(reference_path)
    for plot in LOSS_PLOTS:
        if (model_dir / plot).is_file():
            (out / EVAL_DIR / plot).write_bytes((model_dir / plot).read_bytes())

    table = results_table(rows)
    summary = {
        "data": display_source(data),
        "recipe": str(recipe_path),
        "overrides": overrides,
        "train_seconds": round(train_seconds, 1),
        "train_metrics": train_metrics,
        "rows": {name: {key: metrics.get(key) for key in HEADLINE_KEYS} for name, metrics in rows.items()},
    }
    atomic_write_json(out / "results.json", summary)
    atomic_write_text(out / "results.md", f"{table}\n\nTraining time: {minutes(train_seconds)} (wall clock).\n")
    print(f"\n{table}\n\ntraining time: {minutes(train_seconds)}; test records: {len(splits['test'])}")
    written = f"{out / EVAL_DIR} (responses.json, eval_metrics.json, report.md, loss.png)"
    print(f"wrote {written}, {model_dir}, {out / 'results.md'}")
    return summary
