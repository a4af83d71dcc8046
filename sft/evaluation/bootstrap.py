"""95% bootstrap intervals over records: for every figure of a score, and for every change of a comparison.

The records are resampled with replacement (`resamples` times, `resample_indices`), each figure is
recomputed on every resample, and the interval is the 2.5th and 97.5th percentiles of those values
(the percentile bootstrap). Mean figures (ROUGE-L, exact match, ended at EOS) are the mean of the
chosen records' values. BLEU is a corpus figure, not a mean: each resample's corpus BLEU is
recomputed from the sum of the chosen records' n-gram statistics, exactly as sacrebleu computes the
full set's (`bleu_statistics`, `bleu_from_statistics`).

A comparison is paired: both models are scored on the same resampled records, and the interval is
that of the change (model minus base) over those resamples, which is much narrower than two
separate intervals when the two models find the same records easy and hard.

The draw depends only on the number of records and the seed (its own numpy generator, no global
state), so the same data and seed give the same intervals on every run and machine. It does depend
on the order of the records: the same records in another order are resampled differently, and the
interval moves by about the resampling error.
"""

from __future__ import annotations  # numpy is imported where used: `sft eval --help` must stay light

import functools
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

from sft.evaluation.metrics import interval_key

RESAMPLES = 1000
SEED = 0
CONFIDENCE = 0.95
BLEU_KEY = "bleu"  # a corpus figure; every other is the mean of the records' values
# The figures that get an interval, in the order tables show them.
INTERVAL_KEYS = ("rouge_l", "bleu", "exact_match", "exact_match_normalized", "ended_at_eos")


@dataclass(frozen=True)
class BootstrapSettings:
    """How many resamples and the seed of their draw; the intervals are always 95%."""

    resamples: int = RESAMPLES
    seed: int = SEED

    def __post_init__(self) -> None:
        if self.resamples < 1:
            raise ValueError(f"resamples must be at least 1, not {self.resamples}")

    def record(self) -> dict[str, Any]:
        """As written to the metrics files, beside the intervals."""
        return {"resamples": self.resamples, "seed": self.seed, "confidence": CONFIDENCE}


def resample_indices(n: int, settings: BootstrapSettings = BootstrapSettings()) -> np.ndarray:
    """(resamples, n) record indices drawn with replacement: row r holds the records of resample r."""
    import numpy as np

    return np.random.default_rng(settings.seed).integers(0, n, size=(settings.resamples, n))


def percentile_interval(values: Sequence[float] | np.ndarray) -> list[float]:
    """The 2.5th and 97.5th percentiles (numpy's linear interpolation) of the resampled figures."""
    import numpy as np

    tail = (1 - CONFIDENCE) / 2 * 100
    low, high = np.percentile(np.asarray(values, dtype=float), [tail, 100 - tail])
    return [float(low), float(high)]


def mean_interval(values: Sequence[float], settings: BootstrapSettings = BootstrapSettings()) -> list[float] | None:
    """The interval of the mean of `values` (a judge's scores, say); None for no values."""
    import numpy as np

    if len(values) == 0:
        return None
    data = np.asarray(values, dtype=float)
    return percentile_interval(data[resample_indices(len(data), settings)].mean(axis=1))


@functools.cache
def _bleu(tokenize: str) -> Any:
    from sacrebleu.metrics.bleu import BLEU

    # sacrebleu.corpus_bleu's own defaults (exp smoothing, no lowercasing), as the bleu metric module uses.
    return BLEU(tokenize=tokenize)


def bleu_statistics(predictions: Sequence[str], references: Sequence[str], tokenize: str | None = None) -> np.ndarray:
    """Per record, sacrebleu's BLEU statistics: hypothesis length, reference length, then matching and
    total n-grams of each order (n, 10). Their sum over any set of records gives that set's corpus BLEU.

    The texts are put in NFC form and the tokenizer is `bleu_tokenizer`'s choice (unless given), as the
    bleu metric module (sft/evaluation/metrics/bleu/bleu.py) does, so the full set's BLEU is the metric's.
    """
    import numpy as np

    from sft.evaluation.metrics.text import bleu_tokenizer

    predictions = [unicodedata.normalize("NFC", str(text)) for text in predictions]
    references = [unicodedata.normalize("NFC", str(text)) for text in references]
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    if not predictions:
        return np.zeros((0, 10), dtype=np.int64)
    bleu = _bleu(tokenize or bleu_tokenizer(references))
    # `_extract_corpus_statistics` is private sacrebleu API (2.x; its own bootstrap and paired tests use it):
    # the per-sentence statistics that `corpus_score` sums, so a resample is a numpy sum over rows.
    stats = bleu._extract_corpus_statistics(predictions, [references])
    return np.asarray(stats, dtype=np.int64).reshape(len(predictions), -1)


