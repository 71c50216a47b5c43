"""Run a child process and measure it: wall time, user+system CPU and peak RSS of that child.

Each command runs under GNU time (`/usr/bin/time`, Debian package `time`), and the peak RSS
is its `%M`. `ru_maxrss` from `os.wait4` alone would be wrong: at exec, Linux (fs/exec.c)
keeps the high-water RSS of the memory map the process had before, and `subprocess` starts
children with vfork or posix_spawn, so that map is the benchmark's own. A `/bin/true`
started by a Python process that had touched and freed 300 MiB reported over 300 MiB that
way. GNU time is a small freshly executed process, so the command it starts reports its own
peak.

CPU comes from `os.wait4` on the GNU time process and covers that process, the command and
the descendants they waited for. RSS is the largest peak of any one process in that tree, not
a sum. Work done by a daemon (dockerd) on the child's behalf is in neither figure.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import statistics
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

GNU_TIME = Path("/usr/bin/time")


@dataclass(frozen=True)
class Measured:
    wall: float
    cpu: float
    max_rss_kb: int
    returncode: int
    log: Path


def require_gnu_time() -> None:
    """Raise FileNotFoundError unless GNU time, which measures the peak RSS, is installed."""
    if not os.access(GNU_TIME, os.X_OK):
        raise FileNotFoundError(
            f"{GNU_TIME} not found: the benchmark measures peak RSS with GNU time. "
            "Install it with `apt-get install time`."
        )


def run_measured(
    command: Sequence[str], log: Path, env: Mapping[str, str] | None = None,
    cwd: Path | None = None, timeout: float = 900.0,
) -> Measured:
    """Run `command` under GNU time with its output in `log`, and kill it after `timeout` seconds.

    `max_rss_kb` is 0 when GNU time wrote no figure, for example because it was killed.
    """
    require_gnu_time()
    usage_file = log.with_name(log.name + ".time")
    usage_file.unlink(missing_ok=True)
    wrapped = [str(GNU_TIME), "--quiet", "--format", "%M", "--output", str(usage_file),
               "--", *command]
    started = time.monotonic()
    with log.open("wb") as out:
        # A session of its own, so a timeout kills the command as well as GNU time.
        process = subprocess.Popen(
            wrapped, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=dict(env) if env is not None else None, cwd=cwd, start_new_session=True,
        )
        try:
            status, usage = _wait(process.pid, started + timeout)
        except BaseException:
            # Ctrl-C on the benchmark does not reach the command's session, so kill it here.
            with contextlib.suppress(ProcessLookupError, ChildProcessError):
                os.killpg(process.pid, signal.SIGKILL)
                os.wait4(process.pid, 0)
            raise
    wall = time.monotonic() - started
    # Popen must not try to reap the child again.
    process.returncode = os.waitstatus_to_exitcode(status)
    return Measured(
        wall=wall,
        cpu=usage.ru_utime + usage.ru_stime,
        max_rss_kb=read_max_rss_kb(usage_file),
        returncode=process.returncode,
        log=log,
    )


def _wait(pid: int, deadline: float) -> tuple[int, resource.struct_rusage]:
    """Reap `pid`, and kill its process group first once `deadline` (monotonic) has passed."""
    while True:
        reaped, status, usage = os.wait4(pid, os.WNOHANG)
        if reaped:
            return status, usage
        if time.monotonic() > deadline:
            os.killpg(pid, signal.SIGKILL)
            _reaped, status, usage = os.wait4(pid, 0)
            return status, usage
        time.sleep(0.02)


def read_max_rss_kb(usage_file: Path) -> int:
    """Return the `%M` figure (KiB) that GNU time wrote as the last line, or 0 if none."""
    try:
        lines = usage_file.read_text().split()
    except FileNotFoundError:
        return 0
    if not lines or not lines[-1].isdigit():
        return 0
    return int(lines[-1])


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
