"""ROUGE-L F1 with rouge-score (Porter stemming), averaged over records, CJK characters as tokens."""

import datasets
import evaluate
from rouge_score import rouge_scorer

from sft.evaluation.metrics.text import CJKTokenizer

_DESCRIPTION = "Mean ROUGE-L F1 of predictions against one reference each, with the per-record scores."
_INPUTS = """
Args:
    predictions: generated texts.
    references: one reference text per prediction.
Returns:
    rouge_l: mean F1 over records (0 to 1); rouge_l_per_record: the F1 of each record.
"""


class RougeL(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="Lin, ROUGE: A Package for Automatic Evaluation of Summaries, 2004.",
            inputs_description=_INPUTS,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
        )

    def _compute(self, predictions: list[str], references: list[str]) -> dict:
        scorer = rouge_scorer.RougeScorer(["rougeL"], tokenizer=CJKTokenizer(use_stemmer=True))
        scores = [scorer.score(ref, pred)["rougeL"].fmeasure for pred, ref in zip(predictions, references)]
        return {"rouge_l": sum(scores) / len(scores) if scores else 0.0, "rouge_l_per_record": scores}
