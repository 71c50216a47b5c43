"""Durations on the command line and the whole-command deadline.

A duration is a number of seconds with an optional unit: `90`, `300s`, `5m`, `1h`, `1.5m`.
The deadline runs the command's work in a worker thread. When it passes, the caller gets
CommandTimeoutError at once, and the worker's next `check()` stops it at a stage boundary.
NOTE: until that check, the worker keeps running: a network call ends within its own timeout,
but a long local stage (unpacking, building the layer) runs to its end.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from suture.errors import CommandInterruptedError, CommandTimeoutError, UsageError

T = TypeVar("T")

_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0}
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*$")
# One week. Larger values are surely typos, and values past about 1e9 s overflow the
# thread-wait timeout.
MAX_DURATION_SECONDS = 7 * 24 * 3600.0


def parse_duration(text: str) -> float:
    """Parse `300s`, `5m`, `1h` or plain seconds into seconds (a positive float)."""
    match = _DURATION.match(text.lower())
    if match is None:
        raise UsageError(f"invalid duration {text!r}: expected seconds or a number with s, m or h")
    seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if seconds <= 0:
        raise UsageError(f"invalid duration {text!r}: must be greater than zero")
    if seconds > MAX_DURATION_SECONDS:
        raise UsageError(f"invalid duration {text!r}: must be at most 168h (one week)")
    return seconds


def format_duration(seconds: float) -> str:
    """Format seconds the way `--timeout` accepts them (`300s`, `1.5s`)."""
    return f"{seconds:g}s"


class Deadline:
    """A point in time after which the command must stop; shared by every worker thread."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._expires = time.monotonic() + seconds
        self._cancelled = threading.Event()
        self._interrupted = threading.Event()

    def remaining(self) -> float:
        return max(0.0, self._expires - time.monotonic())

    def cancel(self) -> None:
        """Mark the command as stopped because the deadline passed."""
        self._cancelled.set()

    def interrupt(self) -> None:
        """Mark the command as stopped by Ctrl-C."""
        self._interrupted.set()
        self._cancelled.set()

    @property
    def interrupted(self) -> bool:
        return self._interrupted.is_set()

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def check(self) -> None:
        """Raise CommandInterruptedError after Ctrl-C, or CommandTimeoutError when the
        deadline passed."""
        if self._interrupted.is_set():
            raise CommandInterruptedError("interrupted; nothing was written")
        if self._cancelled.is_set() or self.remaining() <= 0:
            self._cancelled.set()
            raise CommandTimeoutError(
                f"command timed out after {format_duration(self.seconds)}; "
                "raise --timeout or check the network"
            )


def run_with_deadline(work: Callable[[], T], deadline: Deadline) -> T:
    """Run `work` in a daemon thread and return its result, or raise at the deadline.

    The thread is a daemon so that the process can exit at the deadline without waiting for a
    stuck network call. On Ctrl-C (KeyboardInterrupt in this thread) the deadline is marked
    interrupted, so the worker stops at its next check, and the interrupt is re-raised.
    """
    outcome: dict[str, object] = {}
    done = threading.Event()

    def target() -> None:
        try:
            outcome["result"] = work()
        except BaseException as error:  # re-raised in the caller's thread below
            outcome["error"] = error
        finally:
            done.set()

    worker = threading.Thread(target=target, name="suture-command", daemon=True)
    worker.start()
    try:
        finished = done.wait(deadline.remaining())
    except KeyboardInterrupt:
        deadline.interrupt()
        raise
    if not finished:
        deadline.cancel()
        deadline.check()
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["result"]  # type: ignore[return-value]
