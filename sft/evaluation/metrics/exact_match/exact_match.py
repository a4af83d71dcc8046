"""Exact match after trimming whitespace (NFC text), and after normalisation (case, spaces, end punctuation)."""

import unicodedata

import datasets
import evaluate

from sft.evaluation.metrics.text import normalize

_DESCRIPTION = "Fraction of predictions equal to their reference, strictly and after normalisation."
_INPUTS = """
Args:
    predictions: generated texts.
    references: one reference text per prediction.
Returns:
    exact_match, exact_match_normalized: fractions (0 to 1), and the 0/1 value of each record.
"""


def _strict(text: str) -> str:
    """Trimmed, in NFC form: composed and decomposed accents are the same text."""
    return unicodedata.normalize("NFC", text.strip())


class ExactMatch(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_INPUTS,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
        )

    def _compute(self, predictions: list[str], references: list[str]) -> dict:
        strict = [float(_strict(pred) == _strict(ref)) for pred, ref in zip(predictions, references)]
        loose = [float(normalize(pred) == normalize(ref)) for pred, ref in zip(predictions, references)]
        n = len(strict) or 1
        return {
            "exact_match": sum(strict) / n,
            "exact_match_normalized": sum(loose) / n,
            "exact_match_per_record": strict,
            "exact_match_normalized_per_record": loose,
        }
