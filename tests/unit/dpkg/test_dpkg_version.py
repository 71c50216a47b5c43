"""Debian version comparison: deb-version(7) edge cases and agreement with dpkg."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from suture.ecosystems.dpkg.version import compare_versions, is_valid_version, max_version

# (a, b, expected sign of compare(a, b)); each row is a rule from deb-version(7).
CASES = [
    ("1.0", "1.0", 0),
    ("1.0", "1.1", -1),
    ("1.10", "1.9", 1),  # digit runs compare numerically
    ("1.0~rc1", "1.0", -1),  # tilde sorts before the end of the string
    ("1.0~~", "1.0~", -1),  # and before another tilde
    ("1.0~~a", "1.0~~", 1),
    ("1.0~", "1.0", -1),
    ("1.0+b1", "1.0", 1),  # `+` sorts after the end
    ("1.0a", "1.0", 1),  # letters sort after the end
    ("1.0a", "1.0+", -1),  # letters sort before non-letters
    ("1.0.", "1.0+", 1),  # `.` sorts after `+` in ASCII
    ("1:0.1", "2.0", 1),  # epoch first
    ("0:1.0", "1.0", 0),  # epoch 0 is the default
    ("1.0-1", "1.0-2", -1),  # revision breaks ties
    ("1.0-1", "1.0", 1),  # an absent revision compares as "0"
    ("1.0-0", "1.0", 0),  # revision "0" equals no revision
    ("2.30-12", "2.30-2", 1),
    ("1.2.3-1~deb12u1", "1.2.3-1", -1),  # backport and stable-update style
    ("1.2.3-1+deb12u1", "1.2.3-1", 1),
    ("3.0.11-1~deb12u2", "3.0.11-1~deb12u1", 1),
    ("1.0-1ubuntu0.1", "1.0-1", 1),
    ("1.0-a-1", "1.0-a-2", -1),  # hyphens in the upstream part, revision after the last one
    ("00.1", "0.1", 0),  # leading zeros
    ("1.0", "1.0.0", -1),
    ("a", "1", 1),
    ("1.0-1", "1.0-1.1", -1),
]


@pytest.mark.parametrize(("a", "b", "expected"), CASES)
def test_compare_versions_table(a: str, b: str, expected: int) -> None:
    assert compare_versions(a, b) == expected
    assert compare_versions(b, a) == -expected


def test_is_valid_version_rejects_spaces() -> None:
    assert is_valid_version("1.0-1")
    assert not is_valid_version("1.0 1")
    assert not is_valid_version("")


def test_max_version_uses_debian_order() -> None:
    assert max_version(["1.0", "1.0~rc1", "1.0-1", "0.9"]) == "1.0-1"


_DPKG = shutil.which("dpkg")

_fragment = st.text(alphabet="0123456789abz.+~", min_size=0, max_size=5)
_versions = st.builds(
    lambda epoch, upstream_digit, upstream, revision: (
        (f"{epoch}:" if epoch is not None else "")
        + upstream_digit
        + upstream
        + (f"-{revision}" if revision else "")
    ),
    st.one_of(st.none(), st.integers(min_value=0, max_value=3)),
    st.sampled_from("0123456789"),
    _fragment,
    st.text(alphabet="0123456789az.+~", min_size=0, max_size=4),
)


def _dpkg_compare(a: str, b: str) -> int:
    assert _DPKG is not None
    for op, result in (("lt", -1), ("eq", 0)):
        completed = subprocess.run([_DPKG, "--compare-versions", a, op, b], check=False)
        if completed.returncode == 0:
            return result
    return 1


@pytest.mark.skipif(_DPKG is None, reason="dpkg is not installed on this machine")
@settings(max_examples=150, deadline=None)
@given(_versions, _versions)
def test_compare_versions_matches_dpkg(a: str, b: str) -> None:
    assert compare_versions(a, b) == _dpkg_compare(a, b)


@settings(max_examples=300, deadline=None)
@given(_versions, _versions, _versions)
def test_compare_versions_total_order(a: str, b: str, c: str) -> None:
    assert compare_versions(a, a) == 0
    assert compare_versions(a, b) == -compare_versions(b, a)
    if compare_versions(a, b) <= 0 and compare_versions(b, c) <= 0:
        assert compare_versions(a, c) <= 0
