"""Run one benchmark path in its own process, so that its peak memory is its own.

The child is `python -m MODULE --spec JSON --out FILE`; it writes its result as JSON to FILE. The parent
waits with `os.wait4`, whose resource usage covers that child alone (`RUSAGE_CHILDREN` would give the
largest of all children so far). Two children can also run side by side, taking turns step by step
(`run_children_in_turns`): a ratio of two paths is then free of the machine's drift between two runs.
"""

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.workload import REPO


class PathFailed(RuntimeError):
    pass


def run_child(module: str, spec: dict[str, Any], timeout_s: float | None = None) -> dict[str, Any]:
    """The child's JSON result plus `peak_rss_gb` (its ru_maxrss) and `process_wall_s` (process start to exit)."""
    with tempfile.TemporaryDirectory(prefix="sft-bench-") as tmp:
        child = Child(module, spec, Path(tmp))
        return child.finish(None if timeout_s is None else child.started + timeout_s)


def run_children_in_turns(
    module: str, specs: tuple[dict[str, Any], dict[str, Any]], timeout_s: float | None = None
) -> list[dict[str, Any] | PathFailed]:
    """Two children that run side by side and take turns, one optimizer step each (bench.instrument.Turns): only
    one computes at any moment, so that the machine's drift over the run reaches both alike, and each step is timed
    without the other's. The first of `specs` takes the first step. Each child's result, or its failure: one that
    fails or runs past `timeout_s` (shared by both) leaves the other to finish alone."""
    first_read, first_write = os.pipe()  # the first child's turns arrive here
    second_read, second_write = os.pipe()
    ends = ((first_read, second_write), (second_read, first_write))
    with tempfile.TemporaryDirectory(prefix="sft-bench-") as tmp:
        children: list[Child] = []
        try:
            for index, (spec, fds) in enumerate(zip(specs, ends)):
                folder = Path(tmp) / str(index)
                folder.mkdir()
                children.append(Child(module, {**spec, "turn_fds": list(fds)}, folder, fds))
            os.write(first_write, b"t")
        except BaseException:
            for child in children:  # a child started before the failure would outlive its folder
                child.process.kill()
                child.process.wait()
            raise
        finally:
            # Only the children hold the pipes from here, so that one's exit reaches the other as the pipe's end.
            for fd in (first_read, first_write, second_read, second_write):
                os.close(fd)
        deadline = None if timeout_s is None else time.perf_counter() + timeout_s
        results: list[dict[str, Any] | PathFailed] = []
        for child in children:
            try:
                results.append(child.finish(deadline))
            except PathFailed as error:
                results.append(error)
        return results


class Child:
    """A child process started in `folder`, which holds its log and its result."""

    def __init__(self, module: str, spec: dict[str, Any], folder: Path, pass_fds: tuple[int, ...] = ()) -> None:
        self.name = f"{module} {spec.get('path', '')}"
        self.out, self.log = folder / "result.json", folder / "log.txt"
        command = [sys.executable, "-m", module, "--spec", json.dumps(spec), "--out", str(self.out)]
        env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "TQDM_DISABLE": "1"}
        self.started = time.perf_counter()
        with open(self.log, "w") as handle:
            self.process = subprocess.Popen(
                command, cwd=REPO, env=env, stdout=handle, stderr=subprocess.STDOUT, pass_fds=pass_fds
            )

    def finish(self, deadline: float | None) -> dict[str, Any]:
        """Wait for the child until `deadline` (on `time.perf_counter`'s clock); its result, or PathFailed."""
        try:
            _, status, usage = wait4(self.process.pid, None if deadline is None else deadline - time.perf_counter())
        except TimeoutError:
            self.process.kill()
            os.waitpid(self.process.pid, 0)
            limit = (deadline or 0) - self.started
            raise PathFailed(f"{self.name} ran past {limit:.0f} s") from None
        self.process.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - self.started
        if self.process.returncode != 0 or not self.out.is_file():
            tail = self.log.read_text(errors="replace")[-3000:]
            raise PathFailed(f"{self.name} exited with {self.process.returncode}:\n{tail}")
        result = json.loads(self.out.read_text())
        result["peak_rss_gb"] = round(usage.ru_maxrss * 1024 / 1e9, 3)  # Linux reports kilobytes
        result["process_wall_s"] = round(wall, 1)
        return result


def wait4(pid: int, timeout_s: float | None) -> tuple[int, int, Any]:
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    while True:
        waited, status, usage = os.wait4(pid, os.WNOHANG)
        if waited == pid:
            return waited, status, usage
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError
        time.sleep(0.2)


def child_main(run: Any) -> None:
    """Entry point for a child module: `run(spec) -> dict`, written where the parent asked."""
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--spec", required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    result = run(json.loads(args.spec))
    Path(args.out).write_text(json.dumps(result))