def bleu_from_statistics(totals: np.ndarray) -> np.ndarray:
    """Corpus BLEU (0 to 100) of each row of summed `bleu_statistics`, by sacrebleu's own formula."""
    import numpy as np

    # `_compute_score_from_stats` is private sacrebleu API (2.x): BLEU from summed statistics. The formula
    # does not depend on the tokenizer, which only made the statistics. Python ints, as corpus_score passes.
    bleu = _bleu("13a")
    return np.array([bleu._compute_score_from_stats(row).score for row in np.atleast_2d(totals).tolist()])


def _mean_values(per_record: Sequence[Mapping[str, Any]], key: str) -> np.ndarray | None:
    """The per-record values of a mean figure, or None when some record lacks it."""
    import numpy as np

    if not per_record or not all(isinstance(r.get(key), (int, float)) for r in per_record):
        return None
    return np.array([float(r[key]) for r in per_record])


def figure_intervals(
    per_record: Sequence[Mapping[str, Any]],
    predictions: Sequence[str],
    references: Sequence[str],
    tokenize: str | None = None,
    settings: BootstrapSettings | None = None,
) -> dict[str, Any]:
    """`<figure>_ci: [low, high]` for each mean figure every per-record entry holds and for corpus BLEU
    (of `predictions` against `references`, tokenized with `tokenize`), then `bootstrap`: the settings.
    With no records, every interval is None."""
    settings = settings or BootstrapSettings()
    if len(per_record) != len(predictions):
        raise ValueError(f"{len(per_record)} per-record scores but {len(predictions)} predictions")
    if not per_record:
        keys = [key for key in INTERVAL_KEYS if key != "ended_at_eos"]
        return {**{interval_key(key): None for key in keys}, "bootstrap": settings.record()}
    indices = resample_indices(len(per_record), settings)
    intervals: dict[str, Any] = {}
    for key in INTERVAL_KEYS:
        if key == BLEU_KEY:
            stats = bleu_statistics(predictions, references, tokenize)[indices].sum(axis=1)
            intervals[interval_key(key)] = percentile_interval(bleu_from_statistics(stats))
        elif (values := _mean_values(per_record, key)) is not None:
            intervals[interval_key(key)] = percentile_interval(values[indices].mean(axis=1))
    return {**intervals, "bootstrap": settings.record()}


def paired_change_intervals(
    base_records: Sequence[Mapping[str, Any]],
    model_records: Sequence[Mapping[str, Any]],
    base_bleu_stats: np.ndarray | None,
    model_bleu_stats: np.ndarray | None,
    settings: BootstrapSettings | None = None,
) -> dict[str, list[float]]:
    """Per figure, the interval of model minus base over the same resampled records for both (paired).

    For BLEU both corpus BLEUs are recomputed on each resample and subtracted."""
    n = len(base_records)
    if len(model_records) != n:
        raise ValueError(f"{n} base records but {len(model_records)} model records")
    if not n:
        return {}
    indices = resample_indices(n, settings or BootstrapSettings())
    changes: dict[str, list[float]] = {}
    for key in INTERVAL_KEYS:
        if key == BLEU_KEY:
            if base_bleu_stats is not None and model_bleu_stats is not None:
                base = bleu_from_statistics(base_bleu_stats[indices].sum(axis=1))
                model = bleu_from_statistics(model_bleu_stats[indices].sum(axis=1))
                changes[key] = percentile_interval(model - base)
            continue
        base_values, model_values = _mean_values(base_records, key), _mean_values(model_records, key)
        if base_values is not None and model_values is not None:
            changes[key] = percentile_interval((model_values - base_values)[indices].mean(axis=1))
    return changes
