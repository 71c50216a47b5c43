"""Tests of bench.measure against real processes (run: .venv/bin/pytest bench/test_measure.py)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from bench.measure import GNU_TIME, run_measured

pytestmark = pytest.mark.skipif(not GNU_TIME.exists(), reason=f"{GNU_TIME} is not installed")

KIB_PER_MIB = 1024


def touch_memory(size_mb: int) -> None:
    """Touch `size_mb` MiB in this process and free it again, raising its RSS high-water mark."""
    block = bytearray(size_mb * 1024 * 1024)
    for offset in range(0, len(block), 4096):
        block[offset] = 1
    del block


def test_small_child_after_large_parent(tmp_path: Path) -> None:
    touch_memory(300)
    true = shutil.which("true") or "/bin/true"

    measured = run_measured([true], tmp_path / "true.log")

    assert measured.returncode == 0
    assert 0 < measured.max_rss_kb < 10 * KIB_PER_MIB


def test_child_peak_is_its_own(tmp_path: Path) -> None:
    script = "b = bytearray(200 * 1024 * 1024)\nfor i in range(0, len(b), 4096): b[i] = 1\n"

    measured = run_measured([sys.executable, "-c", script], tmp_path / "python.log")

    assert measured.returncode == 0
    assert 200 * KIB_PER_MIB <= measured.max_rss_kb < 260 * KIB_PER_MIB
    assert measured.cpu > 0


def test_exit_status_and_output(tmp_path: Path) -> None:
    log = tmp_path / "fail.log"

    measured = run_measured(["sh", "-c", "echo out; echo err >&2; exit 3"], log)

    assert measured.returncode == 3
    assert log.read_text().split() == ["out", "err"]


def test_timeout_kills_command(tmp_path: Path) -> None:
    measured = run_measured(["sleep", "30"], tmp_path / "sleep.log", timeout=0.5)

    assert measured.returncode != 0
    assert measured.wall < 10
