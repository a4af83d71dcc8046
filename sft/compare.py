"""`sft compare`: a base model and its fine-tune on the same prompts, side by side.

Each model is evaluated into its own subdirectory (base/, model/: responses, metrics, report);
DIR/compare.json and DIR/report.md hold the metric changes and the per-record changes.
"""

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sft.evaluation import add_data_options, slug
from sft.generate import DEFAULT_BATCH_SIZE, DEFAULT_MAX_NEW_TOKENS

METRIC_KEYS = ("rouge_l", "bleu", "exact_match", "exact_match_normalized", "ended_at_eos")
SHOWN = 10
# ROUGE-L changes smaller than this are noise from ties, not a change in the response.
TOLERANCE = 1e-9


def headline(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """A model's metrics without the per-record list (compare.json has its own)."""
    return {key: value for key, value in metrics.items() if key != "per_record"}


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def record_changes(
    records: Sequence[Mapping[str, Any]],
    base: Mapping[str, Any],
    tuned: Mapping[str, Any],
    base_texts: Sequence[str],
    tuned_texts: Sequence[str],
) -> list[dict[str, Any]]:
    changes = []
    for i, record in enumerate(records):
        before, after = base["per_record"][i]["rouge_l"], tuned["per_record"][i]["rouge_l"]
        changes.append(
            {
                "index": i,
                "instruction": record.get("instruction", ""),
                "input": record.get("input", ""),
                "output": record.get("output", ""),
                "base_response": base_texts[i],
                "model_response": tuned_texts[i],
                "base_rouge_l": before,
                "model_rouge_l": after,
                "rouge_l_change": after - before,
            }
        )
    return changes


def rank_changes(changes: Sequence[Mapping[str, Any]], shown: int = SHOWN) -> dict[str, Any]:
    """Counts of improved, regressed and unchanged records, and the biggest changes each way."""

    def size(change: Mapping[str, Any]) -> tuple[float, int]:
        return -abs(change["rouge_l_change"]), change["index"]

    up = sorted((c for c in changes if c["rouge_l_change"] > TOLERANCE), key=size)
    down = sorted((c for c in changes if c["rouge_l_change"] < -TOLERANCE), key=size)
    return {
        "counts": {"improved": len(up), "regressed": len(down), "unchanged": len(changes) - len(up) - len(down)},
        "improvements": up[:shown],
        "regressions": down[:shown],
    }


def compare_models(
    base_name: str,
    model_name: str,
    records: Sequence[Mapping[str, Any]],
    output_dir: str | Path,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int = 0,
    progress: bool = True,
    data: str | None = None,
    split: str | None = None,
) -> dict[str, Any]:
    """Evaluate both models on `records` and write compare.json and report.md; returns the comparison.

    Both get the prompt template saved with the fine-tuned model (the default Alpaca one where it
    saved none), so the two see identical prompts.
    """
    from sft.data.template import PromptTemplate
    from sft.evaluation import evaluate_model
    from sft.models import resolve_model
    from sft.paths import atomic_write_json, atomic_write_text
    from sft.report import compare_report

    output_dir = Path(output_dir)
    resolved = Path(resolve_model(model_name))
    template = PromptTemplate.for_model(resolved if resolved.is_dir() else None)
    settings = dict(
        batch_size=batch_size,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=top_p,
        seed=seed,
        progress=progress,
        data=data,
        split=split,
        template=template,
    )
    base = evaluate_model(base_name, records, output_dir / "base", **settings)
    tuned = evaluate_model(model_name, records, output_dir / "model", **settings)
    texts = {
        role: [r["model_response"] for r in read_json(output_dir / role / "responses.json")]
        for role in ("base", "model")
    }
    changes = record_changes(records, base, tuned, texts["base"], texts["model"])
    comparison = {
        "base": headline(base),
        "model": headline(tuned),
        "change": {key: tuned[key] - base[key] for key in METRIC_KEYS},
        "data": data,
        "split": split,
        "n": len(records),
        **rank_changes(changes),
        "per_record": changes,
    }
    atomic_write_json(output_dir / "compare.json", comparison)
    atomic_write_text(output_dir / "report.md", compare_report(comparison))
    return comparison


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sft compare",
        description="Run a base model and a fine-tuned model on the same prompts and report metric changes "
        "and the records that improved or regressed most.",
    )
    parser.add_argument("--base", required=True, help="the model before fine-tuning")
    parser.add_argument("--model", required=True, help="the fine-tuned model (full model or LoRA adapter)")
    add_data_options(parser)
    parser.add_argument("--output-dir", help="where to write the results (default runs/compare-BASE-vs-MODEL)")
    return parser


def main(argv: list[str]) -> int:
    from sft.data.load import load_records
    from sft.evaluation import select_split

    args = make_parser().parse_args(argv)
    records = select_split(load_records(args.data), args.split, args.limit)
    output_dir = Path(args.output_dir or Path("runs") / f"compare-{slug(args.base)}-vs-{slug(args.model)}")
    comparison = compare_models(
        args.base,
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
    base, tuned = comparison["base"], comparison["model"]
    print(f"{'':24}{'base':>10}{'model':>10}{'change':>10}")
    for key, label, digits in (
        ("rouge_l", "ROUGE-L F1", 4),
        ("bleu", "BLEU", 2),
        ("exact_match", "exact match", 4),
        ("exact_match_normalized", "exact match, normalised", 4),
        ("ended_at_eos", "ended at EOS", 4),
    ):
        print(f"{label:24}{base[key]:>10.{digits}f}{tuned[key]:>10.{digits}f}{tuned[key] - base[key]:>+10.{digits}f}")
    counts = comparison["counts"]
    print(
        f"records: {counts['improved']} improved, {counts['regressed']} regressed, "
        f"{counts['unchanged']} unchanged (ROUGE-L)"
    )
    print(f"results in {output_dir}/ (compare.json, report.md, base/, model/)")
    return 0


if __name__ == "__main__":
    from sft.cli import guarded

    sys.exit(guarded(lambda: main(sys.argv[1:])))
