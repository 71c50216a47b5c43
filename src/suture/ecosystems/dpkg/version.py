"""Debian package version comparison, as specified in deb-version(7).

A version is `[epoch:]upstream_version[-debian_revision]`. Epochs compare numerically. The
upstream version and the revision compare by alternating non-digit and digit runs. In non-digit
runs `~` sorts before everything, even the end of the string, and letters sort before other
characters.

The comparison is python-debian's `debian.debian_support.version_compare`, a pure-Python
implementation of dpkg's `verrevcmp`; tests check it against `dpkg --compare-versions`.
"""

from __future__ import annotations

import functools

from debian.debian_support import Version, version_compare

__all__ = ["Version", "compare_versions", "is_valid_version", "max_version", "version_key"]


def compare_versions(a: str, b: str) -> int:
    """Compare two Debian versions; return a negative number, zero or a positive number."""
    result: int = version_compare(a, b)
    return (result > 0) - (result < 0)


def is_valid_version(text: str) -> bool:
    """Return whether `text` parses as a Debian version."""
    try:
        Version(text)
    except ValueError:
        return False
    return True


version_key = functools.cmp_to_key(compare_versions)
"""Sort key for version strings: `sorted(versions, key=version_key)`."""


def max_version(versions: list[str]) -> str:
    """Return the highest of `versions` (which must not be empty)."""
    return max(versions, key=version_key)
