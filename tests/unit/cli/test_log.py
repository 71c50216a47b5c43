"""Tests for the progress output on stderr."""

from __future__ import annotations

import pytest

from suture.log import ProgressReporter


def test_progress_plain_prints_start_and_end(capsys: pytest.CaptureFixture[str]) -> None:
    with ProgressReporter("plain") as progress:
        progress.hook("zlib1g.deb", 0, 100)
        progress.hook("zlib1g.deb", 50, 100)
        progress.hook("zlib1g.deb", 100, 100)
    lines = capsys.readouterr().err.splitlines()
    assert lines == ["zlib1g.deb: started (100 bytes)", "zlib1g.deb: done"]


def test_progress_none_prints_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    with ProgressReporter("plain", quiet=True) as progress:
        progress.hook("zlib1g.deb", 100, 100)
    assert capsys.readouterr().err == ""
