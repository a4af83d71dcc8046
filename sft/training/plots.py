"""Loss curves: training and validation loss against epochs, tokens seen on a second axis; below them,
where the run had generation_eval, the validation generation metrics against epochs, and for a DPO run the
reward margin and preference accuracy on training and validation pairs."""

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
    generated = generation_series(log_history) or preference_series(log_history)
    if generated:
        figure, (axis, lower) = plt.subplots(2, 1, figsize=(6, 6), sharex=True, height_ratios=(1, 1))
    else:
        figure, axis = plt.subplots(figsize=(6, 3.5))
    if train:
        axis.plot(*zip(*train), label="Training loss")
    if valid:
        axis.plot(*zip(*valid), linestyle="-.", marker="o", label="Validation loss")
    axis.set_xlabel("Epochs")
    axis.set_ylabel("Loss")
    if generated:
        axis.set_xlabel("")
        axis.tick_params(labelbottom=True)
        for label, points in generated.items():
            lower.plot(*zip(*points), marker="o", label=label)
        lower.set_xlabel("Epochs")
        preference = any(label.startswith(("Training", "Validation")) for label in generated)
        lower.set_ylabel("Preference pairs" if preference else "Generated responses")
        if not preference:  # a reward margin has no upper bound
            lower.set_ylim(-0.02, 1.02)
        lower.legend(loc="best", fontsize="small")
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


def generation_series(log_history: list[dict[str, Any]]) -> dict[str, list[tuple[float, float]]]:
    """(epoch, value) per generation metric in the log, labelled as tables label them; BLEU, a 0-100
    score, divided by 100 so that every series shares the 0-1 axis. Empty without generation_eval."""
    from sft.evaluation.metrics import BLEU, HEADLINE

    series = {}
    for figure in HEADLINE:
        key = f"eval_{figure.key}"
        scale = 100.0 if figure is BLEU else 1.0
        points = [(e["epoch"], e[key] / scale) for e in log_history if key in e and "epoch" in e]
        if points:
            series[f"{figure.label} / 100" if scale != 1.0 else figure.label] = points
    return series


def preference_series(log_history: list[dict[str, Any]]) -> dict[str, list[tuple[float, float]]]:
    """(epoch, value) of a DPO run's reward margin and preference accuracy, on training pairs (as logged) and
    validation pairs (at each evaluation). Empty for an SFT run."""
    from sft.preference import DPO_FIGURES, logged

    series = {}
    for figure in DPO_FIGURES:
        for split, evaluation in (("Training", False), ("Validation", True)):
            points = [
                (entry["epoch"], value)
                for entry in log_history
                if "epoch" in entry and (value := logged(entry, figure, evaluation)) is not None
            ]
            if points:
                series[f"{split} {figure.label}"] = points
    return series
