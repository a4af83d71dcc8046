"""Per-step time, loss and batch composition, recorded the same way for every training path."""

import time
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class StepLog:
    """Wall-clock time at the end of each optimizer step, measured from `start`."""

    start: float = 0.0
    start_cpu: float = 0.0
    ends: list[float] = field(default_factory=list)
    cpu_ends: list[float] = field(default_factory=list)  # CPU seconds of all threads: contention shows as cores used
    losses: list[float] = field(default_factory=list)
    batch_lengths: list[list[int]] = field(default_factory=list)  # real tokens of each record, per step

    def begin(self) -> None:
        self.start = time.perf_counter()
        self.start_cpu = time.process_time()

    def step_done(self) -> None:
        self.ends.append(time.perf_counter() - self.start)
        self.cpu_ends.append(time.process_time() - self.start_cpu)

    def result(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("start")
        data.pop("start_cpu")
        data["step_s"] = [b - a for a, b in zip([0.0, *self.ends], self.ends)]
        data["step_cpu_s"] = [b - a for a, b in zip([0.0, *self.cpu_ends], self.cpu_ends)]
        return data


def record_lengths(inputs: dict[str, Any]) -> list[int]:
    """Real tokens per record in a collated batch: padded rows carry an attention mask, a padding-free
    row restarts its position ids at every record."""
    if inputs.get("attention_mask") is not None:
        return [int(n) for n in inputs["attention_mask"].sum(dim=1)]
    positions = inputs["position_ids"][0]
    starts = (positions == 0).nonzero().flatten().tolist() + [positions.numel()]
    return [b - a for a, b in zip(starts, starts[1:])]


# The most recent instrumented trainer, for a caller that gets no handle on it (sft.train.train).
LAST: list[StepLog] = []


def instrumented(trainer_class: type) -> type:
    """A subclass of a Trainer class that fills a StepLog; nothing else about training changes."""
    from transformers import TrainerCallback

    class Clock(TrainerCallback):
        def __init__(self, log: StepLog) -> None:
            self.log = log

        def on_train_begin(self, args, state, control, **kwargs):
            self.log.begin()

        def on_step_end(self, args, state, control, **kwargs):
            self.log.step_done()

    class Instrumented(trainer_class):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.step_log = StepLog()
            LAST.append(self.step_log)
            self.add_callback(Clock(self.step_log))

        def training_step(self, model: Any, inputs: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
            self.step_log.batch_lengths.append(record_lengths(inputs))
            loss = super().training_step(model, inputs, *args, **kwargs)
            self.step_log.losses.append(float(loss))
            return loss

    Instrumented.__name__ = trainer_class.__name__
    return Instrumented
