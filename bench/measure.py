"""Run a child process and measure it: wall time, user+system CPU and peak RSS of that child.

`os.wait4` returns the resource usage of the one child it reaps, so concurrent children are
measured separately. CPU and RSS cover the child and the grandchildren it waited for; work
done by a daemon (dockerd) on the child's behalf is not included.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Measured:
    wall: float
    cpu: float
    max_rss_kb: int
    returncode: int
    log: Path


def run_measured(
    command: Sequence[str], log: Path, env: Mapping[str, str] | None = None,
    cwd: Path | None = None, timeout: float = 900.0,
) -> Measured:
    """Run `command` with its output in `log`, and kill it after `timeout` seconds."""
    started = time.monotonic()
    with log.open("wb") as out:
        process = subprocess.Popen(
            list(command), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=dict(env) if env is not None else None, cwd=cwd,
        )
        deadline = started + timeout
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                process.kill()
                pid, status, usage = os.wait4(process.pid, 0)
                break
            time.sleep(0.02)
    wall = time.monotonic() - started
    # Popen must not try to reap the child again.
    process.returncode = os.waitstatus_to_exitcode(status)
    return Measured(
        wall=wall,
        cpu=usage.ru_utime + usage.ru_stime,
        max_rss_kb=usage.ru_maxrss,
        returncode=process.returncode,
        log=log,
    )


@dataclass(frozen=True)
class Spread:
    median: float
    low: float
    high: float
    count: int

    def format(self, unit: str = "", scale: float = 1.0, digits: int = 1) -> str:
        if self.count == 0:
            return "n/a"
        median, low, high = self.median / scale, self.low / scale, self.high / scale
        if self.count == 1:
            return f"{median:.{digits}f}{unit}"
        return f"{median:.{digits}f}{unit} ({low:.{digits}f}-{high:.{digits}f})"


def spread(values: Sequence[float]) -> Spread:
    if not values:
        return Spread(0.0, 0.0, 0.0, 0)
    return Spread(statistics.median(values), min(values), max(values), len(values))
