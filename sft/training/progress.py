"""A training progress bar that shows loss, tokens per second and the time left."""

import time
from typing import Any

from transformers import TrainerCallback


class TrainingProgress(TrainerCallback):
    """Replaces the Trainer's bar, whose postfix has neither throughput nor the current loss."""

    def __init__(self) -> None:
        self.bar: Any = None
        self.started = 0.0
        self.tokens_at_start = 0
        self.last_loss: float | None = None
        self.preference: dict[str, str] = {}  # stage dpo: the last reward margin and preference accuracy

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            from tqdm.auto import tqdm

            self.bar = tqdm(
                total=state.max_steps, initial=state.global_step, desc="train", unit="step", dynamic_ncols=True
            )
        self.started = time.perf_counter()
        self.tokens_at_start = state.num_input_tokens_seen

    def on_step_end(self, args, state, control, **kwargs):
        if self.bar is None:
            return
        self.bar.update(state.global_step - self.bar.n)
        elapsed = time.perf_counter() - self.started
        postfix = {}
        if self.last_loss is not None:
            postfix["loss"] = f"{self.last_loss:.3f}"
        postfix.update(self.preference)
        if elapsed > 0 and state.num_input_tokens_seen:
            postfix["tok/s"] = f"{(state.num_input_tokens_seen - self.tokens_at_start) / elapsed:.0f}"
        self.bar.set_postfix(postfix, refresh=False)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.last_loss = float(logs["loss"])
            self.preference = preference_postfix(logs)
        if self.bar is not None and logs and "eval_loss" in logs:
            self.bar.write(validation_line(logs))

    def on_train_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def preference_postfix(logs: dict[str, Any]) -> dict[str, str]:
    """A DPO run's reward margin and preference accuracy for the bar (`margin`, `acc`); empty for SFT."""
    from sft.preference import PREFERENCE_ACCURACY, REWARD_MARGIN, logged

    shown = {}
    for name, figure in (("margin", REWARD_MARGIN), ("acc", PREFERENCE_ACCURACY)):
        value = logged(logs, figure)
        if value is not None:
            shown[name] = figure.show(value)
    return shown


def validation_line(logs: dict[str, Any]) -> str:
    """`epoch 0.50: validation loss 2.3456`, and the generation metrics where generation_eval added them, or
    the reward margin and preference accuracy of a DPO run."""
    from sft.evaluation.metrics import HEADLINE
    from sft.preference import DPO_FIGURES, logged

    line = f"epoch {logs.get('epoch', 0):.2f}: validation loss {logs['eval_loss']:.4f}"
    figures = [
        f"{figure.label} {figure.show(logs[f'eval_{figure.key}'])}"
        for figure in HEADLINE
        if f"eval_{figure.key}" in logs
    ]
    figures += [
        f"{figure.label} {figure.show(value)}"
        for figure in DPO_FIGURES
        if (value := logged(logs, figure, evaluation=True)) is not None
    ]
    if figures:
        line += ", " + ", ".join(figures)
        if isinstance(logs.get("eval_runtime"), (int, float)):
            line += f" ({logs['eval_runtime']:.1f} s)"
    return line
