"""Response metrics as `evaluate` modules shipped in this package and loaded from their local path.

`evaluate.load("rouge")` fetches a script from the Hub; these modules never leave the machine.
`evaluate` copies a loaded script into its modules cache, which is kept in sft's cache.
"""

import functools
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

METRICS_DIR = Path(__file__).resolve().parent
# The `evaluate` modules in this folder.
METRIC_NAMES = ("rouge_l", "bleu", "exact_match")


def interval_key(key: str) -> str:
    """The key of a figure's 95% bootstrap interval in the metrics files: `rouge_l_ci` for `rouge_l`."""
    return f"{key}_ci"


@dataclass(frozen=True)
class Figure:
    """One reported figure: its key in metrics.json, its label in every table, and its format."""

    key: str
    label: str
    format: str

    @property
    def interval_key(self) -> str:
        return interval_key(self.key)

    def show(self, value: Any) -> str:
        return self.format.format(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else "–"

    def show_change(self, delta: float) -> str:
        text = self.show(delta + 0.0 if isinstance(delta, (int, float)) else delta)  # + 0.0: -0.0 shows as +0
        return text if text.startswith(("-", "–")) else "+" + text

    def show_interval(self, interval: Any, signed: bool = False) -> str:
        """`[low, high]` in the figure's format, signed as changes when `signed`; "–" when there is none."""
        if not isinstance(interval, (list, tuple)) or len(interval) != 2:
            return "–"
        show = self.show_change if signed else self.show
        return f"[{show(interval[0])}, {show(interval[1])}]"


ROUGE_L = Figure("rouge_l", "ROUGE-L", "{:.4f}")
BLEU = Figure("bleu", "BLEU", "{:.2f}")
EXACT_MATCH = Figure("exact_match", "exact match", "{:.4f}")
EXACT_MATCH_NORMALIZED = Figure("exact_match_normalized", "exact match, normalised", "{:.4f}")
ENDED_AT_EOS = Figure("ended_at_eos", "ended at EOS", "{:.2f}")
# Every figure an evaluation reports, in the order tables show them; HEADLINE is the results table's.
FIGURES = (ROUGE_L, BLEU, EXACT_MATCH, EXACT_MATCH_NORMALIZED, ENDED_AT_EOS)
HEADLINE = (ROUGE_L, BLEU, EXACT_MATCH, ENDED_AT_EOS)


def metric_path(name: str) -> Path:
    return METRICS_DIR / name / f"{name}.py"


@functools.cache
def load_metric(name: str) -> Any:
    """The `evaluate.Metric` for `name` (one of METRIC_NAMES), loaded once per process."""
    if name not in METRIC_NAMES:
        raise ValueError(f"unknown metric {name!r}; choose from {', '.join(METRIC_NAMES)}")
    import evaluate

    from sft.paths import cache_dir

    root = cache_dir() / "evaluate"
    if "HF_MODULES_CACHE" not in os.environ:  # a user's own setting wins
        evaluate.config.HF_MODULES_CACHE = root / "modules"
    evaluate.config.HF_EVALUATE_OFFLINE = True
    evaluate.utils.logging.set_verbosity_error()
    # keep_in_memory: predictions are not spilled to Arrow files between add() and compute().
    return evaluate.load(str(metric_path(name)), keep_in_memory=True, cache_dir=str(root / "data"))


def score_responses(predictions: Sequence[str], references: Sequence[str]) -> dict[str, Any]:
    """ROUGE-L F1 (mean), corpus BLEU, exact match (strict and normalised) and per-record scores."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    predictions = [str(p) for p in predictions]
    references = [str(r) for r in references]
    n = len(predictions)
    if n == 0:
        return {
            "rouge_l": 0.0,
            "bleu": 0.0,
            "exact_match": 0.0,
            "exact_match_normalized": 0.0,
            "n": 0,
            "bleu_tokenize": None,
            "per_record": [],
        }
    rouge = load_metric("rouge_l").compute(predictions=predictions, references=references)
    bleu = load_metric("bleu").compute(predictions=predictions, references=references)
    exact = load_metric("exact_match").compute(predictions=predictions, references=references)
    per_record = [
        {
            "index": i,
            "rouge_l": rouge["rouge_l_per_record"][i],
            "bleu": bleu["bleu_per_record"][i],
            "exact_match": exact["exact_match_per_record"][i],
            "exact_match_normalized": exact["exact_match_normalized_per_record"][i],
        }
        for i in range(n)
    ]
    return {
        "rouge_l": rouge["rouge_l"],
        "bleu": bleu["bleu"],
        "exact_match": exact["exact_match"],
        "exact_match_normalized": exact["exact_match_normalized"],
        "n": n,
        "bleu_tokenize": bleu["tokenize"],
        "per_record": per_record,
    }
