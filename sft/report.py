"""Markdown reports for `sft eval` and `sft compare`, built from their metrics and responses."""

from collections.abc import Mapping, Sequence
from typing import Any

EXAMPLES = 10
CELL_CHARS = 160
METRIC_ROWS = (
    ("rouge_l", "ROUGE-L F1", "{:.4f}"),
    ("bleu", "BLEU", "{:.2f}"),
    ("exact_match", "exact match", "{:.4f}"),
    ("exact_match_normalized", "exact match, normalised", "{:.4f}"),
    ("ended_at_eos", "ended at EOS", "{:.4f}"),
)


def cell(text: Any, limit: int = CELL_CHARS) -> str:
    """One table cell: pipes escaped, line breaks as <br>, long text shortened."""
    text = "" if text is None else str(text).strip()
    if len(text) > limit:
        text = text[: limit - 1].rstrip() + "…"
    text = text.replace("\\", "\\\\").replace("|", "\\|").replace("\r", "")
    return text.replace("\n", "<br>") or " "


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(value) for value in row) + " |" for row in rows]
    return "\n".join(lines)


def settings_line(metrics: Mapping[str, Any], timing: bool = True) -> str:
    generation = metrics.get("generation", {})
    temperature = generation.get("temperature", 0.0)
    decoding = (
        "greedy decoding"
        if not temperature
        else (f"sampling at temperature {temperature}, top-p {generation.get('top_p')}, seed {generation.get('seed')}")
    )
    parts = [
        f"Data `{metrics.get('data')}`",
        f"split `{metrics.get('split')}`",
        f"{metrics.get('n')} records",
        decoding,
        f"at most {generation.get('max_new_tokens')} new tokens",
        f"batch size {generation.get('batch_size')}",
    ]
    if timing and metrics.get("seconds"):
        parts.append(f"{metrics['seconds']:.1f} s ({metrics.get('responses_per_second', 0):.2f} responses/s)")
    return "; ".join(parts) + "."


def split_examples(n: int) -> tuple[int, int]:
    """How many worst and best records to show without showing one record twice."""
    worst = min(EXAMPLES, (n + 1) // 2)
    return worst, min(EXAMPLES, n - worst)


def eval_report(metrics: Mapping[str, Any], responses: Sequence[Mapping[str, Any]]) -> str:
    """Metric table, breakdown by task kind, and the worst and best records by ROUGE-L."""
    sections = [f"# Evaluation of `{metrics.get('model')}`", settings_line(metrics)]
    rows = [(label, fmt.format(metrics[key])) for key, label, fmt in METRIC_ROWS if metrics.get(key) is not None]
    sections.append(table(("metric", "value"), rows))
    if metrics.get("by_kind"):
        kind_rows = [
            (cell(kind), group["n"], f"{group['rouge_l']:.4f}", f"{group['bleu']:.2f}", f"{group['exact_match']:.4f}")
            for kind, group in metrics["by_kind"].items()
        ]
        sections += ["## By task kind", table(("kind", "n", "ROUGE-L F1", "BLEU", "exact match"), kind_rows)]
    per_record = sorted(metrics.get("per_record", []), key=lambda r: (r["rouge_l"], r["index"]))
    n_worst, n_best = split_examples(len(per_record))
    header = ("#", "ROUGE-L", "instruction", "input", "expected", "response")

    def example_rows(chosen: Sequence[Mapping[str, Any]]) -> list[tuple]:
        return [
            (
                r["index"] + 1,
                f"{r['rouge_l']:.3f}",
                cell(responses[r["index"]].get("instruction")),
                cell(responses[r["index"]].get("input")),
                cell(responses[r["index"]].get("output")),
                cell(responses[r["index"]].get("model_response")),
            )
            for r in chosen
        ]

    if n_worst:
        sections += [f"## {n_worst} worst records by ROUGE-L", table(header, example_rows(per_record[:n_worst]))]
    if n_best:
        best = per_record[::-1][:n_best]
        sections += [f"## {n_best} best records by ROUGE-L", table(header, example_rows(best))]
    return "\n\n".join(sections) + "\n"


def compare_report(comparison: Mapping[str, Any]) -> str:
    """Metrics side by side with deltas, then the records that gained and lost most ROUGE-L."""
    base, tuned = comparison["base"], comparison["model"]
    sections = [
        f"# `{base['model']}` (base) against `{tuned['model']}` (model)",
        "Both models answer the same prompts. " + settings_line(tuned, timing=False),
    ]
    rows = []
    for key, label, fmt in METRIC_ROWS:
        if base.get(key) is None or tuned.get(key) is None:
            continue
        delta = tuned[key] - base[key]
        sign = "+" if delta >= 0 else ""
        rows.append((label, fmt.format(base[key]), fmt.format(tuned[key]), sign + fmt.format(delta)))
    sections.append(table(("metric", "base", "model", "change"), rows))
    counts = comparison["counts"]
    sections.append(
        f"ROUGE-L per record: {counts['improved']} improved, {counts['regressed']} regressed, "
        f"{counts['unchanged']} unchanged."
    )
    header = ("#", "base", "model", "change", "instruction", "expected", "base response", "model response")

    def change_rows(chosen: Sequence[Mapping[str, Any]]) -> list[tuple]:
        return [
            (
                r["index"] + 1,
                f"{r['base_rouge_l']:.3f}",
                f"{r['model_rouge_l']:.3f}",
                f"{r['rouge_l_change']:+.3f}",
                cell(r["instruction"]),
                cell(r["output"]),
                cell(r["base_response"]),
                cell(r["model_response"]),
            )
            for r in chosen
        ]

    for title, key in (("Biggest improvements", "improvements"), ("Biggest regressions", "regressions")):
        chosen = comparison[key]
        sections += [f"## {title} (ROUGE-L)", table(header, change_rows(chosen)) if chosen else "None."]
    return "\n\n".join(sections) + "\n"
