"""Tests for the command line: parsing, usage errors, exit codes and one-line errors.

These run the real pipeline on a copy of the demo layout. Every case here fails before the
first network request, so they need no mirror.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from suture import __version__
from suture.cli import cli

DEMO = Path(__file__).resolve().parents[3] / "examples"

COPA_FLAGS = [
    "--image", "--report", "--tag", "--tag-suffix", "--push", "--dest", "--platform",
    "--scanner", "--output", "--format", "--vex-author", "--summary", "--dry-run",
    "--ignore-errors", "--timeout", "--mirror", "--insecure-registry", "--registry-ca",
    "--engine", "--quiet", "--verbose", "--progress", "--allow-insecure-repositories",
    "--compression",
]


@pytest.fixture
def demo(tmp_path: Path) -> Path:
    """A writable copy of the demo image and report."""
    shutil.copytree(DEMO / "demo", tmp_path / "demo")
    shutil.copy(DEMO / "demo-report.json", tmp_path / "report.json")
    return tmp_path


def run(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def layout_state(layout: Path) -> str:
    """Return a hash of every file name and content in a layout, to check nothing changed."""
    digest = hashlib.sha256()
    for path in sorted(layout.rglob("*")):
        digest.update(str(path.relative_to(layout)).encode())
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


def error_lines(result: Result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


def test_version_prints_version() -> None:
    result = run("version")
    assert result.exit_code == 0
    assert result.stdout.strip() == f"suture {__version__}"


def test_patch_help_lists_every_flag() -> None:
    result = run("patch", "--help")
    assert result.exit_code == 0
    for flag in COPA_FLAGS:
        assert flag in result.stdout, flag


def test_plan_help_has_no_dry_run_flag() -> None:
    result = run("plan", "--help")
    assert result.exit_code == 0
    assert "  --dry-run" not in result.stdout


def test_unknown_flag_exits_2() -> None:
    result = run("patch", "-i", "oci:x", "--no-such-flag")
    assert result.exit_code == 2
    assert "--no-such-flag" in result.stderr


def test_missing_image_exits_2() -> None:
    result = run("patch")
    assert result.exit_code == 2
    assert "--image" in result.stderr


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--timeout", "5 minutes"),
        ("--mirror", "no-equals-sign"),
        ("--platform", "linux"),
        ("--scanner", "snyk"),
        ("--engine", "buildkit"),
        ("--compression", "xz"),
        ("--progress", "fancy"),
        ("--format", "csaf"),
    ],
)
def test_invalid_flag_value_exits_2(flag: str, value: str) -> None:
    result = run("patch", "-i", "oci:x", flag, value)
    assert result.exit_code == 2
    assert value in result.stderr


def test_quiet_and_verbose_together_exit_2(demo: Path) -> None:
    result = run("patch", "-i", f"oci:{demo}/demo:bookworm", "-q", "-v")
    assert result.exit_code == 2


def test_registry_image_without_push_or_daemon_exits_2() -> None:
    # No Docker daemon listens on this socket, so the registry image has nowhere to go.
    env = {"DOCKER_HOST": "unix:///nonexistent/docker.sock"}
    result = run("patch", "-i", "127.0.0.1:9/app:1", env=env)
    assert result.exit_code == 2
    lines = error_lines(result)
    assert len(lines) == 1
    assert "--push" in lines[0]
    assert "--dest" in lines[0]


def test_digest_only_image_without_tag_exits_2() -> None:
    result = run("patch", "-i", "127.0.0.1:9/app@sha256:" + "0" * 64, "--push")
    assert result.exit_code == 2
    assert "-t/--tag" in result.stderr


def test_invalid_reference_exits_2() -> None:
    result = run("patch", "-i", "docker://UPPER/Case:tag", "--push")
    assert result.exit_code == 2
    assert "UPPER/Case" in result.stderr


def test_missing_layout_exits_1(tmp_path: Path) -> None:
    result = run("patch", "-i", f"oci:{tmp_path}/absent:latest")
    assert result.exit_code == 1
    lines = error_lines(result)
    assert len(lines) == 1
    assert "absent" in lines[0]


def test_missing_report_exits_1(demo: Path) -> None:
    before = layout_state(demo / "demo")
    result = run("patch", "-i", f"oci:{demo}/demo:bookworm", "-r", f"{demo}/nothing.json")
    assert result.exit_code == 1
    assert "nothing.json" in result.stderr
    assert layout_state(demo / "demo") == before


@pytest.mark.parametrize("content", ["", "{not json", "[]", "{}"])
def test_malformed_report_exits_1(demo: Path, content: str) -> None:
    (demo / "report.json").write_text(content)
    before = layout_state(demo / "demo")
    result = run("patch", "-i", f"oci:{demo}/demo:bookworm", "-r", f"{demo}/report.json")
    assert result.exit_code == 1
    lines = error_lines(result)
    assert len(lines) == 1
    assert "report.json" in lines[0]
    assert layout_state(demo / "demo") == before


def _edit_report(demo: Path, family: str, version: str, arch: str) -> None:
    path = demo / "report.json"
    report = json.loads(path.read_text())
    report["Metadata"]["OS"] = {"Family": family, "Name": version}
    report["Metadata"]["ImageConfig"]["architecture"] = arch
    path.write_text(json.dumps(report))


def test_report_for_other_distribution_exits_1(demo: Path) -> None:
    _edit_report(demo, "ubuntu", "22.04", "amd64")
    before = layout_state(demo / "demo")
    result = run("patch", "-i", f"oci:{demo}/demo:bookworm", "-r", f"{demo}/report.json")
    assert result.exit_code == 1
    lines = error_lines(result)
    assert len(lines) == 1
    assert "ubuntu 22.04" in lines[0]
    assert "debian 12" in lines[0]
    assert layout_state(demo / "demo") == before


def test_report_for_other_release_exits_1(demo: Path) -> None:
    _edit_report(demo, "debian", "11.9", "amd64")
    result = run("patch", "-i", f"oci:{demo}/demo:bookworm", "-r", f"{demo}/report.json")
    assert result.exit_code == 1
    assert "debian 11.9" in result.stderr


def test_report_for_other_architecture_exits_1(demo: Path) -> None:
    _edit_report(demo, "debian", "12", "arm64")
    result = run("patch", "-i", f"oci:{demo}/demo:bookworm", "-r", f"{demo}/report.json")
    assert result.exit_code == 1
    assert "arm64" in result.stderr
    assert "amd64" in result.stderr


def test_platform_not_in_image_exits_2(demo: Path) -> None:
    result = run("patch", "-i", f"oci:{demo}/demo:bookworm", "--platform", "linux/arm64")
    assert result.exit_code == 2
    assert "linux/arm64" in result.stderr


def test_error_has_traceback_only_with_verbose(demo: Path) -> None:
    (demo / "report.json").write_text("{not json")
    args = ["patch", "-i", f"oci:{demo}/demo:bookworm", "-r", f"{demo}/report.json"]
    quiet_result = run(*args)
    verbose_result = run(*args, "-v")
    assert "Traceback" not in quiet_result.stderr
    assert "Traceback" in verbose_result.stderr
    assert verbose_result.exit_code == 1


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write to read-only directories")
def test_read_only_destination_exits_1(demo: Path) -> None:
    readonly = demo / "readonly"
    shutil.copytree(demo / "demo", readonly)
    before = layout_state(readonly)
    readonly.chmod(0o555)
    (readonly / "blobs" / "sha256").chmod(0o555)
    try:
        result = run("patch", "-i", f"oci:{demo}/demo:bookworm", "--dest", f"oci:{readonly}:x")
    finally:
        (readonly / "blobs" / "sha256").chmod(0o755)
        readonly.chmod(0o755)
    assert result.exit_code == 1
    assert "not writable" in result.stderr
    assert layout_state(readonly) == before


def test_timeout_exits_1_and_writes_nothing(demo: Path) -> None:
    before = layout_state(demo / "demo")
    result = run("patch", "-i", f"oci:{demo}/demo:bookworm", "--timeout", "0.001s")
    assert result.exit_code == 1
    assert "timed out after 0.001s" in result.stderr
    assert layout_state(demo / "demo") == before


def test_version_flag_prints_version() -> None:
    result = run("--version")
    assert result.exit_code == 0
    assert result.stdout.strip() == f"suture {__version__}"


def test_timeout_too_large_exits_2() -> None:
    result = run("patch", "-i", "oci:x", "--timeout", "9" * 30 + "h")
    assert result.exit_code == 2
    assert "Invalid value for '--timeout'" in result.stderr
    assert "168h" in result.stderr


def test_push_with_dest_exits_2(demo: Path) -> None:
    result = run("patch", "-i", f"oci:{demo}/demo:bookworm", "--push",
                 "--dest", f"oci:{demo}/out")
    assert result.exit_code == 2
    assert "--push and --dest" in result.stderr


@pytest.mark.parametrize("option", ["--summary", "-o"])
def test_output_in_missing_directory_exits_2(demo: Path, option: str) -> None:
    before = layout_state(demo / "demo")
    result = run("patch", "-i", f"oci:{demo}/demo:bookworm", option,
                 f"{demo}/missing/file.json")
    assert result.exit_code == 2
    assert f"{demo}/missing" in result.stderr
    assert "does not exist" in result.stderr
    assert layout_state(demo / "demo") == before


def test_summary_naming_directory_exits_2(demo: Path) -> None:
    result = run("patch", "-i", f"oci:{demo}/demo:bookworm", "--summary", str(demo))
    assert result.exit_code == 2
    assert "is a directory" in result.stderr


def test_ctrl_c_exits_130_without_timeout_errors(
    demo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Fault injection: the patch job is replaced by one that checks the deadline until Ctrl-C
    arrives, as a platform thread does, and records the error it gets."""
    import signal
    import threading
    import time

    from suture.errors import CommandTimeoutError, SutureError
    from suture.patch import pipeline

    errors: list[SutureError] = []
    stopped = threading.Event()

    def slow_patch(request: object, deadline: object, *args: object) -> object:
        try:
            for _ in range(500):
                deadline.check()  # type: ignore[attr-defined]
                time.sleep(0.01)
        except SutureError as error:
            errors.append(error)
            raise
        finally:
            stopped.set()
        raise AssertionError("Ctrl-C never arrived")

    monkeypatch.setattr(pipeline, "run_patch", slow_patch)
    # A pytest-xdist worker ignores SIGINT, but a command-line process has Python's default one.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        result = run("patch", "-i", f"oci:{demo}/demo:bookworm")
    finally:
        timer.cancel()
        signal.signal(signal.SIGINT, previous)
    assert stopped.wait(5)
    assert result.exit_code == 130
    assert "interrupted; nothing was written" in result.stderr
    assert "timed out" not in result.stderr
    assert len(errors) == 1
    assert not isinstance(errors[0], CommandTimeoutError)
    assert errors[0].exit_code == 130


def test_registry_ca_not_pem_exits_2(tmp_path: Path) -> None:
    not_pem = tmp_path / "ca.txt"
    not_pem.write_text("this is not a certificate\n")
    result = run("patch", "-i", "127.0.0.1:9/app:1", "--push", "--registry-ca", str(not_pem))
    assert result.exit_code == 2
    assert "Invalid value for '--registry-ca'" in result.stderr
    assert "not a PEM file" in result.stderr


def test_unknown_transport_exits_2() -> None:
    result = run("patch", "-i", "foo://bar")
    assert result.exit_code == 2
    assert "unknown transport 'foo'" in result.stderr
