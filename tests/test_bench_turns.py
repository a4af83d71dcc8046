"""Two benchmark paths taking turns step by step (bench/child.py, bench/instrument.py): never both at once, each
step timed without the other's, and neither left waiting when the other ends."""

import os
import time
from types import SimpleNamespace

import pytest

from bench.child import PathFailed, run_children_in_turns
from bench.instrument import StepLog, Turns, step_clock


def take_turns(steps: int, quit_after: tuple[int, int]) -> list[dict]:
    specs = ({"steps": steps, "quit_after": quit_after[0]}, {"steps": steps, "quit_after": quit_after[1]})
    results = run_children_in_turns("tests.turn_stepper", specs, timeout_s=120)
    assert not any(isinstance(result, PathFailed) for result in results), results
    return results


def test_the_two_never_step_at_once_and_each_step_is_timed_without_the_other() -> None:
    first, second = take_turns(6, (6, 6))
    spans = sorted([(*span, "first") for span in first["spans"]] + [(*span, "second") for span in second["spans"]])
    assert [who for _, _, who in spans] == ["first", "second"] * 6
    for (_, end, _), (start, _, _) in zip(spans, spans[1:]):
        assert end <= start  # one step ends before the next, of either process, begins
    for result in (first, second):
        assert result["turns_taken"] and result["completed_steps"] == 6
        # Each step's time holds its own 20 ms and leaves out its wait, which held the other's 20 ms step (less
        # whatever the scheduler kept this process from waiting right after it handed the turn over).
        walls = [b - a for a, b in zip(result["ends"], result["ends"][1:])]
        assert all(seconds >= 0.019 for seconds in result["step_s"]), result["step_s"]
        assert sum(walls) - sum(result["step_s"][1:]) >= 0.5 * 0.02 * len(walls), (walls, result["step_s"])


def test_a_process_that_ends_early_leaves_the_other_to_go_on_alone() -> None:
    first, second = take_turns(6, (2, 6))
    assert first["completed_steps"] == 2 and second["completed_steps"] == 6
    assert max(end for _, end in first["spans"]) <= min(start for start, _ in second["spans"][2:])


def test_the_trainer_callback_takes_turns_and_keeps_the_last() -> None:
    mine_read, mine_write = os.pipe()
    theirs_read, theirs_write = os.pipe()
    log = StepLog(planned_steps=2)
    log.turns = Turns(mine_read, theirs_write)
    clock = step_clock(log)
    control = SimpleNamespace(should_training_stop=False)
    try:
        log.begin()
        for step in (1, 2):
            os.write(mine_write, b"t")  # the turn arrives
            state = SimpleNamespace(global_step=step, max_steps=2)
            clock.on_step_begin(None, state, control)
            time.sleep(0.01)
            clock.on_step_end(None, state, control)
            os.set_blocking(theirs_read, False)
            if step == 1:
                assert os.read(theirs_read, 1) == b"t"  # handed over
            else:
                with pytest.raises(BlockingIOError):  # kept after the last step
                    os.read(theirs_read, 1)
        assert log.result()["completed_steps"] == 2 and len(log.waits) == 2
    finally:
        for fd in (mine_read, mine_write, theirs_read, theirs_write):
            os.close(fd)
