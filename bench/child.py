"""Run one benchmark path in its own process, so that its peak memory is its own.

The child is `python -m MODULE --spec JSON --out FILE`; it writes its result as JSON to FILE. The parent
waits with `os.wait4`, whose resource usage covers that child alone (`RUSAGE_CHILDREN` would give the
largest of all children so far).
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
    """The child's JSON result plus `peak_rss_gb` (its ru_maxrss) and `wall_s` (process start to exit)."""
    with tempfile.TemporaryDirectory(prefix="sft-bench-") as tmp:
        out = Path(tmp) / "result.json"
        log = Path(tmp) / "log.txt"
        command = [sys.executable, "-m", module, "--spec", json.dumps(spec), "--out", str(out)]
        env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "TQDM_DISABLE": "1"}
        start = time.perf_counter()
        with open(log, "w") as handle:
            process = subprocess.Popen(command, cwd=REPO, env=env, stdout=handle, stderr=subprocess.STDOUT)
            try:
                _, status, usage = wait4(process.pid, timeout_s)
            except TimeoutError:
                process.kill()
                os.waitpid(process.pid, 0)
                raise PathFailed(f"{module} {spec.get('path', '')} ran past {timeout_s:.0f} s") from None
            process.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - start
        if process.returncode != 0 or not out.is_file():
            tail = log.read_text(errors="replace")[-3000:]
            raise PathFailed(f"{module} {spec.get('path', '')} exited with {process.returncode}:\n{tail}")
        result = json.loads(out.read_text())
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
