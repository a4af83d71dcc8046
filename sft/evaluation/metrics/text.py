"""Text handling shared by the metric modules: CJK-aware ROUGE tokens, BLEU tokenizer choice, normalisation."""

import re
import unicodedata
from collections.abc import Sequence

from rouge_score import tokenize as rouge_tokenize
from rouge_score.tokenizers import Tokenizer

# Scripts written without spaces between words (or, for Hangul, with particles glued to words).
_HAN = "\u2e80-\u2fdf\u3005\u3007\u3021-\u3029\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f"
_KANA = "\u3040-\u30ff\u31f0-\u31ff\uff66-\uff9f"
_HANGUL = "\u1100-\u11ff\u3130-\u318f\uac00-\ud7af"
CJK_CHAR = re.compile(f"([{_HAN}{_KANA}{_HANGUL}])")
KANA_OR_HANGUL = re.compile(f"[{_KANA}{_HANGUL}]")


class CJKTokenizer(Tokenizer):
    """rouge-score's tokenizer, except that every CJK character is a token of its own.

    rouge-score keeps only [a-z0-9] runs, so Chinese, Japanese and Korean text would score as
    empty. Text between CJK characters goes through rouge-score's own tokenizer (lower case,
    Porter stemming), so scores on text without CJK are exactly rouge-score's.
    """

    def __init__(self, use_stemmer: bool = True):
        from nltk.stem import porter

        self._stemmer = porter.PorterStemmer() if use_stemmer else None

    def tokenize(self, text: str) -> list[str]:
        tokens: list[str] = []
        for piece in CJK_CHAR.split(text):
            if CJK_CHAR.fullmatch(piece):
                tokens.append(piece)
            elif piece:
                tokens.extend(rouge_tokenize.tokenize(piece, self._stemmer))
        return tokens


def bleu_tokenizer(references: Sequence[str]) -> str:
    """The sacrebleu tokenizer for a corpus: `13a`, or `zh`/`char` where references are CJK.

    `13a` splits on spaces and punctuation, which leaves a CJK sentence as one token. `zh` puts
    each Han character apart and tokenizes the rest like `13a`, so it is safe for a mostly
    English corpus with some Chinese. It leaves kana and Hangul runs whole, though, and the
    `ja-mecab`/`ko-mecab` word segmenters are not installed, so a corpus that is mostly
    Japanese or Korean is scored per character (`char`), the same unit ROUGE-L uses for them.
    """
    with_cjk = [ref for ref in references if CJK_CHAR.search(ref)]
    if not with_cjk:
        return "13a"
    japanese_or_korean = sum(1 for ref in with_cjk if KANA_OR_HANGUL.search(ref))
    return "char" if japanese_or_korean * 2 > len(references) else "zh"


def normalize(text: str) -> str:
    """Lower case, whitespace runs collapsed to one space, trailing punctuation removed."""
    text = " ".join(text.lower().split())
    while text and unicodedata.category(text[-1]).startswith("P"):
        text = text[:-1].rstrip()
    return text
