"""`sft prefs build`: the command line of preference-pair building. Light imports at the top, so that
`--help` answers at once."""

import argparse
import sys
from pathlib import Path

from sft.data.split import SPLITS

DESCRIPTION = """\
Build preference pairs (prompt, chosen, rejected) from a fine-tune's own answers, for `stage: dpo`.

The model answers every record of one split of FILE; the split is the one it was trained with (its
sft_config.yaml), so `--split train` never takes a validation or test record. Each prompt is rendered
with the model's saved template, as training rendered it.

  --source self (default, offline): the reference output is chosen, the model's answer rejected where it
      differs. One sample: the greedy answer; K samples: the worst of K by ROUGE-L against the reference.
      Records the model already answers exactly are skipped and counted.
  --source judge: K sampled answers graded by an LLM judge on an OpenAI-compatible server (the options of
      `sft judge`, with judge- in front); the best is chosen, the worst rejected. Answers are cached beside
      the output (judge_cache.jsonl), so a rerun asks nothing again.

The pairs are written atomically to --output; a file already there is replaced only with
--overwrite. Check them with `sft data check PAIRS.json`."""

EXAMPLES = """\
examples:
  sft prefs build --model out/smollm2-135m --data instruction-data.json --output out/pairs.json
  sft prefs build --model out/tiny --data sft-synth --output pairs.json --samples 4 --temperature 0.8
  sft prefs build --model out/smollm2-135m --data data.json --output pairs.json --source judge --samples 4 \\
      --judge-endpoint http://localhost:11434/v1 --judge-model llama3.1:8b"""


def make_parser() -> argparse.ArgumentParser:
    from sft.evaluation.commands import add_judge_options, positive_int

    parser = argparse.ArgumentParser(prog="sft prefs", description="Preference pairs for DPO.")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", title="actions", required=True)
    build = actions.add_parser(
        "build",
        help="answer a split with a fine-tune and pair each answer with the reference (or the judge's pick)",
        description=DESCRIPTION,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    build.add_argument("--model", required=True, metavar="SFT_DIR", help="the SFT output directory (model or adapter)")
    build.add_argument(
        "--data", required=True, metavar="FILE", help="instruction data (file, URL, Hub id or sft-synth[:N])"
    )
    build.add_argument("--output", required=True, metavar="PAIRS.json", help="where the pairs are written")
    build.add_argument(
        "--split", default="train", choices=(*SPLITS, "all"), help="which split to answer (default: train)"
    )
    build.add_argument("--source", default="self", choices=("self", "judge"), help="who picks the pair (default self)")
    build.add_argument(
        "--samples", type=positive_int, default=1, metavar="K", help="answers per record (default 1: greedy)"
    )
    build.add_argument(
        "--temperature", type=float, default=1.0, metavar="T", help="sampling temperature with --samples above 1"
    )
    build.add_argument("--max-new-tokens", type=positive_int, default=256, metavar="N", help="longest answer")
    build.add_argument("--batch-size", type=positive_int, default=32, metavar="N", help="prompts per batch")
    build.add_argument("--seed", type=int, default=0, help="sampling seed of the first sample (then +1, +2, ...)")
    build.add_argument("--limit", type=positive_int, metavar="N", help="only the first N records of the split")
    build.add_argument("--no-progress", action="store_true", help="no progress bar")
    build.add_argument("--overwrite", action="store_true", help="replace an existing --output file")
    add_judge_options(build, embedded=True)
    return parser


def prefs_command(argv: list[str]) -> int:
    parser = make_parser()
    args = parser.parse_args(argv)
    return build_command(args, parser)


def build_command(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from sft.data.split import data_arguments_for_model, select_split
    from sft.errors import SFTError
    from sft.evaluation.commands import judge_settings
    from sft.paths import JUDGE_CACHE_FILE, atomic_write_json, check_complete, check_file_output
    from sft.preference.pairs import PairSettings, build_pairs

    settings = PairSettings(
        source=args.source,
        samples=args.samples,
        temperature=args.temperature,
        max_new_tokens=args.max_new_tokens,
        batch_size=args.batch_size,
        seed=args.seed,
    )
    settings.check()
    judge = judge_settings(args, parser, embedded=True)
    if args.source == "judge" and judge is None:
        parser.error("--source judge needs --judge-endpoint and --judge-model")
    if judge is not None:
        judge.check()
    output = Path(args.output)
    check_file_output(output)
    data = Path(args.data)
    if data.exists() and output.resolve() == data.resolve():
        raise SFTError(f"--output {output} is the --data file; write the pairs to another file")
    if output.exists() and not args.overwrite:
        raise SFTError(f"{output} exists; pass --overwrite to replace it, or give another --output")
    model_dir = Path(args.model)
    if not model_dir.is_dir():
        raise SFTError(f"--model {args.model} is not a directory; give the output_dir of an `sft train` run")
    check_complete(model_dir)

    records = select_split(data_arguments_for_model(model_dir, args.data), args.split, args.limit)
    from sft.inference.generate import load_for_inference

    model, tokenizer, template = load_for_inference(str(model_dir))
    cache = output.parent / JUDGE_CACHE_FILE if judge is not None else None
    pairs, stats = build_pairs(model, tokenizer, template, records, settings, judge, cache, not args.no_progress)
    if not pairs:
        raise SFTError(f"no pairs: {stats.summary()}; nothing written to {output}")
    output.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(output, pairs)
    print(f"{stats.summary()}; wrote {output}", file=sys.stdout)
    return 0
