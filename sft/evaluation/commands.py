"""`sft eval`, `sft score`, `sft compare` and `sft judge`: the command line of the evaluation stage."""

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sft.data.split import SPLITS
from sft.inference.commands import MODEL_HELP, add_generation_options, generation_settings
from sft.inference.settings import GenerationSettings

if TYPE_CHECKING:
    from sft.evaluation.bootstrap import BootstrapSettings
    from sft.evaluation.judge import JudgeSettings


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
    add_bootstrap_options(parser)
    parser.set_defaults(command=command)


def add_bootstrap_options(parser: argparse.ArgumentParser) -> None:
    """How the 95% intervals are drawn: `sft eval`, `sft score` and `sft compare` share these."""
    from sft.evaluation.bootstrap import RESAMPLES, SEED

    group = parser.add_argument_group("95% bootstrap intervals over records")
    group.add_argument(
        "--bootstrap-resamples",
        type=positive_int,
        default=RESAMPLES,
        metavar="N",
        help=f"resamples of the records (default {RESAMPLES})",
    )
    group.add_argument(
        "--bootstrap-seed",
        type=int,
        default=SEED,
        metavar="SEED",
        help=f"seed of the resampling, so reruns give the same intervals (default {SEED})",
    )


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def bootstrap_settings(args: argparse.Namespace) -> "BootstrapSettings":
    from sft.evaluation.bootstrap import BootstrapSettings

    return BootstrapSettings(resamples=args.bootstrap_resamples, seed=args.bootstrap_seed)


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
    add_judge_options(parser, embedded=True)
    return parser


def eval_command(argv: list[str]) -> int:
    from sft.evaluation.agreement import format_ratings
    from sft.evaluation.evaluate import evaluate_model
    from sft.evaluation.report import format_scores

    parser = make_eval_parser()
    args = parser.parse_args(argv)
    judge = judge_settings(args, parser, embedded=True)
    settings, records, output_dir = evaluation_inputs(args, args.model)
    metrics = evaluate_model(
        args.model,
        records,
        output_dir,
        settings,
        progress=not args.no_progress,
        data=args.data,
        split=args.split,
        bootstrap=bootstrap_settings(args),
        judge=judge,
    ).metrics
    print(format_scores(metrics))
    if judge is not None:
        print(judge_line(metrics["judge"]))
    if metrics.get("human_ratings"):
        print(format_ratings(metrics["human_ratings"]))
    print(f"{metrics['seconds']:.1f} s, {metrics['responses_per_second'] or 0:.2f} responses/s")
    judged = ", judgements.json; judge answers cached in judge_cache.jsonl" if judge is not None else ""
    print(f"results in {output_dir}/ (responses.json, eval_metrics.json, report.md{judged})")
    return 0


def judge_line(info: dict) -> str:
    """How the judge was asked this time: `judge m at URL (rubric reference): 4 requests, 0 from the cache`."""
    note = "" if info["json_schema"] else "; its replies were read as plain text (the server refused the schema)"
    return (
        f"judge {info['judge_model']} at {info['endpoint']} (rubric {info['rubric']}): {info['requests']} requests "
        f"sent, {info['from_cache']} records from the cache{note}"
    )


def make_score_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sft score",
        description="Score model responses against reference outputs: ROUGE-L F1 (mean over records), "
        "corpus BLEU (sacrebleu) and exact match, each with a 95% bootstrap interval over the records. "
        "Human ratings beside the file (human_ratings.json, saved by the review tab of `sft ui`) are summarised "
        "too, with their agreement with the judge where judgements.json lies beside it as well.",
    )
    parser.add_argument("file", help="JSON or JSONL records with `output` and `model_response`")
    parser.add_argument("--output", help="also write the scores, per record included, to this JSON file")
    add_bootstrap_options(parser)
    return parser


