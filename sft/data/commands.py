"""`sft data`: check, prepare, inspect or synthesise instruction data.

Only the standard library and sft's own light modules are imported at the top, so `--help`
answers at once; the tokenizer stack is imported by the subcommands that need it.
"""

import argparse
import json
import math
import os
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sft.data import dedup
from sft.data.load import display_source, load_checked, load_records, save_records
from sft.data.split import SPLITS
from sft.models.load import OFFLINE_DEFAULT

DESCRIPTION = """\
Check, prepare, inspect, deduplicate or synthesise instruction data.

A source (FILE) is a JSON array or JSON Lines file, an http(s) URL (downloaded once into the
cache; pin it with --sha256), a Hub data set id such as owner/name or owner/name:split, or
sft-synth[:N] for the built-in synthetic set. Records are Alpaca-style objects with
instruction, input and output fields; Dolly (instruction, context, response) is detected too,
and --format maps any other field names."""

EXAMPLES = """\
examples:
  sft data check data.json
  sft data prepare data.json --output-dir data/split
  sft data inspect data.json --model smollm2-135m-instruct --index 0
  sft data dedup data.json --against test.json
  sft data synth --n 1200 --seed 0 --output synth.json"""

FORMAT_HELP = (
    "record layout: auto (default: detect), alpaca, dolly, or a field mapping "
    "TARGET=FIELD,... such as instruction=question,output=answer"
)


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sft data",
        description=DESCRIPTION,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", title="actions")
    add_check(actions)
    add_prepare(actions)
    add_inspect(actions)
    add_dedup(actions)
    add_synth(actions)
    return parser


def subparser(actions: Any, name: str, summary: str, description: str, examples: str) -> argparse.ArgumentParser:
    return actions.add_parser(
        name,
        help=summary,
        description=description,
        epilog="examples:\n" + examples,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )


def add_source_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE", help="JSON/JSONL file, http(s) URL, Hub data set id or sft-synth[:N]")
    parser.add_argument("--format", default="auto", metavar="FORMAT", help=FORMAT_HELP)
    parser.add_argument("--sha256", metavar="HEX", help="expected sha256 of the file or download; stop if it differs")


def add_check(actions: Any) -> None:
    parser = subparser(
        actions,
        "check",
        "validate a data file and list every problem in it",
        "Validate every record and report all problems at once, one line each, naming the file,\n"
        "the record (counted from 0) and the field. Exits 0 when the data is valid, 2 otherwise.\n"
        "A file whose records have `chosen` or `rejected` keys is read as preference pairs (what\n"
        "`sft prefs build` writes and `stage: dpo` trains on): each needs non-empty text `prompt`,\n"
        "`chosen` and `rejected`, two different responses, and text in any instruction/input/output.\n"
        "With --max-length, records longer than that many tokens (prompt + response + EOS) under\n"
        "the tokenizer of --model are reported too.",
        "  sft data check data.json\n"
        "  sft data check dolly.jsonl --format dolly\n"
        "  sft data check qa.json --format instruction=question,output=answer\n"
        "  sft data check data.json --model smollm2-135m-instruct --max-length 512\n"
        "  sft data check pairs.json",
    )
    add_source_args(parser)
    parser.add_argument(
        "--model", metavar="M", help=f"tokenizer for length checks (default with --max-length: {OFFLINE_DEFAULT})"
    )
    parser.add_argument("--max-length", type=positive_int, metavar="N", help="longest allowed record, in tokens")
    parser.set_defaults(run=run_check)


