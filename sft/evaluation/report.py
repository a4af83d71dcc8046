"""Reports: the one markdown-table builder, the results table, the console summary of scores, and the
report.md of `sft eval` and `sft compare`, all labelled by the figures of `sft.evaluation.metrics`."""

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sft.evaluation.judge import JUDGE_FIGURES, JUDGE_SCORE, judge_note, lowest_section, unscored_section
from sft.evaluation.metrics import FIGURES, HEADLINE, Figure

# What tables show, each only where the metrics hold it: the judge's figures where a judge graded the responses.
TABLE_FIGURES = (*FIGURES, *JUDGE_FIGURES)
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
    for figure in TABLE_FIGURES:
        if scores.get(figure.key) is None:
            continue
        interval = scores.get(figure.interval_key)
        shown = figure.show_interval(interval) if interval else ""
        note = ""
        if figure.key == "bleu" and scores.get("bleu_tokenize") not in (None, "13a"):
            note = f"(tokenizer {scores['bleu_tokenize']})"
        if figure is JUDGE_SCORE and scores.get("judge_unscored"):
            note = f"({scores['judge_scored']} scored, {scores['judge_unscored']} unscored)"
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


def judge_sentence(metrics: Mapping[str, Any]) -> str | None:
    """Who judged and how many records it scored, where a judge graded the responses."""
    info = metrics.get("judge")
    if not info:
        return None
    scored, unscored = metrics.get("judge_scored", 0), metrics.get("judge_unscored", 0)
    return (
        f"{judge_note(info)}; {scored} of {scored + unscored} records scored from 0 to 100 (its interval: "
        "bootstrap of the mean over the scored records)."
    )


def eval_report(
    metrics: Mapping[str, Any], responses: Sequence[Mapping[str, Any]], judgements: Sequence[Any] | None = None
) -> str:
    """Metric table (the judge's figures too, where it graded), breakdown by task kind, the worst and best
    records by ROUGE-L, the records the judge scored lowest with its reasons, and the human ratings with their
    agreement with the judge where `metrics` holds them."""
    from sft.evaluation.agreement import ratings_sections

    sections = [f"# Evaluation of `{metrics.get('model')}`", settings_line(metrics)]
    rows = [
        (f.label, f.show(metrics[f.key]), f.show_interval(metrics.get(f.interval_key)))
        for f in TABLE_FIGURES
        if metrics.get(f.key) is not None
    ]
    sections.append(markdown_table(("metric", "value", "95% interval"), rows))
    if note := bootstrap_note(metrics):
        sections.append(
            f"95% intervals: percentile {note} (BLEU recomputed as corpus BLEU on each resample). "
            "Two models' separate intervals can overlap while one is still better: `sft compare` "
            "tests the difference on the same records."
        )
    if sentence := judge_sentence(metrics):
        sections.append(sentence)
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
    if judgements is not None and metrics.get("judge"):
        sections += lowest_section(judgements, responses, metrics["judge"]["rubric"])
        sections += unscored_section(judgements)
    if metrics.get("human_ratings"):
        sections += ratings_sections(metrics["human_ratings"])
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
    for figure in TABLE_FIGURES:
        if base.get(figure.key) is None or tuned.get(figure.key) is None:
            continue
        counts = comparison.get("wins_ties_losses", {}).get(figure.key)
        # The judge's change is over the records it scored for both models, as its interval is.
        change = (comparison.get("change") or {}).get(figure.key)
        if change is None:
            change = tuned[figure.key] - base[figure.key]
        rows.append(
            ComparisonRow(
                figure,
                figure.show(base[figure.key]),
                figure.show(tuned[figure.key]),
                figure.show_change(change),
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
    if judged := comparison.get("judge"):
        lines.append(
            f"judge {judged['judge_model']}: {judged['paired']} of {comparison['n']} records scored for both models; "
            "its change, interval and counts are over those"
        )
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
    if judged := comparison.get("judge"):
        sections.append(
            f"{judge_note(judged)}; it scored {judged['paired']} of {comparison['n']} records for both models "
            "(scores from 0 to 100), and the judge score's change, interval and counts are over those."
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
    if comparison.get("judge"):
        sections += judge_drop_sections(comparison.get("judge_drops") or [])
    return "\n\n".join(sections) + "\n"


def judge_drop_sections(drops: Sequence[Mapping[str, Any]]) -> list[str]:
    """The records whose judge score dropped most from the base to the model, with both of the judge's reasons."""
    header = ("record", "base", "model", "change", "instruction", "expected", "base response", "judge on base")
    header += ("model response", "judge on model")
    rows = [
        (
            r["index"],
            r["base_judge_score"],
            r["model_judge_score"],
            f"{r['judge_score_change']:+d}" if isinstance(r["judge_score_change"], int) else r["judge_score_change"],
            cell(r["instruction"]),
            cell(r["output"]),
            cell(r["base_response"]),
            cell(r.get("base_judge_reason")),
            cell(r["model_response"]),
            cell(r.get("model_judge_reason")),
        )
        for r in drops
    ]
    count = f"{len(drops)} records" if len(drops) != 1 else "record"
    title = f"## The {count} whose judge score dropped most" if drops else "## Judge score drops"
    return [title, markdown_table(header, rows) if rows else "None: the judge scored no record lower for the model."]
