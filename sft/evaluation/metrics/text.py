"""Text handling shared by the metric modules: ROUGE tokens for every script, BLEU tokenizer choice, normalisation.

rouge-score's tokenizer lower-cases the text and keeps only runs of [a-z0-9], so a Russian, Greek,
Arabic, Hindi or Thai response (and the accents of a French or Vietnamese one) has no tokens at
all, and an identical response scores ROUGE-L 0. No installed library tokenizes every script the
way ROUGE needs while staying exactly rouge-score on English, so `ScriptAwareTokenizer` is written
here with `unicodedata`:

- ASCII words get exactly rouge-score's tokens (lower case, Porter stemming of words longer than
  three characters), so English scores are rouge-score's own.
- Scripts written without spaces between words (Han, kana, Hangul, Thai, Lao, Khmer, Myanmar,
  Tibetan and a few more) give one token per character, with the combining marks that follow it
  (a Thai vowel mark or tone mark stays on its consonant).
- Every other run of letters, digits and combining marks (Unicode categories L*, N*, M*) is one
  word token, case-folded and not stemmed (the Porter stemmer is for English); a run that
  case-folds to ASCII (STRASSE, Straße: strasse) is an ASCII word like the others.
- Punctuation, symbols, emoji and spaces separate tokens and are not tokens.

Punctuation and symbols are set aside first, then the text is put in Unicode NFKC form, so the same
words score the same whichever way they were encoded (composed or decomposed accents, full-width or
half-width forms) while a symbol such as ™ or ㎏ stays a symbol rather than becoming letters.
"""

import bisect
import functools
import re
import unicodedata
from collections.abc import Sequence

from rouge_score import tokenize as rouge_tokenize
from rouge_score.tokenizers import Tokenizer

# Code point ranges (first, last) of scripts written without spaces between words (for Hangul,
# with particles glued to words): each character is a token of its own.
_HAN = (
    (0x2E80, 0x2FDF),  # CJK radicals, Kangxi radicals
    (0x3005, 0x3005),  # 々 iteration mark
    (0x3007, 0x3007),  # 〇
    (0x3021, 0x3029),  # Hangzhou numerals
    (0x3400, 0x4DBF),  # extension A
    (0x4E00, 0x9FFF),  # unified ideographs
    (0xF900, 0xFAFF),  # compatibility ideographs
    (0x20000, 0x323AF),  # extensions B to H, compatibility supplement
)
_KANA = (
    (0x3040, 0x30FF),  # hiragana, katakana
    (0x31F0, 0x31FF),  # katakana phonetic extensions
    (0xFF66, 0xFF9F),  # half-width katakana
    (0x1AFF0, 0x1B16F),  # kana extended and supplement (hentaigana)
)
_HANGUL = (
    (0x1100, 0x11FF),  # jamo
    (0x3130, 0x318F),  # compatibility jamo
    (0xA960, 0xA97F),  # jamo extended A
    (0xAC00, 0xD7FF),  # syllables, jamo extended B
)
_SOUTHEAST_ASIAN = (
    (0x0E00, 0x0E7F),  # Thai
    (0x0E80, 0x0EFF),  # Lao
    (0x0F00, 0x0FFF),  # Tibetan
    (0x1000, 0x109F),  # Myanmar
    (0x1780, 0x17FF),  # Khmer
    (0x1950, 0x197F),  # Tai Le
    (0x1980, 0x19DF),  # New Tai Lue
    (0x19E0, 0x19FF),  # Khmer symbols
    (0x1A20, 0x1AAF),  # Tai Tham
    (0x1B00, 0x1B7F),  # Balinese
    (0xA980, 0xA9DF),  # Javanese
    (0xA9E0, 0xA9FF),  # Myanmar extended B
    (0xAA60, 0xAA7F),  # Myanmar extended A
    (0xAA80, 0xAADF),  # Tai Viet
)
_OTHER_UNSPACED = (
    (0x3100, 0x312F),  # Bopomofo
    (0x31A0, 0x31BF),  # Bopomofo extended
    (0xA000, 0xA4CF),  # Yi
)
_UNSPACED = sorted(_HAN + _KANA + _HANGUL + _SOUTHEAST_ASIAN + _OTHER_UNSPACED)
_UNSPACED_FIRST = [first for first, _ in _UNSPACED]


def _ranges_pattern(ranges: Sequence[tuple[int, int]]) -> re.Pattern[str]:
    return re.compile("[" + "".join(f"{re.escape(chr(a))}-{re.escape(chr(b))}" for a, b in ranges) + "]")


# For choosing BLEU's tokenizer: kana, Hangul and the other unspaced scripts; Han.
_SPACELESS = _ranges_pattern(_KANA + _HANGUL + _SOUTHEAST_ASIAN + _OTHER_UNSPACED)
_HAN_CHAR = _ranges_pattern(_HAN)


# Invisible stacking signs: the consonant after one is written below the one before, in the same cluster.
_STACKERS = frozenset("\u1039\u17d2\u1a60")  # Myanmar virama, Khmer coeng, Tai Tham sakot
# Zero-width non-joiner and joiner: part of a word's spelling (Persian, Indic), kept inside words.
_JOINERS = frozenset("\u200c\u200d")
# Zero-width space: the word separator of Thai, Khmer, Myanmar text that marks one.
_ZERO_WIDTH_SPACE = "\u200b"

