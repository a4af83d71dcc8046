"""Reports: the one markdown-table builder, the results table, the console summary of scores, and the
report.md of `sft eval` and `sft compare`, all labelled by the figures of `sft.evaluation.metrics`."""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sft.evaluation.metrics import FIGURES, HEADLINE, Figure

EXAMPLES = 10
CELL_CHARS = 160


def cell(text: Any, limit: int = CELL_CHARS) -> str:
    """One table cell: pipes escaped, line breaks as <br>, long text shortened."""
    text = "" if text is None else str(text).strip()
    if len(text) > limit:
        text = text[: limit - 1].rstrip() + "…"
    text = text.replace("\\", "\\\\").replace("|", "\\|").replace("\r", "")
    return text.replace("\n", "<br>") or " "


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(value) for value in row) + " |" for row in rows]
    return "\n".join(lines)


def results_table(rows: Mapping[str, Mapping[str, Any]]) -> str:
    """One row per model with the headline figures, as `demo` and `reproduce` print them."""
    header = ["model", *(figure.label for figure in HEADLINE)]
    return markdown_table(
        header,
        [[name, *(figure.show(metrics.get(figure.key)) for figure in HEADLINE)] for name, metrics in rows.items()],
    )


def aligned(rows: Sequence[Sequence[str]], right: Sequence[bool]) -> list[str]:
    """Console lines: the columns padded to their widest cell (right-aligned where `right`), two spaces apart."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(right))]
    return [
        "  ".join(text.rjust(width) if r else text.ljust(width) for text, width, r in zip(row, widths, right)).rstrip()
        for row in rows
    ]


def bootstrap_note(metrics: Mapping[str, Any]) -> str | None:
    """How the intervals were drawn, from the `bootstrap` settings a metrics file records."""
    bootstrap = metrics.get("bootstrap")
    if not bootstrap:
        return None
    return f"bootstrap over the records, {bootstrap['resamples']} resamples, seed {bootstrap['seed']}"


def format_scores(scores: Mapping[str, Any]) -> str:
    """Aligned lines for a terminal: each figure the scores hold with its 95% interval, then the record count."""
    rows = []
    for figure in FIGURES:
        if scores.get(figure.key) is None:
            continue
        interval = scores.get(figure.interval_key)
        shown = figure.show_interval(interval) if interval else ""
        note = ""
        if figure.key == "bleu" and scores.get("bleu_tokenize") not in (None, "13a"):
            note = f"(tokenizer {scores['bleu_tokenize']})"
        rows.append((figure.label, figure.show(scores[figure.key]), shown, note))
    rows.append(("records", str(scores["n"]), "", ""))
    lines = aligned(rows, (False, False, False, False))
    if note := bootstrap_note(scores):
        width = max(len(row[0]) for row in rows)
        lines.append(f"{'95% intervals'.ljust(width)}  {note}")
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
    rows = [
        (f.label, f.show(metrics[f.key]), f.show_interval(metrics.get(f.interval_key)))
        for f in FIGURES
        if metrics.get(f.key) is not None
    ]
    sections.append(markdown_table(("metric", "value", "95% interval"), rows))
    if note := bootstrap_note(metrics):
        sections.append(
            f"95% intervals: percentile {note} (BLEU recomputed as corpus BLEU on each resample). "
            "Two models' separate intervals can overlap while one is still better: `sft compare` "
            "tests the difference on the same records."
        )
    if metrics.get("by_kind"):
        shown = [f for f in HEADLINE if f.key != "ended_at_eos"]
        kind_rows = [
            (cell(kind), group["n"], *(f.show(group[f.key]) for f in shown))
            for kind, group in metrics["by_kind"].items()
        ]
        sections += ["## By task kind", markdown_table(("kind", "n", *(f.label for f in shown)), kind_rows)]
    per_record = sorted(metrics.get("per_record", []), key=lambda r: (r["rouge_l"], r["index"]))
    n_worst, n_best = split_examples(len(per_record))
    # Records are numbered from 0, as `sft data check` and every other command number them.
    header = ("record", "ROUGE-L", "instruction", "input", "expected", "response")

    def example_rows(chosen: Sequence[Mapping[str, Any]]) -> list[tuple]:
        return [
            (
                r["index"],
                f"{r['rouge_l']:.3f}",
                cell(responses[r["index"]].get("instruction")),
                cell(responses[r["index"]].get("input")),
                cell(responses[r["index"]].get("output")),
                cell(responses[r["index"]].get("model_response")),
            )
            for r in chosen
        ]

    if n_worst:
        sections += [
            f"## {n_worst} worst records by ROUGE-L",
            markdown_table(header, example_rows(per_record[:n_worst])),
        ]
    if n_best:
        best = per_record[::-1][:n_best]
        sections += [f"## {n_best} best records by ROUGE-L", markdown_table(header, example_rows(best))]
    return "\n\n".join(sections) + "\n"


@dataclass(frozen=True)
class ComparisonRow:
    """One figure of a comparison, as text: both values, the change, its interval, the per-record counts."""

    figure: Figure
    base: str
    model: str
    change: str
    interval: str
    counts: str
    note: str


def comparison_rows(comparison: Mapping[str, Any]) -> list[ComparisonRow]:
    """The figures both models have, shown; "–" for what an older compare.json lacks."""
    base, tuned = comparison["base"], comparison["model"]
    rows = []
    for figure in FIGURES:
        if base.get(figure.key) is None or tuned.get(figure.key) is None:
            continue
        counts = comparison.get("wins_ties_losses", {}).get(figure.key)
        rows.append(
            ComparisonRow(
                figure,
                figure.show(base[figure.key]),
                figure.show(tuned[figure.key]),
                figure.show_change(tuned[figure.key] - base[figure.key]),
                figure.show_interval(comparison.get("change_ci", {}).get(figure.key), signed=True),
                f"{counts['wins']} / {counts['ties']} / {counts['losses']}" if counts else "–",
                "within noise" if comparison.get("within_noise", {}).get(figure.key) else "",
            )
        )
    return rows


def format_comparison(comparison: Mapping[str, Any]) -> str:
    """Aligned lines for a terminal: both models' figures, the change with its interval, won / tied / lost."""
    header = ("", "base", "model", "change", "95% interval", "won/tied/lost", "")
    rows = [header] + [
        (r.figure.label, r.base, r.model, r.change, r.interval, r.counts.replace(" / ", "/"), r.note)
        for r in comparison_rows(comparison)
    ]
    lines = aligned(rows, (False, True, True, True, False, True, False))
    counts = comparison["counts"]
    lines.append(
        f"records: {counts['improved']} improved, {counts['regressed']} regressed, "
        f"{counts['unchanged']} unchanged (ROUGE-L)"
    )
    if note := bootstrap_note(comparison):
        lines.append(f"95% intervals of the change: paired {note}; within noise: covers 0")
    return "\n".join(lines)


