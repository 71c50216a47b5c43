"""Patch summary: the `--summary` JSON document and the table printed on stderr."""

from __future__ import annotations

import io
import json

import pytest
from rich.console import Console

from suture.ecosystems.base import PackageStatus, PlannedPackage
from suture.patch.summary import (
    ImageSummary,
    PackageSummary,
    PlatformSummary,
    Summary,
    render_summary,
)


def _package(name: str, status: str, **fields: str) -> PackageSummary:
    return PackageSummary(
        name=name,
        architecture=fields.get("architecture", "amd64"),
        installed=fields.get("installed", "1.0-1"),
        fixed=fields.get("fixed", ""),
        target=fields.get("target", ""),
        vulnerabilities=tuple(v for v in fields.get("vulnerabilities", "").split(",") if v),
        status=status,
        reason=fields.get("reason", ""),
    )


AMD64 = PlatformSummary(
    platform="linux/amd64",
    status="patched",
    engine="unpack",
    packages=(
        _package(
            "libssl3", "updated", fixed="3.0.17-1", target="3.0.17-1", vulnerabilities="CVE-1"
        ),
        _package("bash", "up-to-date"),
        _package("tar", "unavailable", fixed="1.35", reason="repository has only 1.34+dfsg-1.2"),
        _package("libc6", "held", reason="held by the image"),
        _package("ghost", "not-installed"),
        _package("curl", "failed", target="7.88.1-10+deb12u9", reason="hash mismatch"),
    ),
    notes=("3 OS package findings have no fix available",),
)
ARM64 = PlatformSummary(
    platform="linux/arm64",
    status="failed",
    engine="unpack",
    packages=(_package("libssl3", "update", target="3.0.17-1", architecture="arm64"),),
    errors=("repository index for bookworm failed its hash check",),
)
SUMMARY = Summary(
    source=ImageSummary("127.0.0.1:5000/app:1", "sha256:" + "1" * 64),
    result=ImageSummary("127.0.0.1:5000/app:1-patched", "sha256:" + "2" * 64),
    platforms=(AMD64, ARM64),
    bytes_downloaded=123456,
    seconds=4.56789,
)


def test_summary_json_keys_in_order() -> None:
    document = json.loads(SUMMARY.to_json())
    assert list(document) == ["source", "result", "platforms", "bytes_downloaded", "seconds"]
    assert list(document["source"]) == ["reference", "digest"]
    assert list(document["result"]) == ["reference", "digest"]
    assert list(document["platforms"][0]) == [
        "platform", "status", "engine", "packages", "errors", "notes",
    ]
    assert list(document["platforms"][0]["packages"][0]) == [
        "name", "architecture", "installed", "fixed", "target", "vulnerabilities", "status",
        "reason",
    ]


def test_summary_json_values() -> None:
    document = json.loads(SUMMARY.to_json())
    assert document["bytes_downloaded"] == 123456
    assert document["seconds"] == 4.568
    assert document["platforms"][1]["errors"] == [
        "repository index for bookworm failed its hash check"
    ]
    assert document["platforms"][0]["packages"][0]["vulnerabilities"] == ["CVE-1"]


def test_summary_null_result() -> None:
    summary = Summary(source=SUMMARY.source, result=None, platforms=())
    assert json.loads(summary.to_json())["result"] is None


def test_summary_round_trip() -> None:
    assert Summary.from_dict(json.loads(SUMMARY.to_json())) == Summary(
        source=SUMMARY.source,
        result=SUMMARY.result,
        platforms=SUMMARY.platforms,
        bytes_downloaded=SUMMARY.bytes_downloaded,
        seconds=4.568,
    )


def test_summary_rejects_unknown_status() -> None:
    with pytest.raises(ValueError, match="unknown package status"):
        _package("bash", "patched")
    with pytest.raises(ValueError, match="unknown platform status"):
        PlatformSummary(platform="linux/amd64", status="done", engine="unpack")


def test_package_summary_from_planned() -> None:
    planned = PlannedPackage(
        name="openssl",
        architecture="amd64",
        installed="3.0.15-1~deb12u1",
        fixed="3.0.17-1~deb12u2",
        target="3.0.17-1~deb12u2",
        status=PackageStatus.UPDATED,
        vulnerabilities=("CVE-2025-0001",),
        reason="",
    )
    summary = PackageSummary.from_planned(planned)
    assert summary.status == "updated"
    assert summary.vulnerabilities == ("CVE-2025-0001",)
    assert summary.target == "3.0.17-1~deb12u2"


def test_platform_counts() -> None:
    counts = AMD64.counts()
    assert counts.updated == 1
    assert counts.up_to_date == 1
    assert counts.not_fixable == 3
    assert counts.failed == 1


def test_failed_platform_counts_planned_update_failed() -> None:
    assert ARM64.counts().failed == 1
    assert ARM64.counts().updated == 0


def test_dry_run_counts_planned_update_updated() -> None:
    planned = PlatformSummary(
        platform="linux/amd64", status="planned", engine="unpack", packages=ARM64.packages
    )
    assert planned.counts().updated == 1


def _render(verbose: bool) -> str:
    stream = io.StringIO()
    render_summary(SUMMARY, Console(file=stream, width=160, color_system=None), verbose=verbose)
    return stream.getvalue()


def test_render_table_rows() -> None:
    text = _render(verbose=False)
    amd64_row = next(line for line in text.splitlines() if "linux/amd64" in line)
    cells = [cell.strip() for cell in amd64_row.split("│")[1:-1]]
    assert cells == ["linux/amd64", "patched", "1", "1", "3", "1"]
    assert "error: repository index for bookworm failed its hash check" in text
    assert "hash mismatch" not in text


def test_render_verbose_package_rows() -> None:
    text = _render(verbose=True)
    assert "packages on linux/amd64" in text
    assert "repository has only 1.34+dfsg-1.2" in text
    assert "3 OS package findings have no fix available" in text


def test_render_skipped_platform_reason() -> None:
    skipped = PlatformSummary(
        platform="linux/arm64", status="skipped", engine="unpack",
        notes=("no report for linux/arm64; carried over unchanged", "second note"),
    )
    summary = Summary(source=SUMMARY.source, result=SUMMARY.result, platforms=(AMD64, skipped))
    stream = io.StringIO()
    render_summary(summary, Console(file=stream, width=160, color_system=None))
    text = stream.getvalue()
    assert "linux/arm64: skipped: no report for linux/arm64; carried over unchanged" in text
    assert "second note" not in text
