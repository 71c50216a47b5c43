"""Locations of the real scanner reports the reader tests run against."""

from __future__ import annotations

import os
from pathlib import Path

# Real public scanner reports (Trivy, Grype, Copa test data, SARIF, CycloneDX) are kept outside
# the repository, beside it; SUTURE_REAL_FIXTURES points elsewhere when they live somewhere else.
REAL_FIXTURES = Path(
    os.environ.get(
        "SUTURE_REAL_FIXTURES",
        Path(__file__).resolve().parents[4] / "shared" / "fixtures" / "real",
    )
)


def real_files(folder: str, pattern: str = "*.json") -> list[Path]:
    """List the real fixture files in one folder, or [] when the fixtures are absent."""
    return sorted((REAL_FIXTURES / folder).glob(pattern))
