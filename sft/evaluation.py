"""`sft eval`: generate responses for a data split and score them.

Writes DIR/responses.json (the records plus `model_response`), DIR/metrics.json and DIR/report.md.
"""

import argparse
import re
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sft.data.template import PromptTemplate
from sft.errors import SFTError
from sft.generate import DEFAULT_BATCH_SIZE, DEFAULT_MAX_NEW_TOKENS, add_generation_options

SPLITS = ("test", "validation", "train", "all")


def select_split(records: Sequence[dict], split: str, limit: int | None = None) -> list[dict]:
    """The records of `split` in the seed data set's layout (85% train, 10% test, rest validation)."""
    from sft.data.split import split_records

    if split not in SPLITS:
        raise SFTError(f"unknown split {split!r}; choose from {', '.join(SPLITS)}")
    chosen = list(records) if split == "all" else split_records(records)[split]
    if limit is not None:
        if limit < 1:
            raise SFTError(f"--limit must be at least 1, got {limit}")
        chosen = chosen[:limit]
    if not chosen:
        raise SFTError(f"the {split} split of {len(records)} records is empty; use --split all or more data")
    return chosen


def slug(name: str) -> str:
    """A directory-name form of a model argument: its last path part, or the Hub id with `--`."""
    path = Path(name.rstrip("/"))
    text = path.name if path.is_dir() or name.startswith((".", "/", "~")) else name.replace("/", "--")
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text) or "model"


def by_kind(records: Sequence[Mapping[str, Any]], predictions: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Scores per task `kind`, for records that carry one (an empty dict when none do)."""
    from sft.metrics import score_responses
    from sft.scoring import summary

    if not any("kind" in record for record in records):
        return {}
    groups: dict[str, list[int]] = {}
    for i, record in enumerate(records):
        groups.setdefault(str(record.get("kind", "(none)")), []).append(i)
    return {
        kind: summary(score_responses([predictions[i] for i in members], [records[i]["output"] for i in members]))
        for kind, members in sorted(groups.items())
    }


def evaluate_model(
    model_name: str,
    records: Sequence[Mapping[str, Any]],
    output_dir: str | Path,
    *,
    model: Any = None,
    tokenizer: Any = None,
    template: PromptTemplate | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int = 0,
    progress: bool = True,
    data: str | None = None,
    split: str | None = None,
) -> dict[str, Any]:
    """Generate a response for every record, score them, write the three files; returns the metrics.

    Pass `model` and `tokenizer` to evaluate a model already in memory (`model_name` then only
    labels the results); otherwise `model_name` is loaded through `sft.models`. The template is
    the one saved with the model unless `template` is given.
    """
    from sft.generate import generate_responses, load_for_inference
    from sft.metrics import score_responses
    from sft.paths import atomic_write_json, atomic_write_text
    from sft.report import eval_report

    if not records:
        raise SFTError("no records to evaluate")
    if model is None or tokenizer is None:
        model, tokenizer, saved_template = load_for_inference(model_name)
        template = template or saved_template
    started = time.perf_counter()
    results = generate_responses(
        model,
        tokenizer,
        records,
        batch_size=batch_size,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=top_p,
        template=template,
        progress=progress,
        seed=seed,
    )
    seconds = time.perf_counter() - started
    predictions = [result.text for result in results]
    responses = [{**record, "model_response": text} for record, text in zip(records, predictions)]
    scores = score_responses(predictions, [str(record["output"]) for record in records])
    for entry, result in zip(scores["per_record"], results):
        entry.update(new_tokens=result.new_tokens, ended_at_eos=result.ended_at_eos)
    n = len(results)
    metrics = {
        "model": model_name,
        "data": data,
        "split": split,
        "n": n,
        "rouge_l": scores["rouge_l"],
        "bleu": scores["bleu"],
        "exact_match": scores["exact_match"],
        "exact_match_normalized": scores["exact_match_normalized"],
        "ended_at_eos": sum(r.ended_at_eos for r in results) / n,
        "mean_new_tokens": sum(r.new_tokens for r in results) / n,
        "bleu_tokenize": scores["bleu_tokenize"],
        "generation": {
            "batch_size": batch_size,
            "max_new_tokens": max_new_tokens,
            "temperature": temperature,
            "top_p": top_p,
            "seed": seed,
            "greedy": temperature == 0,
        },
        "seconds": round(seconds, 3),
        "responses_per_second": round(n / seconds, 3) if seconds > 0 else None,
        "by_kind": by_kind(records, predictions),
        "per_record": scores["per_record"],
    }
    output_dir = Path(output_dir)
    atomic_write_json(output_dir / "responses.json", responses)
    atomic_write_json(output_dir / "metrics.json", metrics)
    atomic_write_text(output_dir / "report.md", eval_report(metrics, responses))
    return metrics


def add_data_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", required=True, help="JSON/JSONL records, URL, Hub data set or sft-synth[:N]")
    parser.add_argument(
        "--split",
        choices=SPLITS,
        default="test",
        help="which part of the data, split as the seed was (85%% train, 10%% test, rest validation); default test",
    )
    parser.add_argument("--limit", type=int, help="only the first N records of the split")
    parser.add_argument(
        "--batch-size",
        type=int,
        default=DEFAULT_BATCH_SIZE,
        help=f"prompts generated together (default {DEFAULT_BATCH_SIZE})",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_generation_options(parser)


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sft eval",
        description="Generate responses for a data split and score them (ROUGE-L, BLEU, exact match); "
        "writes responses.json, metrics.json and report.md.",
    )
    parser.add_argument(
        "--model", required=True, help="Hub id, local model or LoRA adapter directory, or smollm2-135m-instruct"
    )
    add_data_options(parser)
    parser.add_argument("--output-dir", help="where to write the results (default runs/eval-MODEL)")
    return parser


def main(argv: list[str]) -> int:
    from sft.data.load import load_records
    from sft.scoring import format_scores

    args = make_parser().parse_args(argv)
    records = select_split(load_records(args.data), args.split, args.limit)
    output_dir = Path(args.output_dir or Path("runs") / f"eval-{slug(args.model)}")
    metrics = evaluate_model(
        args.model,
        records,
        output_dir,
        batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        seed=args.seed,
        progress=not args.no_progress,
        data=args.data,
        split=args.split,
    )
    print(format_scores(metrics))
    print(f"{metrics['seconds']:.1f} s, {metrics['responses_per_second'] or 0:.2f} responses/s")
    print(f"results in {output_dir}/ (responses.json, metrics.json, report.md)")
    return 0


if __name__ == "__main__":
    from sft.cli import guarded

    sys.exit(guarded(lambda: main(sys.argv[1:])))
