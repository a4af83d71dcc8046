"""`sft reproduce`: split an instruction file the seed's way, fine-tune the offline default with the
project's best recipe, generate and score the test responses, and compare with the base model and,
where available, the book's GPT-2 medium responses."""

import argparse
from pathlib import Path
from typing import Any

from sft.errors import SFTError

REPO = Path(__file__).resolve().parents[1]
DEFAULT_RECIPE = REPO / "recipes" / "smollm2-135m.yaml"
REFERENCE_NAME = "instruction-data-with-response.json"


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sft reproduce",
        description="Split DATA (first 85%% train, next 10%% test, rest validation), fine-tune with RECIPE on the "
        "training split (validation loss during training), then generate and score the test split and print the "
        "base model, the fine-tune and the book's GPT-2 medium responses side by side.",
        epilog="example: sft reproduce --data ../shared/data/instruction-data.json --output-dir r",
    )
    parser.add_argument("--data", required=True, help="instruction file (Alpaca JSON/JSONL, URL or Hub id)")
    parser.add_argument("--output-dir", required=True, help="where the splits, model, evaluations and table go")
    parser.add_argument("--recipe", default=str(DEFAULT_RECIPE), help="training recipe (default: %(default)s)")
    parser.add_argument(
        "--reference",
        default=None,
        help=f"responses file to score alongside (default: {REFERENCE_NAME} beside DATA, if present)",
    )
    parser.add_argument("--skip-base", action="store_true", help="do not evaluate the base model")
    parser.add_argument(
        "overrides", nargs=argparse.REMAINDER, help="recipe overrides after `--`, e.g. -- --num_train_epochs 1"
    )
    return parser


def main(argv: list[str]) -> int:
    args = make_parser().parse_args(argv)
    overrides = [a for a in args.overrides if a != "--"]
    reproduce(args.data, Path(args.output_dir), Path(args.recipe), overrides, args.reference, args.skip_base)
    return 0


def reproduce(
    data: str, out: Path, recipe: Path, overrides: list[str], reference: str | None, skip_base: bool
) -> dict[str, Any]:
    from sft.config import parse_recipe
    from sft.data.load import load_records, save_records
    from sft.data.split import split_records
    from sft.evaluation import evaluate_model
    from sft.paths import atomic_write_json, atomic_write_text
    from sft.runs import minutes, results_table, train_recipe
    from sft.scoring import score_file

    if not recipe.is_file():
        raise SFTError(f"recipe not found: {recipe}")
    data_args, model_args, _ = parse_recipe([str(recipe), *overrides])
    splits = split_records(
        load_records(data), train_fraction=data_args.train_fraction, test_fraction=data_args.test_fraction
    )
    for name, records in splits.items():
        save_records(out / "data" / f"{name}.json", records)
    print(
        f"split {data}: {len(splits['train'])} train, {len(splits['validation'])} validation, "
        f"{len(splits['test'])} test -> {out / 'data'}"
    )

    model_dir = out / "model"
    train_metrics, train_seconds = train_recipe(
        recipe, [*overrides, "--dataset_name", data, "--output_dir", str(model_dir)]
    )
    rows: dict[str, dict[str, Any]] = {}
    if not skip_base:
        rows[f"{model_args.model_name_or_path} (base)"] = evaluate_model(
            model_args.model_name_or_path, splits["test"], out / "base-eval", data=data, split="test"
        )
    tuned = evaluate_model(str(model_dir), splits["test"], out / "eval", data=data, split="test")
    rows[f"{model_args.model_name_or_path} fine-tuned ({recipe.name})"] = tuned
    reference_path = Path(reference) if reference else Path(data).with_name(REFERENCE_NAME)
    if reference_path.is_file():
        rows["book's GPT-2 medium (355M) responses"] = score_file(reference_path)
    for plot in ("loss.png", "loss.pdf"):
        if (model_dir / plot).is_file():
            (out / "eval" / plot).write_bytes((model_dir / plot).read_bytes())

    table = results_table(rows)
    summary = {
        "data": data,
        "recipe": str(recipe),
        "overrides": overrides,
        "train_seconds": round(train_seconds, 1),
        "train_metrics": train_metrics,
        "rows": {
            name: {k: m.get(k) for k in ("rouge_l", "bleu", "exact_match", "ended_at_eos", "n")}
            for name, m in rows.items()
        },
    }
    atomic_write_json(out / "results.json", summary)
    atomic_write_text(out / "results.md", f"{table}\n\nTraining time: {minutes(train_seconds)} (wall clock).\n")
    print(f"\n{table}\n\ntraining time: {minutes(train_seconds)}; test records: {len(splits['test'])}")
    print(
        f"wrote {out / 'eval'} (responses.json, metrics.json, report.md, loss.png), {out / 'model'}, "
        f"{out / 'results.md'}"
    )
    return summary
