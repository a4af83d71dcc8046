"""ROUGE-L F1 with rouge-score, averaged over records, with tokens for every script.

rouge-score's own tokenizer keeps only [a-z0-9] runs, so a response in Russian, Greek, Arabic,
Hindi, Thai, Chinese, ... would have no tokens and score 0 even when identical to its reference.
The scorer is given `ScriptAwareTokenizer` (sft/evaluation/metrics/text.py) instead: ASCII words
get exactly rouge-score's tokens (lower case, Porter stemming), characters of scripts written
without spaces (Han, kana, Hangul, Thai, Lao, Khmer, Myanmar, ...) are tokens of their own with
their combining marks, and runs of other letters, digits and marks are case-folded word tokens.
"""

import datasets
import evaluate
from rouge_score import rouge_scorer

from sft.evaluation.metrics.text import ScriptAwareTokenizer

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
        scorer = rouge_scorer.RougeScorer(["rougeL"], tokenizer=ScriptAwareTokenizer(use_stemmer=True))
        scores = [scorer.score(ref, pred)["rougeL"].fmeasure for pred, ref in zip(predictions, references)]
        return {"rouge_l": sum(scores) / len(scores) if scores else 0.0, "rouge_l_per_record": scores}
