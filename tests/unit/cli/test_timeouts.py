"""Tests for duration parsing and the whole-command deadline."""

from __future__ import annotations

import threading
import time

import pytest

from suture.errors import CommandTimeoutError, UsageError
from suture.patch.timeouts import Deadline, parse_duration, run_with_deadline


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("300", 300.0),
        ("300s", 300.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("1.5m", 90.0),
        (" 10S ", 10.0),
        ("0.25", 0.25),
    ],
)
def test_parse_duration_valid(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5x", "m", "-5s", "0", "0s", "1h30m", "five"])
def test_parse_duration_invalid(text: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_duration(text)
    assert repr(text) in str(caught.value)


def test_deadline_check_before_expiry() -> None:
    deadline = Deadline(60)
    deadline.check()
    assert not deadline.cancelled


def test_deadline_check_after_cancel() -> None:
    deadline = Deadline(60)
    deadline.cancel()
    with pytest.raises(CommandTimeoutError):
        deadline.check()


def test_run_with_deadline_returns_result() -> None:
    assert run_with_deadline(lambda: 42, Deadline(10)) == 42


def test_run_with_deadline_reraises_error() -> None:
    def work() -> None:
        raise UsageError("bad value")

    with pytest.raises(UsageError, match="bad value"):
        run_with_deadline(work, Deadline(10))


def test_run_with_deadline_times_out() -> None:
    release = threading.Event()
    deadline = Deadline(0.2)

    def work() -> None:
        # Stops at the next check, as the pipeline's stages do after the deadline passes.
        release.wait(5)
        deadline.check()

    started = time.monotonic()
    with pytest.raises(CommandTimeoutError, match=r"timed out after 0\.2s"):
        run_with_deadline(work, deadline)
    elapsed = time.monotonic() - started
    release.set()
    assert elapsed < 2
    assert deadline.cancelled

