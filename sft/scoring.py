"""`sft score`: score a responses file, records with the reference `output` and a `model_response`."""

import argparse
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sft.errors import DataError, SFTError

RESPONSE_FIELD = "model_response"
SUMMARY_KEYS = ("rouge_l", "bleu", "exact_match", "exact_match_normalized", "n", "bleu_tokenize")


def score_records(records: Sequence[Mapping[str, Any]], source: str = "records") -> dict[str, Any]:
    """`score_responses` of each record's `model_response` against its `output`."""
    from sft.metrics import score_responses

    if records and not any(RESPONSE_FIELD in record for record in records):
        raise SFTError(
            f"{source}: no record has a `{RESPONSE_FIELD}`, so there is nothing to score; "
            "write responses with `sft eval`, which saves them in responses.json"
        )
    problems = [
        f"{source}: record {i + 1}: `{RESPONSE_FIELD}` is missing or not text; "
        "every record needs the model's response to score"
        for i, record in enumerate(records)
        if not isinstance(record.get(RESPONSE_FIELD), str)
    ]
    if problems:
        raise DataError(problems[:20] + ([f"... and {len(problems) - 20} more"] if len(problems) > 20 else []))
    return score_responses([r[RESPONSE_FIELD] for r in records], [r["output"] for r in records])


def summary(scores: Mapping[str, Any]) -> dict[str, Any]:
    """The headline figures of a `score_responses` result, without the per-record list."""
    return {key: scores[key] for key in SUMMARY_KEYS if key in scores}


def format_scores(scores: Mapping[str, Any]) -> str:
    """Aligned lines: ROUGE-L to 4 places, BLEU to 2, exact match to 4."""
    lines = [
        ("ROUGE-L F1", f"{scores['rouge_l']:.4f}"),
        (
            "BLEU",
            f"{scores['bleu']:.2f}"
            + (f"  (tokenizer {scores['bleu_tokenize']})" if scores.get("bleu_tokenize") not in (None, "13a") else ""),
        ),
        ("exact match", f"{scores['exact_match']:.4f}"),
        ("exact match, normalised", f"{scores['exact_match_normalized']:.4f}"),
    ]
    if "ended_at_eos" in scores:
        lines.append(("ended at EOS", f"{scores['ended_at_eos']:.4f}"))
    lines.append(("records", str(scores["n"])))
    width = max(len(label) for label, _ in lines)
    return "\n".join(f"{label.ljust(width)}  {value}" for label, value in lines)


def score_file(path: str | Path, output: str | Path | None = None) -> dict[str, Any]:
    """Scores of a responses file; written as JSON to `output` when given."""
    from sft.data.load import load_records
    from sft.paths import atomic_write_json

    scores = {"data": str(path), **score_records(load_records(str(path)), str(path))}
    if output is not None:
        atomic_write_json(output, scores)
    return scores


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sft score",
        description="Score model responses against reference outputs: ROUGE-L F1 (mean over records), "
        "corpus BLEU (sacrebleu) and exact match.",
    )
    parser.add_argument("file", help="JSON or JSONL records with `output` and `model_response`")
    parser.add_argument("--output", help="also write the scores, per record included, to this JSON file")
    return parser


def main(argv: list[str]) -> int:
    args = make_parser().parse_args(argv)
    scores = score_file(args.file, args.output)
    print(format_scores(scores))
    if args.output:
        print(f"scores written to {args.output}")
    return 0


if __name__ == "__main__":
    from sft.cli import guarded

    sys.exit(guarded(lambda: main(sys.argv[1:])))
