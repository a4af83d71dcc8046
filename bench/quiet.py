"""Wait until no other process is using the CPU, so that a measurement has the machine to itself."""

import contextlib
import os
import time

import psutil

BUSY_PERCENT = 15.0  # CPU use, in percent of one core, above which another process counts as busy
QUIET_FOR_S = 6


def others_busy(interval: float = 1.0) -> list[str]:
    """Processes outside this process tree that used more than BUSY_PERCENT of a core over `interval`."""
    mine = {os.getpid(), *(child.pid for child in psutil.Process().children(recursive=True))}
    processes = [p for p in psutil.process_iter(["pid", "name"]) if p.pid not in mine]
    for process in processes:
        with contextlib.suppress(psutil.Error):
            process.cpu_percent(None)  # starts the process's measuring interval
    time.sleep(interval)
    busy = []
    for process in processes:
        try:
            if process.cpu_percent(None) > BUSY_PERCENT:
                busy.append(" ".join(process.cmdline()[:3]) or process.name())
        except psutil.Error:
            pass
    return busy


def wait_until_quiet(max_wait_s: float) -> tuple[float, list[str]]:
    """Seconds waited, and what was still busy if the wait ran out."""
    start = time.monotonic()
    quiet_since = None
    busy: list[str] = []
    while time.monotonic() - start < max_wait_s:
        busy = others_busy()
        now = time.monotonic()
        if busy:
            quiet_since = None
            continue
        quiet_since = quiet_since or now
        if now - quiet_since >= QUIET_FOR_S:
            return now - start, []
    return time.monotonic() - start, busy