# What each character is to the tokenizer.
_WORD, _UNSPACED_CHAR, _MARK, _IGNORED, _SEPARATOR = "word", "unspaced", "mark", "ignored", "separator"


def _is_unspaced(char: str) -> bool:
    """Whether `char` belongs to a script written without spaces between words (ROUGE: one token each)."""
    code = ord(char)
    i = bisect.bisect_right(_UNSPACED_FIRST, code) - 1
    return i >= 0 and code <= _UNSPACED[i][1]


@functools.cache
def _char_kind(char: str) -> str:
    category = unicodedata.category(char)
    if category[0] in "LN":
        return _UNSPACED_CHAR if _is_unspaced(char) else _WORD
    if category[0] == "M" or char in _JOINERS:
        return _MARK
    if category == "Cf" and char != _ZERO_WIDTH_SPACE:
        return _IGNORED  # soft hyphen, direction marks, byte order mark: invisible, not a word break
    return _SEPARATOR  # punctuation, symbols (emoji included), spaces, controls


@functools.cache
def _space_if_separator(char: str) -> str:
    return " " if _char_kind(char) == _SEPARATOR else char


class ScriptAwareTokenizer(Tokenizer):
    """ROUGE tokens for text in any script; on ASCII text exactly rouge-score's own tokens.

    rouge-score's tokenizer keeps only [a-z0-9] runs and so gives no tokens for most of the world's
    scripts. This one (see the module docstring) gives ASCII words rouge-score's tokens (lower case,
    Porter stemming of words longer than three characters), one token per character cluster in
    scripts written without spaces (Han, kana, Hangul, Thai, Lao, Khmer, Myanmar, Tibetan, ...),
    and one case-folded, unstemmed token per run of other letters, digits and combining marks.
    """

    def __init__(self, use_stemmer: bool = True):
        from nltk.stem import porter

        self._stemmer = porter.PorterStemmer() if use_stemmer else None

    def tokenize(self, text: str) -> list[str]:
        tokens: list[str] = []
        current: list[str] = []  # characters of the token being read
        current_kind: str | None = None  # _WORD or _UNSPACED_CHAR while a token is open

        def close() -> None:
            nonlocal current_kind
            if current:
                self._add(tokens, "".join(current), word=current_kind == _WORD)
                current.clear()
            current_kind = None

        for char in unicodedata.normalize("NFKC", "".join(map(_space_if_separator, text))):
            kind = _char_kind(char)
            if kind == _MARK:
                if current_kind is not None:  # a mark with no letter before it is dropped
                    current.append(char)
            elif kind == _WORD:
                if current_kind == _UNSPACED_CHAR:
                    close()
                current.append(char)
                current_kind = _WORD
            elif kind == _UNSPACED_CHAR:
                if not (current_kind == _UNSPACED_CHAR and current[-1] in _STACKERS):
                    close()
                current.append(char)
                current_kind = _UNSPACED_CHAR
            elif kind == _SEPARATOR:
                close()
        close()
        return tokens

    def _add(self, tokens: list[str], token: str, word: bool) -> None:
        token = token.strip("".join(_JOINERS)).casefold()
        if not token:
            return
        if word and token.isascii():
            # As rouge_score.tokenize.tokenize: stem words longer than 3 characters, keep [a-z0-9]+ tokens.
            if self._stemmer and len(token) > 3:
                token = self._stemmer.stem(token)
            if not rouge_tokenize.VALID_TOKEN_RE.match(token):
                return
        tokens.append(token)


def bleu_tokenizer(references: Sequence[str]) -> str:
    """The sacrebleu tokenizer for a corpus: `char` or `zh` for scripts without word spaces, else `13a`.

    `13a` splits on spaces and ASCII punctuation, which suits every script written with spaces
    (Latin, Cyrillic, Greek, Arabic, Hebrew, Indic, Georgian, Armenian, Ge'ez, ...) but leaves a
    Chinese, Japanese or Thai sentence as one or a few tokens. `zh` puts each Han character apart
    and tokenizes the rest like `13a`, so it is safe for a mostly English corpus with some
    Chinese. It leaves kana, Hangul and Southeast Asian runs whole, though, and the word
    segmenters (`ja-mecab`, `ko-mecab`, ...) are not installed, so a corpus whose references are
    mostly Japanese, Korean, Thai, Lao, Khmer, Myanmar or Tibetan is scored per character
    (`char`), the same unit ROUGE-L uses for them.
    """
    spaceless = sum(1 for ref in references if _SPACELESS.search(unicodedata.normalize("NFKC", ref)))
    if spaceless * 2 > len(references):
        return "char"
    if any(_HAN_CHAR.search(ref) for ref in references):
        return "zh"
    return "13a"


def normalize(text: str) -> str:
    """NFKC form, case folded, whitespace runs collapsed to one space, trailing punctuation removed."""
    text = " ".join(unicodedata.normalize("NFKC", text).casefold().split())
    while text and unicodedata.category(text[-1]).startswith("P"):
        text = text[:-1].rstrip()
    return text
