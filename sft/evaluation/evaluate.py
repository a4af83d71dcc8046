"""Evaluating a model: generate a response for every record, score them, and write responses.json,
eval_metrics.json and report.md."""

import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sft.data.template import PromptTemplate
from sft.errors import SFTError
from sft.inference.settings import GenerationSettings
from sft.paths import EVAL_METRICS_FILE, REPORT_FILE, RESPONSES_FILE

if TYPE_CHECKING:
    from sft.evaluation.bootstrap import BootstrapSettings


@dataclass
class Evaluation:
    metrics: dict[str, Any]  # as written to eval_metrics.json, per-record scores included
    responses: list[dict[str, Any]]  # the records with their `model_response`, as in responses.json


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
) -> Evaluation:
    """Generate a response for every record, score them, write the three files; returns what they hold.

    Pass `model` and `tokenizer` to evaluate a model already in memory (`model_name` then only
    labels the results); otherwise `model_name` is loaded through `sft.models`. The template is
    the one saved with the model unless `template` is given. Every figure gets its 95% bootstrap
    interval over the records (`<figure>_ci`), drawn with `bootstrap` (default 1000 resamples, seed 0).
    """
    from sft.data.load import display_source
    from sft.evaluation.bootstrap import figure_intervals
    from sft.evaluation.metrics import score_responses
    from sft.evaluation.report import eval_report
    from sft.inference.generate import generate_responses, load_for_inference
    from sft.paths import atomic_write_json, atomic_write_text

    settings = settings or GenerationSettings()
    if not records:
        raise SFTError("no records to evaluate")
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
    output_dir = Path(output_dir)
    atomic_write_json(output_dir / RESPONSES_FILE, responses)
    atomic_write_json(output_dir / EVAL_METRICS_FILE, metrics)
    atomic_write_text(output_dir / REPORT_FILE, eval_report(metrics, responses))
    return Evaluation(metrics, responses)
