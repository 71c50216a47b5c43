"""Where the harness keeps what it builds or downloads between test sessions."""

from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """Return `$SUTURE_TEST_CACHE`, or `~/.cache/suture-tests` when it is unset."""
    configured = os.environ.get("SUTURE_TEST_CACHE")
    if configured:
        return Path(configured)
    return Path.home() / ".cache" / "suture-tests"
