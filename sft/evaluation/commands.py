"""`sft eval`, `sft score` and `sft compare`: the command line of the evaluation stage."""

import argparse
from pathlib import Path

from sft.data.split import SPLITS
from sft.inference.commands import MODEL_HELP, add_generation_options, generation_settings
from sft.inference.settings import GenerationSettings


def add_data_options(parser: argparse.ArgumentParser, command: str, default_output: str) -> None:
    """The options `sft eval` and `sft compare` share: data, split, generation and where results go."""
    parser.add_argument("--data", required=True, help="JSON/JSONL records, URL, Hub data set or sft-synth[:N]")
    parser.add_argument(
        "--split",
        choices=(*SPLITS, "all"),
        default="test",
        help="which part of the data (default test), split as the fine-tuned model's recipe split it "
        "(its sft_config.yaml), else the seed's way: 85%% train, 10%% test, the rest validation",
    )
    parser.add_argument("--limit", type=int, help="only the first N records of the split")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_generation_options(parser, batched=True)
    parser.add_argument("--output-dir", help=f"where to write the results (default {default_output})")
    parser.set_defaults(command=command)


def evaluation_inputs(args: argparse.Namespace, *models: str) -> tuple[GenerationSettings, list[dict[str, str]], Path]:
    """The generation settings (checked first), the records of `--split`, split with the settings the
    fine-tuned `--model` was trained with where it saved them, and the output directory: `--output-dir`,
    else one under runs/ named after `models`."""
    from sft.data.split import data_arguments_for_model, select_split
    from sft.evaluation.evaluate import slug

    settings = generation_settings(args)
    data_args = data_arguments_for_model(args.model if Path(args.model).is_dir() else None, args.data)
    records = select_split(data_args, args.split, args.limit)
    output_dir = Path(args.output_dir or Path("runs") / f"{args.command}-{'-vs-'.join(map(slug, models))}")
    return settings, records, output_dir


def make_eval_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sft eval",
        description="Generate responses for a data split and score them (ROUGE-L, BLEU, exact match); "
        "writes responses.json, eval_metrics.json and report.md.",
    )
    parser.add_argument("--model", required=True, help=MODEL_HELP)
    add_data_options(parser, "eval", "runs/eval-MODEL")
    return parser


def eval_command(argv: list[str]) -> int:
    from sft.evaluation.evaluate import evaluate_model
    from sft.evaluation.report import format_scores

    args = make_eval_parser().parse_args(argv)
    settings, records, output_dir = evaluation_inputs(args, args.model)
    metrics = evaluate_model(
        args.model, records, output_dir, settings, progress=not args.no_progress, data=args.data, split=args.split
    ).metrics
    print(format_scores(metrics))
    print(f"{metrics['seconds']:.1f} s, {metrics['responses_per_second'] or 0:.2f} responses/s")
    print(f"results in {output_dir}/ (responses.json, eval_metrics.json, report.md)")
    return 0


def make_score_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sft score",
        description="Score model responses against reference outputs: ROUGE-L F1 (mean over records), "
        "corpus BLEU (sacrebleu) and exact match.",
    )
    parser.add_argument("file", help="JSON or JSONL records with `output` and `model_response`")
    parser.add_argument("--output", help="also write the scores, per record included, to this JSON file")
    return parser


def score_command(argv: list[str]) -> int:
    from sft.evaluation.report import format_scores
    from sft.evaluation.score import score_file
    from sft.paths import check_file_output

    args = make_score_parser().parse_args(argv)
    if args.output:
        check_file_output(args.output)
    scores = score_file(args.file, args.output)
    print(format_scores(scores))
    if args.output:
        print(f"scores written to {args.output}")
    return 0


def make_compare_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sft compare",
        description="Run a base model and a fine-tuned model on the same prompts and report metric changes "
        "and the records that improved or regressed most.",
    )
    parser.add_argument("--base", required=True, help="the model before fine-tuning")
    parser.add_argument("--model", required=True, help="the fine-tuned model (full model or LoRA adapter)")
    add_data_options(parser, "compare", "runs/compare-BASE-vs-MODEL")
    return parser


def compare_command(argv: list[str]) -> int:
    from sft.evaluation.compare import compare_models
    from sft.evaluation.metrics import FIGURES

    args = make_compare_parser().parse_args(argv)
    settings, records, output_dir = evaluation_inputs(args, args.base, args.model)
    comparison = compare_models(
        args.base,
        args.model,
        records,
        output_dir,
        settings,
        progress=not args.no_progress,
        data=args.data,
        split=args.split,
    )
    base, tuned = comparison["base"], comparison["model"]
    print(f"{'':24}{'base':>10}{'model':>10}{'change':>10}")
    for figure in FIGURES:
        change = tuned[figure.key] - base[figure.key]
        shown = (figure.show(base[figure.key]), figure.show(tuned[figure.key]), figure.show_change(change))
        print(f"{figure.label:24}" + "".join(f"{value:>10}" for value in shown))
    counts = comparison["counts"]
    print(
        f"records: {counts['improved']} improved, {counts['regressed']} regressed, "
        f"{counts['unchanged']} unchanged (ROUGE-L)"
    )
    print(f"results in {output_dir}/ (compare.json, report.md, base/, model/)")
    return 0
