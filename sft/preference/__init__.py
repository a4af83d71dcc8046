"""Preference tuning after SFT: pairs built from the fine-tune's own answers (`sft prefs build`), and DPO
training on them (`stage: dpo`, TRL's DPOTrainer).

The figures a DPO run reports are defined here, once: their keys in metrics.json, their labels, and the
names TRL's DPOTrainer logs them under. Light on purpose: the progress bar and the plot import it.
"""

from sft.evaluation.metrics import Figure

REWARD_MARGIN = Figure("reward_margin", "reward margin", "{:.3f}")
PREFERENCE_ACCURACY = Figure("preference_accuracy", "preference accuracy", "{:.2f}")
DPO_FIGURES = (REWARD_MARGIN, PREFERENCE_ACCURACY)
# TRL's log keys for them: the mean over a logging interval of beta * (policy - reference) log-probability
# ratio, chosen minus rejected; and the share of pairs where that margin is above zero.
TRL_LOG_KEYS = {REWARD_MARGIN.key: "rewards/margins", PREFERENCE_ACCURACY.key: "rewards/accuracies"}


def logged(logs: dict, figure: Figure, evaluation: bool = False) -> float | None:
    """A figure from one Trainer log entry (training, or `eval_` prefixed), or None where it has none."""
    key = TRL_LOG_KEYS[figure.key]
    value = logs.get(f"eval_{key}" if evaluation else key)
    return float(value) if isinstance(value, (int, float)) else None