def score_command(argv: list[str]) -> int:
    from sft.evaluation.agreement import format_ratings
    from sft.evaluation.report import format_scores
    from sft.evaluation.score import score_file
    from sft.paths import check_file_output

    args = make_score_parser().parse_args(argv)
    if args.output:
        check_file_output(args.output)
    scores = score_file(args.file, args.output, bootstrap_settings(args))
    print(format_scores(scores))
    if scores.get("human_ratings"):
        print(format_ratings(scores["human_ratings"]))
    if args.output:
        print(f"scores written to {args.output}")
    return 0


def make_compare_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sft compare",
        description="Run a base model and a fine-tuned model on the same prompts and report metric changes "
        "(each with a paired 95% bootstrap interval and per-record wins, ties and losses) and the records "
        "that improved or regressed most.",
    )
    parser.add_argument("--base", required=True, help="the model before fine-tuning")
    parser.add_argument("--model", required=True, help="the fine-tuned model (full model or LoRA adapter)")
    add_data_options(parser, "compare", "runs/compare-BASE-vs-MODEL")
    add_judge_options(parser, embedded=True)
    return parser


def compare_command(argv: list[str]) -> int:
    from sft.evaluation.compare import compare_models
    from sft.evaluation.report import format_comparison

    parser = make_compare_parser()
    args = parser.parse_args(argv)
    judge = judge_settings(args, parser, embedded=True)
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
        bootstrap=bootstrap_settings(args),
        judge=judge,
    )
    print(format_comparison(comparison))
    if judge is not None:
        for role in ("base", "model"):
            print(f"{role}: {judge_line(comparison[role]['judge'])}")
    print(f"results in {output_dir}/ (compare.json, report.md, base/, model/)")
    return 0


RUBRIC_HELP = (
    "reference (default): one score from 0 to 100 against the reference answer, with a reason; dimensions: "
    "relevance, accuracy, fluency and completeness from 1 to 5, an overall 0-100 and a reason"
)

# The judge's options, as `sft judge` names them, with the JudgeSettings field each sets; `sft eval` and
# `sft compare` take the same options with `judge-` in front (--judge-endpoint, --judge-rubric, ...).
# Names, defaults and help are defined here once, for both.
JUDGE_OPTIONS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    (
        "endpoint",
        "endpoint",
        dict(
            metavar="URL",
            help="the judge server's OpenAI-compatible base URL, e.g. http://localhost:11434/v1 (ollama), "
            "http://localhost:8000/v1 (vLLM, transformers serve), https://api.openai.com/v1",
        ),
    ),
    ("judge-model", "model", dict(metavar="NAME", help="the model the server judges with")),
    ("rubric", "rubric", dict(choices=("reference", "dimensions"), default="reference", help=RUBRIC_HELP)),
    ("concurrency", "concurrency", dict(type=int, default=4, metavar="N", help="requests in flight (default 4)")),
    ("timeout", "timeout", dict(type=float, default=60.0, metavar="SECONDS", help="seconds per request (default 60)")),
    (
        "retries",
        "retries",
        dict(
            type=int,
            default=5,
            metavar="N",
            help="further tries of a request after a 429, 5xx, timeout or refused connection, with exponential "
            "back-off (default 5)",
        ),
    ),
    (
        "reply-retries",
        "reply_retries",
        dict(
            type=int,
            default=2,
            metavar="N",
            help="follow-up questions after a reply with no usable score, before the record is kept as "
            "unscored (default 2)",
        ),
    ),
    ("seed", "seed", dict(type=int, default=0, metavar="N", help="sent with every judge request (default 0)")),
    ("max-tokens", "max_tokens", dict(type=int, default=1024, metavar="N", help="longest judge reply (default 1024)")),
    (
        "api-key-env",
        "api_key_env",
        dict(
            metavar="NAME",
            default="OPENAI_API_KEY",
            help="the environment variable holding the judge server's API key (default OPENAI_API_KEY; a server "
            "that needs none, such as ollama, works without it). The key is never printed or written.",
        ),
    ),
)
REQUIRED_JUDGE_OPTIONS = ("endpoint", "judge-model")


