"""Per-step time, loss and batch composition, recorded the same way for every training path; the time budget
that bounds a path which would run far longer than the others (bf16 autocast where it is emulated); and the
turns two paths can take, one step each, so that they are timed under the same conditions (bench/child.py)."""

import os
import signal
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
    settings: dict[str, Any] = field(default_factory=dict)  # what the trainer actually ran with
    # The bound: no new step starts once the next would end past `budget_s` seconds of steps, and a step still
    # running at `hard_s` is interrupted (`interrupted_at_s`). None: unbounded.
    planned_steps: int = 0
    budget_s: float | None = None
    hard_s: float | None = None
    stopped_early: bool = False
    interrupted_at_s: float | None = None
    # Taking turns with another path: the seconds each step waited for its turn are not the step's own time.
    turns: "Turns | None" = field(default=None, repr=False)
    waits: list[float] = field(default_factory=list)

    def begin(self) -> None:
        self.start = time.perf_counter()
        self.start_cpu = time.process_time()
        if self.hard_s is not None:
            signal.signal(signal.SIGALRM, _over_budget)
            signal.setitimer(signal.ITIMER_REAL, self.hard_s)

    def take_turn(self) -> None:
        """Before a step: wait until the other path hands the turn over (nothing to wait for without turns)."""
        if self.turns is None:
            return
        started = time.perf_counter()
        self.turns.wait()
        self.waits.append(time.perf_counter() - started)

    def hand_over_turn(self) -> None:
        if self.turns is not None:
            self.turns.hand_over()

    def step_done(self) -> None:
        self.ends.append(time.perf_counter() - self.start)
        self.cpu_ends.append(time.process_time() - self.start_cpu)

    def should_stop(self) -> bool:
        """After a step: whether the next one would end past the budget. The last step's time is the estimate, but
        after the first step half of it: the first pays one-off costs (page faults of the optimizer state, kernel
        set-up; a GPT-2-medium fp32 step took 15.6 s first, then 6.6 s, on an AVX2-capped EPYC), and a step that
        does overrun is interrupted at `hard_s`."""
        if self.budget_s is None or not self.ends or len(self.ends) >= self.planned_steps:
            return False
        estimate = self.ends[-1] - self.ends[-2] if len(self.ends) > 1 else self.ends[0] / 2
        self.stopped_early = self.ends[-1] + estimate > self.budget_s
        return self.stopped_early

    def interrupted(self) -> None:
        """The hard limit stopped a step part-way; what finished before it stands. Once every planned step has
        finished, it can only have stopped the shut-down after them (saving, freeing), which cut nothing short."""
        if self.planned_steps and len(self.ends) >= self.planned_steps:
            return
        self.interrupted_at_s = time.perf_counter() - self.start
        self.stopped_early = True

    def end(self) -> None:
        if self.hard_s is not None:
            signal.setitimer(signal.ITIMER_REAL, 0)

    def result(self) -> dict[str, Any]:
        turns, self.turns = self.turns, None  # not data, and not for asdict to copy
        data = asdict(self)
        self.turns = turns
        for internal in ("start", "start_cpu", "turns", "waits"):
            data.pop(internal)
        # A step interrupted part-way was logged as started, not as done.
        steps = len(self.ends)
        data["batch_lengths"] = self.batch_lengths[:steps]
        data["losses"] = self.losses[:steps]
        data["completed_steps"] = steps
        data["bounded"] = self.stopped_early
        waits = self.waits + [0.0] * (steps - len(self.waits))
        data["step_s"] = [b - a - w for a, b, w in zip([0.0, *self.ends], self.ends, waits)]
        data["turns_taken"] = bool(self.waits)
        data["step_cpu_s"] = [b - a for a, b in zip([0.0, *self.cpu_ends], self.cpu_ends)]
        return data


class OverBudget(BaseException):
    """Raised in the measured path when its hard time limit passes; a BaseException, so that no `except Exception`
    on the way swallows it."""


def _over_budget(signum: int, frame: Any) -> None:
    raise OverBudget


def record_lengths(inputs: dict[str, Any]) -> list[int]:
    """Real tokens per record in a collated batch: padded rows carry an attention mask, a padding-free
    row restarts its position ids at every record."""
    if inputs.get("attention_mask") is not None:
        return [int(n) for n in inputs["attention_mask"].sum(dim=1)]
    positions = inputs["position_ids"][0]
    starts = (positions == 0).nonzero().flatten().tolist() + [positions.numel()]
    return [b - a for a, b in zip(starts, starts[1:])]


class Turns:
    """One process's side of two taking turns through two pipes: `wait` blocks until the other hands the turn over,
    `hand_over` passes it. A process keeps the turn after its last step simply by not handing it over: the other
    gets it when this process exits and its end of the pipe closes, and from then on trains alone rather than wait
    for a turn that will not come. So the other's last step never overlaps this one's shut-down, and a process
    that fails leaves the other to finish."""

    def __init__(self, read_fd: int, write_fd: int) -> None:
        self.read_fd, self.write_fd = read_fd, write_fd
        self.alone = False  # the other process has ended

    def wait(self) -> None:
        if not self.alone and os.read(self.read_fd, 1) == b"":
            self.alone = True

    def hand_over(self) -> None:
        if self.alone:
            return
        try:
            os.write(self.write_fd, b"t")
        except BrokenPipeError:
            self.alone = True


def step_clock(log: StepLog) -> Any:
    """The Trainer callback that fills `log`: settings at the start, the end of every optimizer step, the budget's
    stop, and the turns where `log` takes them (the turn is kept after the last step)."""
    from transformers import TrainerCallback

    from bench.flops import matmul_params_by_training

    class Clock(TrainerCallback):
        def on_train_begin(self, args, state, control, model=None, optimizer=None, **kwargs):
            log.settings = {
                "bf16_autocast": bool(args.bf16),
                "gradient_checkpointing": bool(args.gradient_checkpointing),
                "padding_free": bool(getattr(args, "padding_free", False)),
                "optimizer": args.optim,
                "dtype": str(next(model.parameters()).dtype) if model is not None else None,
                "checkpointing_active": bool(getattr(model, "is_gradient_checkpointing", False)),
                "matmul_params": None if model is None else matmul_params_by_training(model),
            }
            log.begin()

        def on_step_begin(self, args, state, control, **kwargs):
            log.take_turn()

        def on_step_end(self, args, state, control, **kwargs):
            log.step_done()
            if log.should_stop():
                control.should_training_stop = True
            elif state.global_step < state.max_steps:
                log.hand_over_turn()

    return Clock()


def instrument_trainers(log: StepLog) -> StepLog:
    """Make every Trainer built from now on in this process fill `log`, and stop where its budget says.

    The hooks sit on `transformers.Trainer` itself (its `training_step`, which subclasses such as
    SFTTrainer call through `super()`, and its default callbacks), so they hold whichever trainer
    class the measured code builds; nothing about training changes.
    """
    from transformers import Trainer
    from transformers import trainer as trainer_module

    original = Trainer.training_step

    def training_step(self: Any, model: Any, inputs: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        log.settings["trainer"] = type(self).__name__
        log.batch_lengths.append(record_lengths(inputs))
        loss = original(self, model, inputs, *args, **kwargs)
        log.losses.append(float(loss))
        return loss

    Trainer.training_step = training_step
    trainer_module.DEFAULT_CALLBACKS.append(step_clock(log))
    return log
