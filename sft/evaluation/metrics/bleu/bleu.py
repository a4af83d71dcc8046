"""Corpus BLEU with sacrebleu (0 to 100), plus smoothed sentence BLEU per record."""

import unicodedata

import datasets
import evaluate
import sacrebleu

from sft.evaluation.metrics.text import bleu_tokenizer

_DESCRIPTION = "sacrebleu corpus BLEU against one reference per prediction; tokenizer 13a, zh or char by script."
_INPUTS = """
Args:
    predictions: generated texts.
    references: one reference text per prediction.
    tokenize: sacrebleu tokenizer name; chosen from the references when omitted.
Returns:
    bleu: corpus BLEU (0 to 100); bleu_per_record: sentence BLEU of each record; tokenize: tokenizer used.
"""


class Bleu(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="Post, A Call for Clarity in Reporting BLEU Scores, WMT 2018.",
            inputs_description=_INPUTS,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
        )

    def _compute(self, predictions: list[str], references: list[str], tokenize: str | None = None) -> dict:
        # NFC: the same text scores the same whether its accents were composed or decomposed.
        predictions = [unicodedata.normalize("NFC", text) for text in predictions]
        references = [unicodedata.normalize("NFC", text) for text in references]
        tokenize = tokenize or bleu_tokenizer(references)
        corpus = sacrebleu.corpus_bleu(predictions, [references], tokenize=tokenize).score if predictions else 0.0
        # Sentence BLEU is smoothed (sacrebleu's default `exp`), so a short partial match is not 0.
        per_record = [
            sacrebleu.sentence_bleu(pred, [ref], tokenize=tokenize).score for pred, ref in zip(predictions, references)
        ]
        return {"bleu": corpus, "bleu_per_record": per_record, "tokenize": tokenize}