def judge_option(name: str, embedded: bool) -> str:
    """`--rubric` for `sft judge`, `--judge-rubric` for eval and compare; `--judge-model` in both."""
    return f"--{name}" if not embedded or name.startswith("judge-") else f"--judge-{name}"


def add_judge_options(parser: argparse.ArgumentParser, embedded: bool) -> None:
    """The judge's options: `sft judge`'s own (`embedded` false: --endpoint and --judge-model required), or in
    `sft eval` and `sft compare` (`embedded`: the same options with `judge-` in front, all optional; the judge
    runs when --judge-endpoint and --judge-model are given)."""
    target: Any = parser
    if embedded:
        target = parser.add_argument_group(
            "LLM judge (optional)",
            "With --judge-endpoint and --judge-model, an LLM judge grades every response after generation "
            "(as `sft judge` does): judgements.json and the judge score with its 95% interval are added, and its "
            "answers are cached in judge_cache.jsonl in the output directory, so a rerun asks nothing again.",
        )
    for name, field_name, options in JUDGE_OPTIONS:
        options = dict(options)
        if name in REQUIRED_JUDGE_OPTIONS:
            options["required"] = not embedded
        elif embedded:
            options["default"] = None  # so that an option given without the judge can be told apart
        target.add_argument(judge_option(name, embedded), dest=f"judge_{field_name}", **options)


def judge_settings(args: argparse.Namespace, parser: argparse.ArgumentParser, embedded: bool) -> "JudgeSettings | None":
    """The judge's settings from the options `add_judge_options` added; None where eval or compare run without a
    judge. Any judge option without both --judge-endpoint and --judge-model is a usage error."""
    from sft.evaluation.judge import JudgeSettings

    values = {field_name: getattr(args, f"judge_{field_name}") for _, field_name, _ in JUDGE_OPTIONS}
    if embedded:
        endpoint, model = values["endpoint"], values["model"]
        if endpoint is None or model is None:
            given = [
                judge_option(name, True) for name, field_name, _ in JUDGE_OPTIONS if values[field_name] is not None
            ]
            if given:
                parser.error(f"{', '.join(given)} needs both --judge-endpoint and --judge-model")
            return None
        values = {key: value for key, value in values.items() if value is not None}  # the rest: defaults
    return JudgeSettings(**values, option_prefix="judge-" if embedded else "")


def make_judge_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sft judge",
        description="Grade each model response of a responses file (what `sft eval` writes) with an LLM judge\n"
        "served by any OpenAI-compatible server: ollama, vLLM, llama.cpp's server, `transformers serve`,\n"
        "OpenAI. Greedy and seeded (temperature 0, --seed); writes judgements.json, judge_metrics.json and\n"
        "judge_report.md into --output-dir (other files there stay), and caches each answer in\n"
        "judge_cache.jsonl there, so an interrupted run resumes where it stopped.",
        epilog="examples:\n"
        "  sft judge runs/eval-x/responses.json --endpoint http://localhost:11434/v1 --judge-model qwen2.5:7b "
        "--output-dir runs/eval-x/judge\n"
        "  OPENAI_API_KEY=... sft judge responses.json --endpoint https://api.openai.com/v1 "
        "--judge-model gpt-4o-mini --output-dir runs/judge-gpt",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "responses",
        metavar="RESPONSES.json",
        help="records with instruction, input, output and model_response (responses.json of `sft eval`)",
    )
    parser.add_argument(
        "--output-dir", required=True, metavar="DIR", help="where to write the results and the answer cache"
    )
    add_judge_options(parser, embedded=False)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def judge_command(argv: list[str]) -> int:
    from sft.evaluation.judge import format_summary, judge_file

    parser = make_judge_parser()
    args = parser.parse_args(argv)
    settings = judge_settings(args, parser, embedded=False)
    assert settings is not None  # --endpoint and --judge-model are required
    run = judge_file(args.responses, settings, args.output_dir, progress=not args.no_progress)
    print(format_summary(run))
    return 0
