"""Tests that the committed demo image and its report agree with each other."""

from __future__ import annotations

import json
from pathlib import Path

from suture.ecosystems.dpkg.database import read_database
from suture.image.merged import MergedFileSystem
from suture.image.model import Image
from suture.image.transports import parse_location, read_artifact

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
MAX_DEMO_BYTES = 5 * 1024 * 1024


def demo_image() -> Image:
    image = read_artifact(parse_location(f"oci:{EXAMPLES / 'demo'}:bookworm"))
    assert isinstance(image, Image)
    return image


def test_demo_image_is_small() -> None:
    # Counts the blobs of the `bookworm` tag only, because running the README's command adds a
    # patched tag to the same layout.
    image = demo_image()
    size = len(image.manifest.raw) + image.manifest.config.size
    size += sum(layer.size for layer in image.manifest.layers)
    assert size < MAX_DEMO_BYTES


def test_demo_report_describes_demo_image() -> None:
    report = json.loads((EXAMPLES / "demo-report.json").read_text())
    image = demo_image()
    assert report["SchemaVersion"] == 2
    assert report["Metadata"]["ImageID"] == image.config.digest
    assert report["Metadata"]["OS"]["Family"] == "debian"
    assert report["Metadata"]["OS"]["Name"].split(".")[0] == "12"
    assert report["Metadata"]["ImageConfig"]["architecture"] == image.platform.architecture
    assert [r["Class"] for r in report["Results"]] == ["os-pkgs"]


def test_demo_report_versions_match_image() -> None:
    report = json.loads((EXAMPLES / "demo-report.json").read_text())
    database = read_database(MergedFileSystem.from_image(
        demo_image(), keep_content=lambda path: "/var/lib/dpkg/" in "/" + path.lstrip("/")))
    vulnerabilities = report["Results"][0]["Vulnerabilities"]
    assert vulnerabilities
    for finding in vulnerabilities:
        installed = database.find(finding["PkgName"])
        assert installed is not None, finding["PkgName"]
        assert installed.version == finding["InstalledVersion"]
        assert finding["VulnerabilityID"].startswith("CVE-")


def test_demo_image_has_no_apt_sources() -> None:
    fs = MergedFileSystem.from_image(demo_image())
    assert fs.lstat("/etc/apt/sources.list") is None
    assert fs.listdir("/etc/apt/sources.list.d") == []
