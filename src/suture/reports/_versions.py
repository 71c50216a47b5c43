"""Version ordering used to choose one fixed version when a report lists several.

Debian versions follow deb-version(7) through python-debian. RPM versions follow rpm's
`rpmvercmp` rules: epoch first, then version, then release, each split into alternating digit
and letter segments. A `~` segment sorts before everything, and a `^` segment sorts after the
base version but before any other added segment.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence

from debian.debian_support import version_compare

logger = logging.getLogger(__name__)

_RPM_SEGMENT = re.compile(r"~|\^|[0-9]+|[A-Za-z]+")


def compare_deb(a: str, b: str) -> int:
    return int(version_compare(a, b))


def _rpmvercmp(a: str, b: str) -> int:
    """Compare two rpm version or release strings the way rpm's rpmvercmp does."""
    if a == b:
        return 0
    left = _RPM_SEGMENT.findall(a)
    right = _RPM_SEGMENT.findall(b)
    for x, y in zip(left, right, strict=False):
        if x != y and "~" in (x, y):
            return -1 if x == "~" else 1
        if x != y and "^" in (x, y):
            return -1 if x == "^" else 1
        if x.isdigit() != y.isdigit():
            # A numeric segment is newer than an alphabetic one.
            return 1 if x.isdigit() else -1
        if x.isdigit():
            diff = int(x) - int(y)
            if diff:
                return 1 if diff > 0 else -1
        elif x != y:
            return 1 if x > y else -1
    if len(left) == len(right):
        return 0

    # One string has more segments: it is newer, unless its next segment is a "~".
    longer, sign = (left, 1) if len(left) > len(right) else (right, -1)
    extra = longer[min(len(left), len(right))]
    if extra == "~":
        return -sign
    return sign


def _split_evr(version: str) -> tuple[int, str, str]:
    epoch, colon, rest = version.partition(":")
    if not colon:
        epoch, rest = "0", version
    upstream, _, release = rest.rpartition("-")
    if not upstream:
        upstream, release = release, ""
    return (int(epoch) if epoch.isdigit() else 0), upstream, release


def compare_rpm(a: str, b: str) -> int:
    epoch_a, version_a, release_a = _split_evr(a)
    epoch_b, version_b, release_b = _split_evr(b)
    if epoch_a != epoch_b:
        return 1 if epoch_a > epoch_b else -1
    result = _rpmvercmp(version_a, version_b)
    if result or not release_a or not release_b:
        return result
    return _rpmvercmp(release_a, release_b)


def compare_apk(a: str, b: str) -> int:
    # TODO: apk-tools orders suffixes (_alpha < _beta < _pre < _rc < release < _p) and letters
    # after digits differently from rpm; until suture patches Alpine images this rpm-style
    # ordering only picks among several listed fixes.
    return compare_rpm(a.replace("-r", "-", 1), b.replace("-r", "-", 1))


COMPARATORS: dict[str, Callable[[str, str], int]] = {
    "deb": compare_deb,
    "rpm": compare_rpm,
    "apk": compare_apk,
}


def split_versions(listed: str) -> list[str]:
    """Split a comma-separated list of versions, dropping blanks and repeats, keeping order."""
    seen: list[str] = []
    for part in listed.split(","):
        version = part.strip()
        if version and version not in seen:
            seen.append(version)
    return seen


def select_fixed_version(candidates: Sequence[str], installed: str, package_type: str) -> str:
    """Choose the fixed version that belongs to the installed version's release line.

    Scanners list one fixed version per release line that received the fix (for example
    "3.0.17-1~deb12u2, 3.5.1-1"). The fix on the installed package's own line is the lowest
    listed version above the installed one, because any higher version belongs to a later line
    that the image's repositories do not carry. When no listed version is above the installed
    one, the highest is returned and planning will find the package up to date. When the
    versions cannot be compared, the first listed version is returned.
    """
    if not candidates:
        return ""
    if len(candidates) == 1:
        return candidates[0]
    compare = COMPARATORS.get(package_type, compare_rpm)
    try:
        above = [version for version in candidates if compare(version, installed) > 0]
        pool = above or list(candidates)
        chosen = pool[0]
        for version in pool[1:]:
            order = compare(version, chosen)
            if (above and order < 0) or (not above and order > 0):
                chosen = version
    except ValueError as error:
        logger.debug("cannot order fixed versions %s: %s", candidates, error)
        return candidates[0]
    return chosen