def compare_report(comparison: Mapping[str, Any]) -> str:
    """Metrics side by side with deltas, their intervals and per-record counts, then the records that
    gained and lost most ROUGE-L."""
    base, tuned = comparison["base"], comparison["model"]
    sections = [
        f"# `{base['model']}` (base) against `{tuned['model']}` (model)",
        "Both models answer the same prompts. " + settings_line(tuned, timing=False),
    ]
    rows = [
        (row.figure.label, row.base, row.model, row.change, row.interval, row.counts, row.note)
        for row in comparison_rows(comparison)
    ]
    header = ("metric", "base", "model", "change", "95% interval of change", "won / tied / lost", "note")
    sections.append(markdown_table(header, rows))
    if note := bootstrap_note(comparison):
        sections.append(
            f"Change: model minus base. Its 95% interval is a paired {note}: both models on the same "
            "resampled records, BLEU recomputed as corpus BLEU for each. *Within noise*: the interval "
            "covers zero, so these records cannot tell the two models apart on that figure. Won / tied / "
            "lost: records on which the model scores higher than the base, the same, or lower (BLEU: "
            "sentence BLEU)."
        )
    counts = comparison["counts"]
    sections.append(
        f"ROUGE-L per record: {counts['improved']} improved, {counts['regressed']} regressed, "
        f"{counts['unchanged']} unchanged."
    )
    header = ("record", "base", "model", "change", "instruction", "expected", "base response", "model response")

    def change_rows(chosen: Sequence[Mapping[str, Any]]) -> list[tuple]:
        return [
            (
                r["index"],
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
        sections += [f"## {title} (ROUGE-L)", markdown_table(header, change_rows(chosen)) if chosen else "None."]
    return "\n\n".join(sections) + "\n"
