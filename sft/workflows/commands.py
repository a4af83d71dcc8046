"""`sft demo` and `sft reproduce`: the command line of the end-to-end runs."""

import argparse
from pathlib import Path

from sft.workflows.demo import DEMO_RECIPE
from sft.workflows.reproduce import DEFAULT_DPO_RECIPE, DEFAULT_RECIPE, REFERENCE_NAME


def make_demo_parser() -> argparse.ArgumentParser:
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
    add_overwrite_option(parser)
    return parser


def add_overwrite_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="run again into an output directory that holds an earlier run, replacing the files this command "
        "writes (anything else there stays); without it a non-empty directory is refused",
    )


def demo_command(argv: list[str]) -> int:
    from sft.paths import check_output_dir
    from sft.workflows.demo import run_demo

    args = make_demo_parser().parse_args(argv)
    check_output_dir(args.output_dir, args.overwrite)
    run_demo(
        Path(args.output_dir), args.recipe, args.train_records, args.eval_records, args.max_new_tokens, args.overwrite
    )
    return 0


def make_reproduce_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sft reproduce",
        description="Split DATA as RECIPE says (by default the first 85%% train, the next 10%% test, the rest "
        "validation), fine-tune with RECIPE on the training split (validation loss during training), then "
        "generate and score the test split and print the base model, the fine-tune and the book's GPT-2 medium "
        "responses side by side.",
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
        "--stages",
        default="sft",
        help="sft (default), or sft,dpo: then build preference pairs from the fine-tune's answers to its training "
        "split (the reference chosen, its answer rejected), train DPO on them and add its row",
    )
    parser.add_argument("--dpo-recipe", default=str(DEFAULT_DPO_RECIPE), help="DPO recipe (default: %(default)s)")
    parser.add_argument(
        "--pair-samples",
        type=int,
        default=1,
        metavar="K",
        help="with dpo: answers per training record, the worst by ROUGE-L rejected (default 1: the greedy answer; "
        "above 1 they are sampled at temperature 1)",
    )
    add_overwrite_option(parser)
    parser.add_argument(
        "overrides", nargs=argparse.REMAINDER, help="recipe overrides after `--`, e.g. -- --num_train_epochs 1"
    )
    return parser


def reproduce_command(argv: list[str]) -> int:
    from sft.paths import check_output_dir
    from sft.preference.pairs import PairSettings
    from sft.workflows.reproduce import parse_stages, reproduce

    args = make_reproduce_parser().parse_args(argv)
    stages = parse_stages(args.stages)
    overrides = [a for a in args.overrides if a != "--"]
    check_output_dir(args.output_dir, args.overwrite)
    if args.overwrite:
        overrides.append("--overwrite_output_dir=true")
    reproduce(
        args.data,
        Path(args.output_dir),
        Path(args.recipe),
        overrides,
        args.reference,
        args.skip_base,
        stages,
        Path(args.dpo_recipe),
        PairSettings(samples=args.pair_samples),
    )
    return 0
