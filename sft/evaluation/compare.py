"""Comparing a base model and its fine-tune on the same prompts, side by side.

Each model is evaluated into its own subdirectory (base/, model/: responses, metrics, report);
DIR/compare.json and DIR/report.md hold the metric changes, each with its paired 95% bootstrap
interval and per-record wins, ties and losses, and the per-record changes.

With a judge, each model's responses are graded in its own subdirectory (with its own answer cache), and the
judge score's change, its paired interval and the wins, ties and losses are taken over the records the judge
scored for both models; the report lists the records whose judge score dropped most, with both reasons.
"""

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sft.evaluation.metrics import FIGURES
from sft.inference.settings import GenerationSettings
from sft.paths import COMPARE_FILE, REPORT_FILE

if TYPE_CHECKING:
    from sft.evaluation.bootstrap import BootstrapSettings
    from sft.evaluation.evaluate import Evaluation
    from sft.evaluation.judge import JudgeSettings

SHOWN = 10
# ROUGE-L changes smaller than this are noise from ties, not a change in the response.
TOLERANCE = 1e-9


def headline(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """A model's metrics without the per-record list (compare.json has its own)."""
    return {key: value for key, value in metrics.items() if key != "per_record"}


def record_changes(
    records: Sequence[Mapping[str, Any]], base: "Evaluation", tuned: "Evaluation"
) -> list[dict[str, Any]]:
    """Per record: both responses and their ROUGE-L, from the two evaluations."""
    changes = []
    for i, record in enumerate(records):
        before = base.metrics["per_record"][i]["rouge_l"]
        after = tuned.metrics["per_record"][i]["rouge_l"]
        changes.append(
            {
                "index": i,
                "instruction": record.get("instruction", ""),
                "input": record.get("input", ""),
                "output": record.get("output", ""),
                "base_response": base.responses[i]["model_response"],
                "model_response": tuned.responses[i]["model_response"],
                "base_rouge_l": before,
                "model_rouge_l": after,
                "rouge_l_change": after - before,
            }
        )
    if base.judgements is not None and tuned.judgements is not None:
        for change, before, after in zip(changes, base.judgements, tuned.judgements):
            both = before.scored and after.scored and before.score is not None and after.score is not None
            change.update(
                base_judge_score=before.score if before.scored else None,
                model_judge_score=after.score if after.scored else None,
                judge_score_change=after.score - before.score if both else None,
                base_judge_reason=before.reason,
                model_judge_reason=after.reason,
            )
    return changes


def judge_drops(changes: Sequence[Mapping[str, Any]], shown: int = SHOWN) -> list[Mapping[str, Any]]:
    """The records whose judge score fell most from the base to the model (scored for both), largest fall first."""
    fell = [c for c in changes if isinstance(c.get("judge_score_change"), (int, float)) and c["judge_score_change"] < 0]
    return sorted(fell, key=lambda c: (c["judge_score_change"], c["index"]))[:shown]


def judge_paired_changes(
    base: "Evaluation", tuned: "Evaluation", bootstrap: "BootstrapSettings | None" = None
) -> dict[str, Any]:
    """For each judge figure both models have: the mean change (model minus base) over the records the judge
    scored for both, its paired 95% bootstrap interval (the pairs resampled), whether it is within noise, and
    wins / ties / losses on the per-record scores; `judge`: who judged and how many records were paired."""
    from sft.evaluation.bootstrap import BootstrapSettings, mean_interval
    from sft.evaluation.judge import JUDGE_FIGURES, JUDGE_SCORE

    bootstrap = bootstrap or BootstrapSettings()
    found: dict[str, Any] = {"change": {}, "change_ci": {}, "within_noise": {}, "wins_ties_losses": {}}
    paired = 0
    for figure in JUDGE_FIGURES:
        if base.metrics.get(figure.key) is None or tuned.metrics.get(figure.key) is None:
            continue
        pairs = [
            (float(before[figure.key]), float(after[figure.key]))
            for before, after in zip(base.metrics["per_record"], tuned.metrics["per_record"])
            if before.get(figure.key) is not None and after.get(figure.key) is not None
        ]
        if figure is JUDGE_SCORE:
            paired = len(pairs)
        if not pairs:
            continue
        deltas = [after - before for before, after in pairs]
        interval = mean_interval(deltas, bootstrap)
        found["change"][figure.key] = sum(deltas) / len(deltas)
        found["change_ci"][figure.key] = interval
        found["within_noise"][figure.key] = interval[0] <= 0 <= interval[1]
        found["wins_ties_losses"][figure.key] = wins_ties_losses(*zip(*pairs))
    info = base.metrics["judge"]
    keep = ("judge_model", "rubric", "prompt_version", "endpoint", "temperature", "seed", "settings")
    found["judge"] = {**{key: info[key] for key in keep if key in info}, "paired": paired}
    return found


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


def wins_ties_losses(base: Sequence[float], model: Sequence[float], tolerance: float = TOLERANCE) -> dict[str, int]:
    """How many records the model scores higher than the base on (wins), the same (ties), lower (losses)."""
    deltas = [float(after) - float(before) for before, after in zip(base, model)]
    wins = sum(delta > tolerance for delta in deltas)
    losses = sum(delta < -tolerance for delta in deltas)
    return {"wins": wins, "ties": len(deltas) - wins - losses, "losses": losses}


def paired_changes(
    records: Sequence[Mapping[str, Any]],
    base: "Evaluation",
    tuned: "Evaluation",
    bootstrap: "BootstrapSettings | None" = None,
) -> dict[str, Any]:
    """Per figure: the paired 95% bootstrap interval of the change (both models scored on the same
    resampled records; BLEU recomputed as corpus BLEU on each), wins / ties / losses over records
    (BLEU: sentence BLEU), and whether the change is within noise (its interval covers zero)."""
    from sft.evaluation.bootstrap import BootstrapSettings, bleu_statistics, paired_change_intervals

    bootstrap = bootstrap or BootstrapSettings()
    references = [str(record["output"]) for record in records]
    # Both models are scored against the same references, so with the same tokenizer (chosen from them).
    tokenize = tuned.metrics.get("bleu_tokenize")
    base_stats, model_stats = (
        bleu_statistics([r["model_response"] for r in evaluation.responses], references, tokenize)
        for evaluation in (base, tuned)
    )
    base_records, model_records = base.metrics["per_record"], tuned.metrics["per_record"]
    change_ci = paired_change_intervals(base_records, model_records, base_stats, model_stats, bootstrap)
    counts = {
        figure.key: wins_ties_losses([r[figure.key] for r in base_records], [r[figure.key] for r in model_records])
        for figure in FIGURES
        if all(figure.key in r for r in (*base_records, *model_records))
    }
    return {
        "change_ci": change_ci,
        "within_noise": {key: low <= 0 <= high for key, (low, high) in change_ci.items()},
        "wins_ties_losses": counts,
        "bootstrap": bootstrap.record(),
    }


def compare_models(
    base_name: str,
    model_name: str,
    records: Sequence[Mapping[str, Any]],
    output_dir: str | Path,
    settings: GenerationSettings | None = None,
    *,
    progress: bool = True,
    data: str | None = None,
    split: str | None = None,
    bootstrap: "BootstrapSettings | None" = None,
    judge: "JudgeSettings | None" = None,
) -> dict[str, Any]:
    """Evaluate both models on `records` and write compare.json and report.md; returns the comparison.

    Both get the prompt template saved with the fine-tuned model (the default Alpaca one where it
    saved none), so the two see identical prompts. Every interval is drawn with `bootstrap`. With
    `judge`, both models' responses are graded too, each in its own subdirectory.
    """
    from sft.data.load import display_source
    from sft.data.template import PromptTemplate
    from sft.evaluation.evaluate import evaluate_model
    from sft.evaluation.report import compare_report
    from sft.models.load import resolve_model
    from sft.paths import atomic_write_json, atomic_write_text

    output_dir = Path(output_dir)
    resolved = Path(resolve_model(model_name))
    template = PromptTemplate.for_model(resolved if resolved.is_dir() else None)
    common = dict(progress=progress, data=data, split=split, template=template, bootstrap=bootstrap, judge=judge)
    base = evaluate_model(base_name, records, output_dir / "base", settings, **common)
    tuned = evaluate_model(model_name, records, output_dir / "model", settings, **common)
    changes = record_changes(records, base, tuned)
    comparison = {
        "base": headline(base.metrics),
        "model": headline(tuned.metrics),
        "change": {f.key: tuned.metrics[f.key] - base.metrics[f.key] for f in FIGURES},
        **paired_changes(records, base, tuned, bootstrap),
        "data": display_source(data) if data else data,
        "split": split,
        "n": len(records),
        **rank_changes(changes),
        "per_record": changes,
    }
    if judge is not None:
        judged = judge_paired_changes(base, tuned, bootstrap)
        for key in ("change", "change_ci", "within_noise", "wins_ties_losses"):
            comparison[key].update(judged[key])
        per_record = comparison.pop("per_record")
        comparison.update(judge=judged["judge"], judge_drops=judge_drops(changes), per_record=per_record)
    atomic_write_json(output_dir / COMPARE_FILE, comparison)
    atomic_write_text(output_dir / REPORT_FILE, compare_report(comparison))
    return comparison
