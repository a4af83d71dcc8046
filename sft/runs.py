"""Pieces shared by the end-to-end commands (`demo`, `reproduce`): train from a recipe, time it,
and print results side by side."""

import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

METRIC_COLUMNS = (
    ("rouge_l", "ROUGE-L", "{:.4f}"),
    ("bleu", "BLEU", "{:.2f}"),
    ("exact_match", "exact match", "{:.4f}"),
    ("ended_at_eos", "ended at EOS", "{:.2f}"),
)


def train_recipe(recipe: str | Path, overrides: Sequence[str]) -> tuple[dict[str, Any], float]:
    """Train one recipe in this process; returns its metrics and the wall time in seconds."""
    from sft.config import parse_recipe
    from sft.train import train

    started = time.perf_counter()
    metrics = train(*parse_recipe([str(recipe), *overrides]))
    return metrics, time.perf_counter() - started


def results_table(rows: Mapping[str, Mapping[str, Any]]) -> str:
    """A markdown table, one row per model, with the headline metrics."""
    header = ["model", *(title for _, title, _ in METRIC_COLUMNS)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, metrics in rows.items():
        cells = [
            fmt.format(metrics[key]) if isinstance(metrics.get(key), (int, float)) else "–"
            for key, _, fmt in METRIC_COLUMNS
        ]
        lines.append("| " + " | ".join([name, *cells]) + " |")
    return "\n".join(lines)


def minutes(seconds: float) -> str:
    return f"{int(seconds // 60)} min {seconds % 60:.0f} s"