def add_prepare(actions: Any) -> None:
    parser = subparser(
        actions,
        "prepare",
        "split a data file into train, validation and test files",
        "Validate the data, split it and write DIR/train.json, DIR/validation.json and DIR/test.json.\n"
        "By default records keep their order: the first 85% train, the next 10% test, the rest\n"
        "validation, which reproduces the seed data's published split. Prints the record count and\n"
        "token lengths (min, mean, p95, max) of each split under the tokenizer of --model.",
        "  sft data prepare data.json --output-dir data/split\n"
        "  sft data prepare data.json --output-dir data/split --shuffle --seed 1\n"
        "  sft data prepare data.json --output-dir data/split --train-fraction 0.9 --test-fraction 0.05\n"
        "  sft data prepare data.json --output-dir data/split --model ./my-model --max-length 512",
    )
    add_source_args(parser)
    parser.add_argument("--output-dir", required=True, metavar="DIR", help="where the split files are written")
    parser.add_argument(
        "--train-fraction", type=float, default=0.85, metavar="F", help="share for training (default 0.85)"
    )
    parser.add_argument(
        "--test-fraction",
        type=float,
        default=0.10,
        metavar="F",
        help="share for testing (default 0.10); validation gets the rest",
    )
    parser.add_argument("--shuffle", action="store_true", help="shuffle before splitting (default: keep order)")
    parser.add_argument("--seed", type=int, default=0, metavar="N", help="shuffle seed (default 0)")
    parser.add_argument(
        "--model",
        default=OFFLINE_DEFAULT,
        metavar="M",
        help=f"tokenizer for the length statistics (default {OFFLINE_DEFAULT})",
    )
    parser.add_argument(
        "--max-length",
        type=positive_int,
        metavar="N",
        help="refuse records longer than N tokens (prompt + response + EOS)",
    )
    parser.set_defaults(run=run_prepare)


