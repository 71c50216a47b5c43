"""End-to-end checks of where results go: single-image transports, VEX notices, file modes."""

from __future__ import annotations

import json
import os
import shutil
import stat
import tarfile
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from suture.cli import cli
from tests.conftest import Images

pytestmark = pytest.mark.integration

DEMO = Path(__file__).resolve().parents[2] / "examples"


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, [*args, "--progress", "none"], catch_exceptions=False)


def test_index_to_docker_archive_needs_one_platform(images: Images, tmp_path: Path) -> None:
    layout = images.layout("multiplatform-bookworm")
    archive = tmp_path / "out.tar"

    result = run("patch", "-i", f"oci:{layout}:latest", "--dest", f"docker-archive:{archive}")

    assert result.exit_code == 2
    assert "--platform" in result.stderr
    assert "plan for" not in result.stderr
    assert not archive.exists()


def test_one_platform_of_index_to_docker_archive(images: Images, tmp_path: Path) -> None:
    layout = images.layout_copy("multiplatform-bookworm", tmp_path / "layout")
    archive = tmp_path / "out.tar"

    result = run("patch", "-i", f"oci:{layout}:latest", "--platform", "linux/arm64",
                 "--dest", f"docker-archive:{archive}:example.com/multi:patched")

    assert result.exit_code == 0, result.stderr
    with tarfile.open(archive) as tar:
        manifest_stream = tar.extractfile("manifest.json")
        assert manifest_stream is not None
        manifest = json.loads(manifest_stream.read())
        assert len(manifest) == 1
        config_stream = tar.extractfile(manifest[0]["Config"])
        assert config_stream is not None
        config = json.loads(config_stream.read())
    assert config["architecture"] == "arm64"
    assert manifest[0]["RepoTags"] == ["example.com/multi:patched"]


def test_output_notice_when_nothing_fixed(tmp_path: Path) -> None:
    shutil.copytree(DEMO / "demo", tmp_path / "demo")
    vex = tmp_path / "vex.json"
    summary = tmp_path / "summary.json"
    previous = os.umask(0o022)
    try:
        # Without a report every update is applied, but no vulnerability is named as fixed.
        result = run("patch", "-i", f"oci:{tmp_path}/demo:bookworm", "-o", str(vex),
                     "--summary", str(summary))
    finally:
        os.umask(previous)

    assert result.exit_code == 0, result.stderr
    assert not vex.exists()
    assert f"no VEX document written to {vex}" in result.stderr
    assert "no reported vulnerability was fixed" in result.stderr
    assert stat.S_IMODE(summary.stat().st_mode) == 0o644
    index = tmp_path / "demo" / "index.json"
    assert stat.S_IMODE(index.stat().st_mode) == 0o644


def test_source_date_epoch_gives_same_digest(tmp_path: Path) -> None:
    digests = []
    for number in range(2):
        shutil.copytree(DEMO / "demo", tmp_path / f"demo-{number}")
        summary = tmp_path / f"summary-{number}.json"
        result = CliRunner().invoke(
            cli, ["patch", "-i", f"oci:{tmp_path}/demo-{number}:bookworm", "--summary",
                  str(summary), "--progress", "none"],
            env={"SOURCE_DATE_EPOCH": "1700000000"}, catch_exceptions=False,
        )
        assert result.exit_code == 0, result.stderr
        digests.append(json.loads(summary.read_text())["result"]["digest"])
    assert digests[0] == digests[1]
