"""Evaluating a model: generate a response for every record, score them, and write responses.json,
eval_metrics.json and report.md; with a judge, also have it grade every response and write judgements.json."""

import json
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sft.data.template import PromptTemplate
from sft.errors import SFTError
from sft.inference.settings import GenerationSettings
from sft.paths import (
    EVAL_METRICS_FILE,
    HUMAN_RATINGS_FILE,
    JUDGE_CACHE_FILE,
    JUDGEMENTS_FILE,
    REPORT_FILE,
    RESPONSES_FILE,
)

if TYPE_CHECKING:
    from sft.evaluation.bootstrap import BootstrapSettings
    from sft.evaluation.judge import Judgement, JudgeSettings


@dataclass
class Evaluation:
    metrics: dict[str, Any]  # as written to eval_metrics.json, per-record scores included
    responses: list[dict[str, Any]]  # the records with their `model_response`, as in responses.json
    judgements: "list[Judgement] | None" = None  # the judge's, in record order, where a judge graded them


def slug(name: str) -> str:
    """A directory-name form of a model argument: its last path part, or the Hub id with `--`."""
    path = Path(name.rstrip("/"))
    text = path.name if path.is_dir() or name.startswith((".", "/", "~")) else name.replace("/", "--")
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text) or "model"


def by_kind(records: Sequence[Mapping[str, Any]], predictions: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Scores per task `kind`, for records that carry one (an empty dict when none do)."""
    from sft.evaluation.metrics import score_responses
    from sft.evaluation.score import summary

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
    settings: GenerationSettings | None = None,
    *,
    model: Any = None,
    tokenizer: Any = None,
    template: PromptTemplate | None = None,
    progress: bool = True,
    data: str | None = None,
    split: str | None = None,
    bootstrap: "BootstrapSettings | None" = None,
    judge: "JudgeSettings | None" = None,
) -> Evaluation:
    """Generate a response for every record, score them, write the three files; returns what they hold.

    Pass `model` and `tokenizer` to evaluate a model already in memory (`model_name` then only
    labels the results); otherwise `model_name` is loaded through `sft.models`. The template is
    the one saved with the model unless `template` is given. Every figure gets its 95% bootstrap
    interval over the records (`<figure>_ci`), drawn with `bootstrap` (default 1000 resamples, seed 0).

    With `judge`, the judge then grades every response (answers cached in judge_cache.jsonl in `output_dir`,
    so a rerun with the same responses asks nothing again): judgements.json is written, eval_metrics.json
    gains `judge_score` with its interval, the counts and the judge's settings (`judge`), each per-record
    entry its `judge_score`, and report.md the judge's row and the records it scored lowest. The three files
    are written before the judge is asked, so a judge that fails leaves the evaluation without its figures.
    Human ratings beside responses.json (human_ratings.json) go into the metrics and report when they rate
    the responses written now.
    """
    from sft.data.load import display_source
    from sft.evaluation.bootstrap import BootstrapSettings, figure_intervals
    from sft.evaluation.metrics import score_responses
    from sft.evaluation.report import eval_report
    from sft.inference.generate import generate_responses, load_for_inference
    from sft.paths import atomic_write_json, atomic_write_text

    settings = settings or GenerationSettings()
    bootstrap = bootstrap or BootstrapSettings()
    if not records:
        raise SFTError("no records to evaluate")
    output_dir = Path(output_dir)
    if judge is not None:  # bad judge settings or an unset key variable fail before the model loads
        judge.check()
        judge.api_key()
    previous = previous_responses(output_dir, len(records))
    if model is None or tokenizer is None:
        model, tokenizer, saved_template = load_for_inference(model_name)
        template = template or saved_template
    started = time.perf_counter()
    results = generate_responses(model, tokenizer, records, settings, template, progress=progress)
    seconds = time.perf_counter() - started
    predictions = [result.text for result in results]
    responses = [{**record, "model_response": text} for record, text in zip(records, predictions)]
    references = [str(record["output"]) for record in records]
    scores = score_responses(predictions, references)
    for entry, result in zip(scores["per_record"], results):
        entry.update(new_tokens=result.new_tokens, ended_at_eos=result.ended_at_eos)
    intervals = figure_intervals(scores["per_record"], predictions, references, scores["bleu_tokenize"], bootstrap)
    n = len(results)
    metrics = {
        "model": model_name,
        "data": display_source(data) if data else data,
        "split": split,
        "n": n,
        "rouge_l": scores["rouge_l"],
        "bleu": scores["bleu"],
        "exact_match": scores["exact_match"],
        "exact_match_normalized": scores["exact_match_normalized"],
        "ended_at_eos": sum(r.ended_at_eos for r in results) / n,
        "mean_new_tokens": sum(r.new_tokens for r in results) / n,
        **intervals,
        "bleu_tokenize": scores["bleu_tokenize"],
        "generation": settings.record(),
        "seconds": round(seconds, 3),
        "responses_per_second": round(n / seconds, 3) if seconds > 0 else None,
        "by_kind": by_kind(records, predictions),
        "per_record": scores["per_record"],
    }
    human = previous is not None and previous == responses  # ratings of these very responses, if any
    atomic_write_json(output_dir / RESPONSES_FILE, responses)
    add_human_ratings(metrics, output_dir, responses, human, None, bootstrap)
    atomic_write_json(output_dir / EVAL_METRICS_FILE, metrics)
    atomic_write_text(output_dir / REPORT_FILE, eval_report(metrics, responses))
    if judge is None:
        return Evaluation(metrics, responses)
    judgements = judge_evaluation(metrics, responses, output_dir, judge, bootstrap, progress)
    add_human_ratings(metrics, output_dir, responses, human, judgements, bootstrap)
    atomic_write_json(output_dir / JUDGEMENTS_FILE, [j.record(judge.rubric) for j in judgements])
    atomic_write_json(output_dir / EVAL_METRICS_FILE, metrics)
    atomic_write_text(output_dir / REPORT_FILE, eval_report(metrics, responses, judgements))
    return Evaluation(metrics, responses, judgements)


def previous_responses(output_dir: Path, n: int) -> list[dict[str, Any]] | None:
    """responses.json as an earlier evaluation left it in `output_dir`, where human ratings lie beside it (which
    are then checked now, before any work); None where there are no ratings or no such file."""
    from sft.evaluation.agreement import read_human_ratings

    if not (output_dir / HUMAN_RATINGS_FILE).is_file():
        return None
    read_human_ratings(output_dir / HUMAN_RATINGS_FILE, n)  # a malformed file fails before generating
    try:
        found = json.loads((output_dir / RESPONSES_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return found if isinstance(found, list) else None


def add_human_ratings(
    metrics: dict[str, Any],
    output_dir: Path,
    responses: Sequence[Mapping[str, Any]],
    same_responses: bool,
    judgements: "Sequence[Judgement] | None",
    bootstrap: "BootstrapSettings",
) -> None:
    """`human_ratings` in the metrics (before `per_record`) where human_ratings.json lies in `output_dir`: their
    summary and agreement with this run's judge, or a note that they rate responses this run replaced."""
    from sft.evaluation.agreement import judge_scores_from_judgements, ratings_beside

    if not (output_dir / HUMAN_RATINGS_FILE).is_file():
        return
    if same_responses:
        judge = judge_scores_from_judgements(judgements) if judgements is not None else {}
        found = ratings_beside(output_dir / RESPONSES_FILE, responses, judge, bootstrap)
    else:
        found = {
            "file": HUMAN_RATINGS_FILE,
            "left_out": "they rate the responses an earlier evaluation wrote here, and this one's differ",
        }
    per_record = metrics.pop("per_record")
    metrics["human_ratings"] = found
    metrics["per_record"] = per_record


def judge_evaluation(
    metrics: dict[str, Any],
    responses: Sequence[Mapping[str, Any]],
    output_dir: Path,
    settings: "JudgeSettings",
    bootstrap: "BootstrapSettings",
    progress: bool,
) -> "list[Judgement]":
    """Have the judge grade every response (cached in `output_dir`) and put its figures into `metrics`: the
    headline ones before `generation`, its settings as `judge`, `judge_score` in every per-record entry."""
    from sft.evaluation.judge import JudgeStats, judge_figures, judge_info, judge_records, per_record_figures

    stats = JudgeStats()
    texts = [str(record["model_response"]) for record in responses]
    judgements = judge_records(responses, texts, settings, output_dir / JUDGE_CACHE_FILE, progress, stats)
    figures = judge_figures(judgements, settings.rubric, bootstrap)
    for entry, judgement in zip(metrics["per_record"], judgements):
        entry.update(per_record_figures(judgement, settings.rubric))
    rebuilt: dict[str, Any] = {}
    for key, value in metrics.items():
        if key == "bleu_tokenize":
            rebuilt.update(figures)
        if key == "per_record":
            rebuilt["judge"] = judge_info(settings, stats)
        rebuilt[key] = value
    metrics.clear()
    metrics.update(rebuilt)
    return judgements
