"""Scoring a responses file: records with the reference `output` and the model's `model_response`."""

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sft.errors import DataError, SFTError

RESPONSE_FIELD = "model_response"
if TYPE_CHECKING:
    from sft.evaluation.bootstrap import BootstrapSettings

SUMMARY_KEYS = ("rouge_l", "bleu", "exact_match", "exact_match_normalized", "n", "bleu_tokenize")


def score_records(
    records: Sequence[Mapping[str, Any]], source: str = "records", bootstrap: "BootstrapSettings | None" = None
) -> dict[str, Any]:
    """`score_responses` of each record's `model_response` against its `output`, with each figure's
    95% bootstrap interval over the records (`<figure>_ci`) and the bootstrap settings before `per_record`."""
    from sft.evaluation.bootstrap import figure_intervals
    from sft.evaluation.metrics import score_responses

    if records and not any(RESPONSE_FIELD in record for record in records):
        raise SFTError(
            f"{source}: no record has a `{RESPONSE_FIELD}`, so there is nothing to score; "
            "write responses with `sft eval`, which saves them in responses.json"
        )
    problems = [
        f"{source}: record {i}: `{RESPONSE_FIELD}` is missing or not text; "
        "every record needs the model's response to score"
        for i, record in enumerate(records)
        if not isinstance(record.get(RESPONSE_FIELD), str)
    ]
    if problems:
        raise DataError(problems[:20] + ([f"... and {len(problems) - 20} more"] if len(problems) > 20 else []))
    predictions = [r[RESPONSE_FIELD] for r in records]
    references = [str(r["output"]) for r in records]
    scores = score_responses(predictions, references)
    per_record = scores.pop("per_record")
    intervals = figure_intervals(per_record, predictions, references, scores["bleu_tokenize"], bootstrap)
    return {**scores, **intervals, "per_record": per_record}


def summary(scores: Mapping[str, Any]) -> dict[str, Any]:
    """The headline figures of a `score_responses` result, without the per-record list."""
    return {key: scores[key] for key in SUMMARY_KEYS if key in scores}


def score_file(
    path: str | Path, output: str | Path | None = None, bootstrap: "BootstrapSettings | None" = None
) -> dict[str, Any]:
    """Scores of a responses file, with their intervals; written as JSON to `output` when given. Where human
    ratings lie beside a local file (human_ratings.json), `human_ratings` holds their summary and their
    agreement with the judge (sft.evaluation.agreement)."""
    from sft.data.load import load_records
    from sft.evaluation.agreement import ratings_beside
    from sft.paths import atomic_write_json

    records = load_records(str(path))
    scores = {"data": str(path), **score_records(records, str(path), bootstrap)}
    human = ratings_beside(path, records, bootstrap=bootstrap) if Path(path).is_file() else None
    if human is not None:
        per_record = scores.pop("per_record")
        scores.update(human_ratings=human, per_record=per_record)
    if output is not None:
        atomic_write_json(output, scores)
    return scores
