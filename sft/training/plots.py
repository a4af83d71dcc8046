"""Loss curves: training and validation loss against epochs, tokens seen on a second axis."""

from pathlib import Path
from typing import Any

from sft.paths import LOSS_PLOTS


def plot_losses(log_history: list[dict[str, Any]], output_dir: str | Path) -> list[Path]:
    """Write loss.png and loss.pdf from the trainer's log history; returns the paths written."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    train = [(e["epoch"], e["loss"]) for e in log_history if "loss" in e and "epoch" in e]
    valid = [(e["epoch"], e["eval_loss"]) for e in log_history if "eval_loss" in e and "epoch" in e]
    tokens = [
        (e["epoch"], e["num_input_tokens_seen"]) for e in log_history if "num_input_tokens_seen" in e and "epoch" in e
    ]
    figure, axis = plt.subplots(figsize=(6, 3.5))
    if train:
        axis.plot(*zip(*train), label="Training loss")
    if valid:
        axis.plot(*zip(*valid), linestyle="-.", marker="o", label="Validation loss")
    axis.set_xlabel("Epochs")
    axis.set_ylabel("Loss")
    if train or valid:  # a run shorter than one logging interval has nothing to label
        axis.legend(loc="upper right")
    if len(tokens) >= 2:
        # Tokens grow linearly enough with epochs to map one axis onto the other.
        (e0, t0), (e1, t1) = tokens[0], tokens[-1]
        if e1 > e0:
            rate = (t1 - t0) / (e1 - e0)
            top = axis.secondary_xaxis(
                "top", functions=(lambda e: t0 + (e - e0) * rate, lambda t: e0 + (t - t0) / rate)
            )
            top.set_xlabel("Tokens seen")
    figure.tight_layout()
    output_dir = Path(output_dir)
    paths = []
    for name in LOSS_PLOTS:
        path = output_dir / name
        tmp = output_dir / f".{path.stem}.tmp{path.suffix}"
        figure.savefig(tmp, dpi=150)
        tmp.replace(path)
        paths.append(path)
    plt.close(figure)
    return paths
