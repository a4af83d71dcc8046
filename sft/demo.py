"""`sft demo`: the main job on the offline default, end to end in a few minutes on a CPU: LoRA
fine-tuning of SmolLM2-135M-Instruct on the built-in data, then the base model and its fine-tune
side by side on held-out records."""

import argparse
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEMO_RECIPE = REPO / "recipes" / "smollm2-135m-lora.yaml"


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sft demo",
        description="Fine-tune the offline default (SmolLM2-135M-Instruct, LoRA) on the built-in synthetic data "
        "and compare it with the base model on held-out records. Needs no network.",
    )
    parser.add_argument("--output-dir", default="out/demo", help="where everything goes (default: %(default)s)")
    parser.add_argument("--recipe", default=str(DEMO_RECIPE), help="training recipe (default: %(default)s)")
    parser.add_argument(
        "--train-records",
        type=int,
        default=320,
        help="training records used, to keep the demo to minutes on a CPU (default: 320)",
    )
    parser.add_argument("--eval-records", type=int, default=40, help="held-out records compared (default: 40)")
    parser.add_argument("--max-new-tokens", type=int, default=96, help="longest response (default: 96)")
    return parser


def main(argv: list[str]) -> int:
    from sft.compare import compare_models
    from sft.config import parse_recipe
    from sft.data.load import load_records
    from sft.data.split import split_records
    from sft.runs import minutes, results_table, train_recipe

    args = make_parser().parse_args(argv)
    out = Path(args.output_dir)
    model_dir = out / "model"
    data_args, model_args, _ = parse_recipe([args.recipe])
    _, seconds = train_recipe(
        args.recipe, ["--output_dir", str(model_dir), "--max_train_records", str(args.train_records)]
    )
    held_out = split_records(
        load_records(data_args.dataset_name),
        train_fraction=data_args.train_fraction,
        test_fraction=data_args.test_fraction,
    )["test"][: args.eval_records]
    comparison = compare_models(
        model_args.model_name_or_path,
        str(model_dir),
        held_out,
        out / "compare",
        max_new_tokens=args.max_new_tokens,
        data=data_args.dataset_name,
        split="test",
    )
    rows = {f"{model_args.model_name_or_path} (before)": comparison["base"], "fine-tuned (after)": comparison["model"]}
    print(f"\ntrained in {minutes(seconds)}; {len(held_out)} held-out records of {data_args.dataset_name}\n")
    print(results_table(rows))
    print(f"\nmodel (LoRA adapter), metrics.json, loss.png: {model_dir}")
    print(f"side-by-side report: {out / 'compare' / 'report.md'}")
    print(f"try it: sft chat {model_dir}")
    return 0