def add_inspect(actions: Any) -> None:
    parser = subparser(
        actions,
        "inspect",
        "show one record's tokens and training labels",
        "Tokenize one record exactly as training does and show each token with its label: prompt\n"
        "tokens are -100 (ignored by the loss), response tokens and the closing EOS are learned.",
        "  sft data inspect data.json --model smollm2-135m-instruct --index 0\n"
        "  sft data inspect data.json --model ./my-model --index 12 --json",
    )
    add_source_args(parser)
    parser.add_argument(
        "--model",
        default=OFFLINE_DEFAULT,
        metavar="M",
        help=f"model whose tokenizer to use (default {OFFLINE_DEFAULT})",
    )
    parser.add_argument(
        "--index",
        type=int,
        default=0,
        metavar="N",
        help="record number, counted from 0; negative counts from the end (default 0)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.set_defaults(run=run_inspect)


def add_dedup(actions: Any) -> None:
    parser = subparser(
        actions,
        "dedup",
        "find exact and near-duplicate records, within a file or shared with another",
        "Compare whole records (instruction, input and output) after normalising case, punctuation and\n"
        "whitespace, by the Jaccard similarity of their character 5-grams, and name each pair of records\n"
        f"(counted from 0) at or above --threshold (default {dedup.DEFAULT_THRESHOLD}: the same task with a word or\n"
        "a number changed), with the similarity and the fields that are the same. With --against, only\n"
        "records of FILE that near-duplicate a record of OTHER are named (say training data against a test\n"
        "set: contamination). --remove --output OUT writes FILE without the later record of each pair\n"
        "(with --against, without FILE's record of each pair); FILE itself is never changed.\n"
        "Exits 0 when no pair is found (or --remove wrote OUT), 1 when pairs were found, 2 for invalid data.",
        "  sft data dedup data.json\n"
        "  sft data dedup data.json --threshold 0.8\n"
        "  sft data dedup train.json --against test.json\n"
        "  sft data dedup data.json --remove --output data-dedup.json\n"
        "  sft data dedup data.json --json > pairs.json",
    )
    add_source_args(parser)
    parser.add_argument(
        "--threshold",
        type=similarity,
        default=dedup.DEFAULT_THRESHOLD,
        metavar="T",
        help=f"lowest Jaccard similarity reported, more than 0 and at most 1 (default {dedup.DEFAULT_THRESHOLD})",
    )
    parser.add_argument(
        "--against",
        metavar="OTHER",
        help="a second source (layout detected); report FILE's records that near-duplicate one of OTHER's",
    )
    parser.add_argument(
        "--method",
        choices=dedup.METHODS,
        default=dedup.DEFAULT_METHOD,
        help="minhash (default: MinHash + LSH candidates, each checked exactly; fast) or ngram (every pair "
        "compared exactly through shingle prefixes; misses none, slower on large files)",
    )
    parser.add_argument("--remove", action="store_true", help="write the data without the duplicates to --output")
    parser.add_argument("--output", metavar="OUT", help="file --remove writes (never FILE)")
    parser.add_argument("--show", type=int, metavar="N", help="print only the first N pairs (default: all)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of lines")
    parser.set_defaults(run=run_dedup)


def add_synth(actions: Any) -> None:
    parser = subparser(
        actions,
        "synth",
        "write the built-in synthetic data set to a file",
        "Generate distinct instruction records whose answers can be checked exactly (arithmetic,\n"
        "unit conversion, capitals, plurals, sorting, counting, JSON extraction, ...), each with a\n"
        "`kind` field. The same --n and --seed always give the same records. A .jsonl output gets\n"
        "JSON Lines, anything else a JSON array.",
        "  sft data synth --n 1200 --seed 0 --output synth.json\n"
        "  sft data synth --n 5000 --seed 7 --output synth.jsonl",
    )
    parser.add_argument("--n", type=positive_int, default=1200, metavar="N", help="number of records (default 1200)")
    parser.add_argument("--seed", type=int, default=0, metavar="S", help="generator seed (default 0)")
    parser.add_argument("--output", required=True, metavar="FILE", help="file to write")
    parser.set_defaults(run=run_synth)


def similarity(text: str) -> float:
    value = float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be more than 0 and at most 1, got {value}")
    return value


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, got {value}")
    return value


def data_command(argv: list[str]) -> int:
    parser = make_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, or a usage error argparse has already explained
        return int(exit_.code or 0)
    if args.action is None:
        parser.print_help()
        return 0
    try:
        return int(args.run(args) or 0)
    except BrokenPipeError:
        # The reader went away (`sft data inspect ... | head`): stop quietly, as other tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


# Actions -------------------------------------------------------------------------------------------


def read(
    args: argparse.Namespace,
    tokenizer: Any = None,
    max_length: int | None = None,
    lengths: Any = None,
    layout: str = "instruction",
) -> list[dict[str, str]]:
    """The validated records of `args.file`; `--format` may be a named layout or a field mapping. `lengths`
    (a `LengthMemo`) keeps the token lengths the length check measures, so they are not measured twice.
    `layout` "auto" also reads a file of preference pairs (`sft data check`)."""
    template = template_for(args.model) if tokenizer is not None else None
    return load_records(
        args.file, args.format, None, args.sha256, tokenizer, max_length, template, token_lengths=lengths, layout=layout
    )


class LengthMemo:
    """Token lengths of a whole data set, measured once: by the length check when it runs, else on first use."""

    def __init__(self, tokenizer: Any, model: str | None):
        self.tokenizer, self.model = tokenizer, model
        self.values: list[int] | None = None

    def __call__(self, records: list[dict[str, str]]) -> list[int]:
        self.values = token_lengths(records, self.tokenizer, self.model)
        return self.values

    def of(self, records: list[dict[str, str]]) -> list[int]:
        if self.values is None or len(self.values) != len(records):
            self(records)
        return self.values or []


def run_check(args: argparse.Namespace) -> int:
    from sft.data.validate import is_preference_layout, preference_token_lengths

    model = args.model or (OFFLINE_DEFAULT if args.max_length else None)
    tokenizer = load_tokenizer(model) if model else None
    lengths = LengthMemo(tokenizer, model) if tokenizer is not None else None
    records = read(args, tokenizer, args.max_length, lengths, layout="auto")
    pairs = is_preference_layout(records)
    counted = plural(len(records), "valid preference pair") if pairs else f"{len(records)} valid records"
    print(f"{display_source(args.file)}: {counted}")
    if lengths is not None and tokenizer is not None:
        measured = preference_token_lengths(records, tokenizer) if pairs else lengths.of(records)
        stats = length_stats(measured)
        limit = f" (limit {args.max_length})" if args.max_length else ""
        what = "pair (prompt + the longer response + EOS)" if pairs else "record"
        print(
            f"tokens per {what} with {model}: min {stats['min']}, mean {stats['mean']:.1f}, "
            f"p95 {stats['p95']}, max {stats['max']}{limit}"
        )
    return 0


def run_prepare(args: argparse.Namespace) -> int:
    from sft.data.split import DataArguments, check_train_split, split_as

    settings = DataArguments(
        dataset_name=args.file,
        train_fraction=args.train_fraction,
        test_fraction=args.test_fraction,
        split_shuffle=args.shuffle,
        split_seed=args.seed,
    )
    tokenizer = load_tokenizer(args.model) if args.max_length else None
    lengths = LengthMemo(tokenizer, args.model) if tokenizer is not None else None
    records = read(args, tokenizer, args.max_length, lengths)
    splits = split_as(settings, records)
    check_train_split(settings, splits, len(records), ("--train-fraction", "--test-fraction"))
    if lengths is None:
        lengths = LengthMemo(load_tokenizer(args.model), args.model)
    # Every record measured once, in file order; the split of the lengths is the split of the records.
    split_lengths = split_as(settings, lengths.of(records))
    out = Path(args.output_dir)
    for name in SPLITS:
        save_records(out / f"{name}.json", splits[name])
    print(f"{display_source(args.file)}: {len(records)} records -> {out}/{{train,validation,test}}.json")
    print(f"tokens per record (prompt + response + EOS) with {args.model}:")
    print(f"  {'split':<12}{'records':>8}{'min':>8}{'mean':>9}{'p95':>8}{'max':>8}")
    for name in SPLITS:
        print("  " + stats_row(name, split_lengths[name]))
    return 0


def run_inspect(args: argparse.Namespace) -> int:
    from sft.errors import SFTError

    records = read(args)
    if not -len(records) <= args.index < len(records):
        raise SFTError(
            f"--index {args.index} is out of range: {display_source(args.file)} has {len(records)} records "
            f"(0 to {len(records) - 1})"
        )
    index = args.index % len(records)
    tokenizer = load_tokenizer(args.model)
    view = token_view(records[index], tokenizer, template_for(args.model))
    source = display_source(args.file)
    if args.json:
        print(json.dumps({"source": source, "index": index, "model": args.model, **view}, ensure_ascii=False))
    else:
        print_token_table(source, index, args.model, view)
    return 0


def run_dedup(args: argparse.Namespace) -> int:
    from sft.errors import SFTError
    from sft.paths import check_file_output

    if args.remove != bool(args.output):
        raise SFTError("--remove and --output go together: --remove --output OUT writes the data without duplicates")
    if args.output:
        for name, source in (("FILE", args.file), ("OTHER", args.against)):
            if source and same_file(args.output, source):
                raise SFTError(
                    f"--output {args.output} is {name} itself; write the deduplicated data to a new file "
                    "(FILE is never changed)"
                )
        check_file_output(args.output)
    if args.show is not None and args.show < 0:
        raise SFTError(f"--show must be 0 or more, got {args.show}")
    # Exact repeats are what this command reports, so they do not stop it as they stop `check`.
    raw, records = load_checked(args.file, args.format, None, args.sha256, duplicates=False)
    source = display_source(args.file)
    cross = args.against is not None
    if cross:
        others = load_checked(args.against, duplicates=False)[1]
        pairs = dedup.cross_duplicates(records, others, args.threshold, args.method)
    else:
        pairs = dedup.find_duplicates(records, args.threshold, args.method)
    drop = dedup.records_to_drop(pairs, cross)
    written = None
    if args.remove:
        kept = [record for index, record in enumerate(raw) if index not in drop]
        written = save_records(args.output, kept)
    if args.json:
        report = {
            "source": source,
            "against": display_source(args.against) if cross else None,
            "records": len(records),
            "threshold": args.threshold,
            "method": args.method,
            "pairs": [pair.as_dict() for pair in pairs],
            "records_to_remove": sorted(drop),
            "output": str(written) if written else None,
        }
        print(json.dumps(report, ensure_ascii=False, indent=2))
    else:
        print_dedup_report(args, source, len(records), pairs, drop, written)
    return 0 if not pairs or written else 1


def print_dedup_report(
    args: argparse.Namespace, source: str, count: int, pairs: list[Any], drop: set[int], written: Path | None
) -> None:
    at = f"at similarity >= {args.threshold} ({args.method})"
    if args.against is not None:
        other = display_source(args.against)
        print(
            f"{source}: {len(drop)} of {count} records near-duplicate records of {other}: "
            f"{plural(len(pairs), 'pair')} {at}"
        )
    elif not pairs:
        print(f"{source}: {count} records, no pairs {at}")
    else:
        identical = sum(1 for pair in pairs if not pair.differs)
        print(
            f"{source}: {count} records, {plural(len(pairs), 'pair')} {at}: {identical} identical after normalising, "
            f"{len(pairs) - identical} near"
        )
    shown = pairs if args.show is None else pairs[: args.show]
    for pair in shown:
        if args.against is not None:
            subject, target = f"record {pair.first}", f"{display_source(args.against)} record {pair.second}"
        else:
            subject, target = f"record {pair.second}", f"record {pair.first}"
        print(f"  {subject} near-duplicates {target}: similarity {pair.similarity:.3f}, {pair.describe_fields()}")
    if len(shown) < len(pairs):
        print(f"  ... and {len(pairs) - len(shown)} more (--show to change how many, --json for all)")
    if written is not None:
        print(f"wrote {count - len(drop)} records to {written} ({len(drop)} removed; {source} unchanged)")
    elif pairs:
        which = f"{source}'s record of each pair" if args.against is not None else "the later of each pair"
        print(f"--remove --output OUT writes the data without {plural(len(drop), 'record')}: {which}")


def plural(count: int, noun: str) -> str:
    return f"{count} {noun}" + ("" if count == 1 else "s")


def same_file(a: str, b: str) -> bool:
    """Whether two paths name one file (through links, `..` or a different spelling)."""
    first, second = Path(a).expanduser(), Path(b).expanduser()
    try:
        if first.exists() and second.exists():
            return os.path.samefile(first, second)
    except OSError:
        pass
    return first.resolve() == second.resolve()


def run_synth(args: argparse.Namespace) -> int:
    from sft.data.synth import synth_records
    from sft.paths import check_file_output

    check_file_output(args.output)
    records = synth_records(args.n, args.seed)
    output = save_records(args.output, records)
    kinds = ", ".join(f"{kind} {count}" for kind, count in sorted(Counter(r["kind"] for r in records).items()))
    print(f"wrote {len(records)} records (seed {args.seed}) to {output}: {kinds}")
    return 0


# Helpers -------------------------------------------------------------------------------------------


def load_tokenizer(model: str) -> Any:
    from sft.models.load import load_tokenizer as load

    return load(model)


def template_for(model: str | None) -> Any:
    """The prompt template saved with a trained model, else the default one."""
    from sft.data.template import PromptTemplate

    return PromptTemplate.for_model(model if model and Path(model).is_dir() else None)


def token_lengths(records: Sequence[dict[str, str]], tokenizer: Any, model: str | None) -> list[int]:
    from sft.data.tokenize import record_token_lengths

    return record_token_lengths(records, tokenizer, template_for(model))


def length_stats(lengths: Sequence[int]) -> dict[str, float]:
    """min, mean, 95th percentile (nearest rank: a length some record really has) and max."""
    ordered = sorted(lengths)
    rank = max(1, math.ceil(0.95 * len(ordered)))
    return {"min": ordered[0], "mean": sum(ordered) / len(ordered), "p95": ordered[rank - 1], "max": ordered[-1]}


def stats_row(name: str, lengths: Sequence[int]) -> str:
    if not lengths:
        return f"{name:<12}{0:>8}{'-':>8}{'-':>9}{'-':>8}{'-':>8}"
    s = length_stats(lengths)
    return f"{name:<12}{len(lengths):>8}{s['min']:>8}{s['mean']:>9.1f}{s['p95']:>8}{s['max']:>8}"


def token_view(record: dict[str, str], tokenizer: Any, template: Any) -> dict[str, Any]:
    """One record tokenized as in training, with what each position contributes to the loss."""
    from sft.data.tokenize import IGNORE_INDEX, tokenize_batch

    batch = {key: [record[key]] for key in ("instruction", "input", "output")}
    row = tokenize_batch(batch, tokenizer, template)
    input_ids, labels = row["input_ids"][0], row["labels"][0]
    prompt_length = sum(1 for label in labels if label == IGNORE_INDEX)
    return {
        "prompt": template.render(record["instruction"], record["input"]),
        "completion": record["output"],
        "input_ids": input_ids,
        "labels": labels,
        "tokens": tokenizer.convert_ids_to_tokens(input_ids),
        "token_texts": [tokenizer.decode([token]) for token in input_ids],
        "prompt_tokens": prompt_length,
        "completion_tokens": len(input_ids) - prompt_length,
        "eos_token": tokenizer.eos_token,
        "eos_token_id": tokenizer.eos_token_id,
    }


def print_token_table(source: str, index: int, model: str, view: dict[str, Any]) -> None:
    from sft.data.tokenize import IGNORE_INDEX

    print(f"{source}: record {index}, tokenized with {model}")
    print(
        f"{view['prompt_tokens']} prompt tokens (label -100, not learned), "
        f"{view['completion_tokens']} response tokens including EOS {view['eos_token']!r} (learned)"
    )
    print(f"{'pos':>5}  {'token id':>8}  {'token':<24}  label")
    for position, (token, text, label) in enumerate(zip(view["input_ids"], view["token_texts"], view["labels"])):
        shown = "-100 (ignored)" if label == IGNORE_INDEX else str(label)
        print(f"{position:>5}  {token:>8}  {text!r:<24}  {shown}")
