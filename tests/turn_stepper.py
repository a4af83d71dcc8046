"""A child for tests/test_bench_turns.py: `spec["steps"]` steps of about 20 ms of busy work, each in its turn
(bench.instrument.Turns) and timed as bench.instrument.StepLog times a training step; it exits after
`spec["quit_after"]` steps, as a path that fails would."""

import time
from typing import Any

from bench.child import child_main
from bench.instrument import StepLog, Turns


def run(spec: dict[str, Any]) -> dict[str, Any]:
    log = StepLog(planned_steps=spec["steps"])
    log.turns = Turns(*spec["turn_fds"])
    spans = []
    log.begin()
    for step in range(1, min(spec["steps"], spec.get("quit_after", spec["steps"])) + 1):
        log.take_turn()
        start = time.monotonic()  # system-wide, so the two processes' spans can be set side by side
        while time.monotonic() - start < 0.02:
            pass
        spans.append((start, time.monotonic()))
        log.step_done()
        if step < spec["steps"]:
            log.hand_over_turn()
    return {"spans": spans, **log.result()}


if __name__ == "__main__":
    child_main(run)
