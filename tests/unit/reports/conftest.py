"""Fixtures of the report reader tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from report_fixtures import REAL_FIXTURES


@pytest.fixture(scope="session")
def real_fixtures() -> Path:
    """Return the folder of real scanner reports, skipping the test when it is absent."""
    if not REAL_FIXTURES.is_dir():
        pytest.skip(f"real report fixtures not found at {REAL_FIXTURES}; set "
                    "SUTURE_REAL_FIXTURES to their directory")
    return REAL_FIXTURES
