"""End-to-end tests of `suture patch` on the harness's real images, registry and mirror.

Expectations come from apt itself, because the apt oracle runs apt-get in a chroot of the
unpacked result. The scanner report for the registry test is built at test time from the
security upgrades apt finds pending, with CVE ids read from the fixed packages' changelogs.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from suture.cli import cli
from tests.conftest import Images
from tests.harness.debrepo import download_debs
from tests.harness.docker import DockerDaemon
from tests.harness.oracle import AptOracle, Upgrade
from tests.harness.registry import Registry
from tests.unit.patch.test_vex import VALIDATOR

pytestmark = pytest.mark.integration

CVE = re.compile(r"CVE-\d{4}-\d{4,}")
PATCH_ANNOTATION_PREFIX = "dev.suture"


def run(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, [*args, "--progress", "none"], env=env,
                              catch_exceptions=False)


def layout_state(layout: Path) -> str:
    """Return a hash of every file name and content in a layout, to check nothing changed."""
    digest = hashlib.sha256()
    for path in sorted(layout.rglob("*")):
        digest.update(str(path.relative_to(layout)).encode())
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


def read_blob(layout: Path, digest: str) -> Any:
    return json.loads((layout / "blobs" / "sha256" / digest.removeprefix("sha256:")).read_bytes())


def ref_descriptor(layout: Path, tag: str) -> dict[str, Any]:
    index = json.loads((layout / "index.json").read_text())
    for descriptor in index["manifests"]:
        if descriptor.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag:
            return dict(descriptor)
    raise AssertionError(f"{layout} has no tag {tag}")


def plan_block(text: str) -> list[str]:
    """Return the plan lines in command output: from `plan for` through its indented lines."""
    lines: list[str] = []
    inside = False
    for line in text.splitlines():
        if line.startswith("plan for "):
            inside = True
        elif inside and not line.startswith("  "):
            inside = False
        if inside:
            lines.append(line)
    return lines


def skopeo_auth(registry: Registry, certs: Path, direction: str) -> list[str]:
    """Return skopeo flags that trust the registry's CA and log in, for `src` or `dest`."""
    certs.mkdir(parents=True, exist_ok=True)
    assert registry.ca_file is not None
    shutil.copy(registry.ca_file, certs / "ca.crt")
    flags = [f"--{direction}-cert-dir", str(certs)]
    if registry.username and registry.password:
        flags += [f"--{direction}-creds", f"{registry.username}:{registry.password}"]
    return flags


def skopeo_copy(source: str, dest: str, flags: list[str]) -> None:
    subprocess.run(["skopeo", "copy", "--quiet", *flags, source, dest], check=True,
                   capture_output=True, timeout=300)


def changelog_cves(deb: Path, installed: str) -> list[str]:
    """Return the CVE ids of the changelog entries of `deb` newer than `installed`."""
    from debian.debian_support import version_compare

    payload = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], check=True,
                             capture_output=True).stdout
    text = ""
    with tarfile.open(fileobj=io.BytesIO(payload)) as archive:
        for member in archive.getmembers():
            if member.isfile() and member.name.endswith("/changelog.Debian.gz"):
                extracted = archive.extractfile(member)
                assert extracted is not None
                text = gzip.decompress(extracted.read()).decode(errors="replace")
                break
    found: list[str] = []
    for entry in re.split(r"\n(?=\S+ \([^)]+\) )", text):
        header = re.match(r"\S+ \(([^)]+)\)", entry)
        if header is None or version_compare(header.group(1), installed) <= 0:
            continue
        found.extend(cve for cve in CVE.findall(entry) if cve not in found)
    return found


def trivy_report(rootfs: Path, upgrades: list[Upgrade], work: Path) -> dict[str, Any]:
    """Build a Trivy schema-2 report of the pending security upgrades of an unpacked image."""
    debs = download_debs([u.name for u in upgrades], "bookworm-security", "amd64", work)
    vulnerabilities = []
    for upgrade in upgrades:
        deb, _stanza = debs[upgrade.name]
        for cve in changelog_cves(deb, upgrade.installed):
            vulnerabilities.append({
                "VulnerabilityID": cve,
                "PkgName": upgrade.name,
                "PkgIdentifier": {"PURL": f"pkg:deb/debian/{upgrade.name}@{upgrade.installed}"
                                          f"?arch={upgrade.architecture}"},
                "InstalledVersion": upgrade.installed,
                "FixedVersion": upgrade.candidate,
                "Status": "fixed",
                "Severity": "UNKNOWN",
            })
    debian_version = (rootfs / "etc/debian_version").read_text().strip()
    return {
        "SchemaVersion": 2,
        "ArtifactName": "debian-bookworm",
        "ArtifactType": "container_image",
        "Metadata": {
            "OS": {"Family": "debian", "Name": debian_version},
            "ImageConfig": {"architecture": "amd64", "os": "linux"},
        },
        "Results": [{
            "Target": f"debian-bookworm (debian {debian_version})",
            "Class": "os-pkgs",
            "Type": "debian",
            "Vulnerabilities": vulnerabilities,
        }],
    }


def cached_trivy_report(images: Images, rootfs: Path, upgrades: list[Upgrade]) -> Any:
    """Return `trivy_report` for these upgrades, built once per mirror state and upgrade set.

    Reading the changelogs decompresses every package's payload with dpkg-deb. The report
    depends only on the packages, which the upgrade list names by version.
    """
    listed = json.dumps([[u.name, u.installed, u.candidate, u.architecture] for u in upgrades])
    name = "trivy-report-" + hashlib.sha256(listed.encode()).hexdigest()[:16]

    def build(out: Path) -> None:
        report = trivy_report(rootfs, upgrades, out / "debs")
        shutil.rmtree(out / "debs")
        (out / "report.json").write_text(json.dumps(report), encoding="utf-8")

    return json.loads((images.cache.derived(name, build) / "report.json").read_text())


@dataclass(frozen=True)
class Patched:
    """`debian-bookworm` patched once with update-all. Tests copy `layout` before changing it."""

    layout: Path
    result: Result
    summary: dict[str, Any]


@pytest.fixture(scope="module")
def patched_bookworm(images: Images, tmp_path_factory: pytest.TempPathFactory) -> Patched:
    work = tmp_path_factory.mktemp("patched-bookworm")
    layout = images.layout_copy("debian-bookworm", work / "layout")
    result = run("patch", "-i", f"oci:{layout}:latest", "--summary", str(work / "s.json"))
    assert result.exit_code == 0, result.stderr
    return Patched(layout, result, json.loads((work / "s.json").read_text()))


def test_update_all_leaves_no_pending_upgrades(
    images: Images, patched_bookworm: Patched, tmp_path: Path
) -> None:
    before = AptOracle(images.rootfs("debian-bookworm")).pending_upgrades()
    assert before, "the fixture should have pending upgrades"

    layout, summary = patched_bookworm.layout, patched_bookworm.summary
    assert summary["result"]["digest"] == ref_descriptor(layout, "latest-patched")["digest"]
    rootfs = images.unpack_layout(layout, "latest-patched", tmp_path / "rootfs")
    oracle = AptOracle(rootfs)
    assert oracle.pending_upgrades() == []
    assert oracle.audit() == []
    updated = [p["name"] for p in summary["platforms"][0]["packages"] if p["status"] == "updated"]
    assert {u.name for u in before} <= set(updated)
    assert oracle.verify(updated) == []


def test_second_run_is_up_to_date(patched_bookworm: Patched, tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    shutil.copytree(patched_bookworm.layout, layout)
    before = layout_state(layout)

    second = run("patch", "-i", f"oci:{layout}:latest-patched", "--summary",
                 str(tmp_path / "s.json"))

    assert second.exit_code == 0, second.stderr
    assert "already up to date" in second.stderr
    assert layout_state(layout) == before
    assert json.loads((tmp_path / "s.json").read_text())["result"] is None


def test_dry_run_writes_nothing_and_plan_matches(
    images: Images, patched_bookworm: Patched, tmp_path: Path
) -> None:
    layout = images.layout_copy("debian-bookworm", tmp_path / "layout")
    before = layout_state(layout)

    dry = run("plan", "-i", f"oci:{layout}:latest")

    assert dry.exit_code == 0, dry.stderr
    assert layout_state(layout) == before
    dry_plan = plan_block(dry.stdout)
    assert len(dry_plan) > 1
    assert plan_block(patched_bookworm.result.stderr) == dry_plan


def test_push_with_trivy_report_to_auth_registry(
    images: Images, registry_auth: Registry, tmp_path: Path
) -> None:
    source = f"{registry_auth.host}/suture/debian:bookworm"
    push_flags = skopeo_auth(registry_auth, tmp_path / "certs", "dest")
    skopeo_copy(f"oci:{images.layout('debian-bookworm')}:latest", f"docker://{source}",
                push_flags)
    rootfs = images.rootfs("debian-bookworm")
    security = [u for u in AptOracle(rootfs).pending_upgrades() if u.is_security]
    assert security, "the fixture should have pending security upgrades"
    report = cached_trivy_report(images, rootfs, security)
    (tmp_path / "report.json").write_text(json.dumps(report))
    reported = {v["PkgName"]: v["FixedVersion"] for v in report["Results"][0]["Vulnerabilities"]}
    assert reported, "no pending security upgrade names a CVE in its changelog"
    env = {"DOCKER_CONFIG": str(registry_auth.docker_config)}

    dry_log = registry_auth.request_count()
    dry = run("patch", "-i", f"docker://{source}", "-r", str(tmp_path / "report.json"),
              "--push", "--registry-ca", str(registry_auth.ca_file), "--dry-run", env=env)
    assert dry.exit_code == 0, dry.stderr
    writes = [line for line in _request_lines(registry_auth)[dry_log:]
              if re.search(r'"(PUT|POST|PATCH|DELETE) ', line)]
    assert writes == []

    result = run(
        "patch", "-i", f"docker://{source}", "-r", str(tmp_path / "report.json"), "--push",
        "--registry-ca", str(registry_auth.ca_file), "-o", str(tmp_path / "vex.json"),
        "--summary", str(tmp_path / "summary.json"), env=env,
    )

    assert result.exit_code == 0, result.stderr
    pulled = tmp_path / "pulled"
    skopeo_copy(f"docker://{registry_auth.host}/suture/debian:bookworm-patched",
                f"oci:{pulled}:latest", skopeo_auth(registry_auth, tmp_path / "certs", "src"))
    patched = AptOracle(images.unpack_layout(pulled, "latest", tmp_path / "rootfs"))
    installed = patched.installed_versions()
    for name, fixed in reported.items():
        assert installed[name] == fixed, name
    pending = {u.name for u in patched.pending_upgrades()}
    assert pending.isdisjoint(reported)
    assert patched.audit() == []

    summary = json.loads((tmp_path / "summary.json").read_text())
    updated = {p["name"] for p in summary["platforms"][0]["packages"] if p["status"] == "updated"}
    expected = {v["VulnerabilityID"] for v in report["Results"][0]["Vulnerabilities"]
                if v["PkgName"] in updated}
    vex = json.loads((tmp_path / "vex.json").read_text())
    assert list(VALIDATOR.iter_errors(vex)) == []
    assert {s["vulnerability"]["name"] for s in vex["statements"]} == expected
    assert all(s["status"] == "fixed" for s in vex["statements"])


def _request_lines(registry: Registry) -> list[str]:
    from tests.harness.registry import request_lines

    return request_lines(registry.log_path)


def test_wrong_credentials_exit_1(
    images: Images, registry_auth: Registry, tmp_path: Path
) -> None:
    source = f"{registry_auth.host}/suture/creds:bookworm"
    skopeo_copy(f"oci:{images.layout('debian-bookworm')}:latest", f"docker://{source}",
                skopeo_auth(registry_auth, tmp_path / "certs", "dest"))
    config = tmp_path / "docker"
    config.mkdir()
    (config / "config.json").write_text(json.dumps({"auths": {registry_auth.host: {
        "auth": "d3Jvbmc6Y3JlZGVudGlhbHM="}}}))  # base64 of "wrong:credentials"

    result = run("patch", "-i", f"docker://{source}", "--push",
                 "--registry-ca", str(registry_auth.ca_file),
                 env={"DOCKER_CONFIG": str(config)})

    assert result.exit_code == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1
    assert registry_auth.host in lines[0]
    assert "wrong:credentials" not in result.stderr
    assert "d3Jvbmc6" not in result.stderr


def test_missing_registry_image_exit_1(registry_auth: Registry) -> None:
    result = run("patch", "-i", f"docker://{registry_auth.host}/suture/absent:1", "--push",
                 "--registry-ca", str(registry_auth.ca_file),
                 env={"DOCKER_CONFIG": str(registry_auth.docker_config)})

    assert result.exit_code == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1
    assert "suture/absent" in lines[0]


def _add_extra_platform(layout: Path) -> dict[str, Any]:
    """Add an unpatchable windows entry and an annotation to the layout's index; return the
    entry's descriptor."""
    def write(data: bytes) -> tuple[str, int]:
        digest = hashlib.sha256(data).hexdigest()
        (layout / "blobs" / "sha256" / digest).write_bytes(data)
        return f"sha256:{digest}", len(data)

    config_digest, config_size = write(b'{"architecture":"amd64","os":"windows","rootfs":'
                                       b'{"type":"layers","diff_ids":[]}}')
    manifest = json.dumps({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": config_digest, "size": config_size},
        "layers": [],
    }).encode()
    manifest_digest, manifest_size = write(manifest)
    extra = {"mediaType": "application/vnd.oci.image.manifest.v1+json",
             "digest": manifest_digest, "size": manifest_size,
             "platform": {"architecture": "amd64", "os": "windows"}}

    top = json.loads((layout / "index.json").read_text())
    entry = top["manifests"][0]
    index = read_blob(layout, entry["digest"])
    index["manifests"].append(extra)
    index.setdefault("annotations", {})["org.example.kept"] = "yes"
    index_digest, index_size = write(json.dumps(index).encode())
    entry.update(digest=index_digest, size=index_size)
    (layout / "index.json").write_text(json.dumps(top))
    return extra


def test_multiplatform_index_patched(images: Images, tmp_path: Path) -> None:
    layout = images.layout_copy("multiplatform-bookworm", tmp_path / "layout")
    extra = _add_extra_platform(layout)
    original = read_blob(layout, ref_descriptor(layout, "latest")["digest"])

    result = run("patch", "-i", f"oci:{layout}:latest", "--summary", str(tmp_path / "s.json"))

    assert result.exit_code == 0, result.stderr
    patched = read_blob(layout, ref_descriptor(layout, "latest-patched")["digest"])
    assert "index" in patched["mediaType"]
    platforms = [m.get("platform") for m in patched["manifests"]]
    assert platforms == [m.get("platform") for m in original["manifests"]]
    for before, after in zip(original["manifests"][:2], patched["manifests"][:2], strict=True):
        assert after["digest"] != before["digest"]
    assert patched["manifests"][2] == extra
    assert patched["annotations"]["org.example.kept"] == "yes"
    added = [k for k in patched["annotations"] if k.startswith(PATCH_ANNOTATION_PREFIX)]
    assert added
    statuses = [p["status"] for p in json.loads((tmp_path / "s.json").read_text())["platforms"]]
    assert statuses == ["patched", "patched"]

    # The amd64 image of the index passes the apt oracle like a single image.
    single = tmp_path / "amd64"
    skopeo_copy(f"oci:{layout}:latest-patched", f"oci:{single}:latest",
                ["--override-arch", "amd64", "--override-os", "linux"])
    oracle = AptOracle(images.unpack_layout(single, "latest", tmp_path / "rootfs"))
    assert oracle.pending_upgrades() == []


def test_report_for_other_distribution_writes_nothing(images: Images, tmp_path: Path) -> None:
    layout = images.layout_copy("debian-bookworm", tmp_path / "layout")
    report = {"SchemaVersion": 2, "Metadata": {"OS": {"Family": "alpine", "Name": "3.20.1"}},
              "Results": [{"Target": "x", "Class": "os-pkgs", "Type": "alpine",
                           "Vulnerabilities": [{"VulnerabilityID": "CVE-2024-0001",
                                                "PkgName": "musl", "InstalledVersion": "1.2.5-r0",
                                                "FixedVersion": "1.2.5-r1"}]}]}
    (tmp_path / "report.json").write_text(json.dumps(report))
    before = layout_state(layout)

    result = run("patch", "-i", f"oci:{layout}:latest", "-r", str(tmp_path / "report.json"))

    assert result.exit_code == 1
    assert "alpine" in result.stderr
    assert layout_state(layout) == before


DEMO = Path(__file__).resolve().parents[2] / "examples"


def dpkg_versions(rootfs: Path) -> dict[str, str]:
    output = subprocess.run(
        ["dpkg-query", f"--admindir={rootfs}/var/lib/dpkg", "-W", "-f", "${Package}\t${Version}\n"],
        check=True, capture_output=True, text=True,
    ).stdout
    return dict(line.split("\t") for line in output.splitlines())


def test_demo_command_patches_demo(images: Images, tmp_path: Path) -> None:
    from debian.debian_support import version_compare

    shutil.copytree(DEMO, tmp_path / "examples")
    report = json.loads((tmp_path / "examples" / "demo-report.json").read_text())
    fixed = {v["PkgName"]: v["FixedVersion"] for v in report["Results"][0]["Vulnerabilities"]}

    result = run("patch", "-i", f"oci:{tmp_path}/examples/demo:bookworm",
                 "-r", f"{tmp_path}/examples/demo-report.json")

    assert result.exit_code == 0, result.stderr
    assert "linux/amd64" in result.stderr
    assert "patched" in result.stderr
    rootfs = images.unpack_layout(tmp_path / "examples" / "demo", "bookworm-patched",
                                  tmp_path / "root")
    installed = dpkg_versions(rootfs)
    for name, version in fixed.items():
        assert version_compare(installed[name], version) >= 0, name
    audit = subprocess.run(["dpkg", f"--admindir={rootfs}/var/lib/dpkg", "--audit"],
                           capture_output=True, text=True, check=False)
    assert audit.stdout.strip() == ""


def test_report_version_drift_warns(tmp_path: Path) -> None:
    shutil.copytree(DEMO, tmp_path / "examples")
    path = tmp_path / "examples" / "demo-report.json"
    report = json.loads(path.read_text())
    first = report["Results"][0]["Vulnerabilities"][0]
    first["InstalledVersion"] = "0.0-drifted"
    path.write_text(json.dumps(report))

    result = run("plan", "-i", f"oci:{tmp_path}/examples/demo:bookworm", "-r", str(path))

    assert result.exit_code == 0, result.stderr
    assert "0.0-drifted" in result.stderr
    assert f"update        {first['PkgName']}:" in result.stdout


def test_platform_filter_carries_other_over(images: Images, tmp_path: Path) -> None:
    layout = images.layout_copy("multiplatform-bookworm", tmp_path / "layout")
    original = read_blob(layout, ref_descriptor(layout, "latest")["digest"])

    result = run("patch", "-i", f"oci:{layout}:latest", "--platform", "linux/arm64")

    assert result.exit_code == 0, result.stderr
    patched = read_blob(layout, ref_descriptor(layout, "latest-patched")["digest"])
    by_arch = {m["platform"]["architecture"]: m for m in patched["manifests"]}
    before = {m["platform"]["architecture"]: m for m in original["manifests"]}
    assert by_arch["amd64"] == before["amd64"]
    assert by_arch["arm64"]["digest"] != before["arm64"]["digest"]


def test_unreachable_fix_fails_unless_ignore_errors(tmp_path: Path) -> None:
    shutil.copytree(DEMO, tmp_path / "examples")
    layout = tmp_path / "examples" / "demo"
    path = tmp_path / "examples" / "demo-report.json"
    report = json.loads(path.read_text())
    unreachable = report["Results"][0]["Vulnerabilities"][0]
    unreachable["FixedVersion"] = "9:99.0-1"
    path.write_text(json.dumps(report))
    before = layout_state(layout)
    args = ["patch", "-i", f"oci:{layout}:bookworm", "-r", str(path),
            "--summary", str(tmp_path / "s.json")]

    failed = run(*args)

    assert failed.exit_code == 1
    assert f"package {unreachable['PkgName']} cannot be updated" in failed.stderr
    assert layout_state(layout) == before
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["result"] is None
    assert summary["platforms"][0]["status"] == "failed"

    ignored = run(*args, "--ignore-errors")

    assert ignored.exit_code == 0, ignored.stderr
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["result"]["digest"] == ref_descriptor(layout, "bookworm-patched")["digest"]
    statuses = {p["name"]: p["status"] for p in summary["platforms"][0]["packages"]}
    assert statuses[unreachable["PkgName"]] != "updated"
    assert "updated" in statuses.values()


def test_docker_archive_keeps_repository(tmp_path: Path) -> None:
    archive = tmp_path / "demo.tar"
    skopeo_copy(f"oci:{DEMO}/demo:bookworm", f"docker-archive:{archive}:example.com/demo:bookworm",
                [])

    result = run("patch", "-i", f"docker-archive:{archive}")

    assert result.exit_code == 0, result.stderr
    patched = tmp_path / "demo-patched.tar"
    with tarfile.open(patched) as tar:
        stream = tar.extractfile("manifest.json")
        assert stream is not None
        manifest = json.loads(stream.read())
    assert manifest[0]["RepoTags"] == ["example.com/demo:bookworm-patched"]


def test_read_only_destination_layout_exit_1(tmp_path: Path) -> None:
    source = tmp_path / "source"
    readonly = tmp_path / "readonly"
    shutil.copytree(DEMO / "demo", source)
    shutil.copytree(DEMO / "demo", readonly)
    # Root ignores file modes, so a read-only bind mount makes the layout really read-only.
    mounted = subprocess.run(["mount", "--bind", str(readonly), str(readonly)],
                             capture_output=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot bind-mount here: {mounted.stderr.decode().strip()}")
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(readonly)], check=True,
                       capture_output=True)
        before = layout_state(readonly)

        result = run("patch", "-i", f"oci:{source}:bookworm", "--dest", f"oci:{readonly}:bookworm")

        assert layout_state(readonly) == before
    finally:
        subprocess.run(["umount", str(readonly)], check=True)
    assert result.exit_code == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1
    assert str(readonly) in lines[0]


def test_registry_image_loads_into_daemon(
    images: Images, registry_plain: Registry, docker_daemon: DockerDaemon, tmp_path: Path
) -> None:
    source = f"{registry_plain.host}/suture/daemon:bookworm"
    skopeo_copy(f"oci:{images.layout('debian-bookworm')}:latest", f"docker://{source}",
                ["--dest-tls-verify=false"])
    env = dict(docker_daemon.env)

    result = run("patch", "-i", source, "--summary", str(tmp_path / "s.json"), env=env)

    assert result.exit_code == 0, result.stderr
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["result"]["reference"].startswith("docker-daemon:")
    inspected = subprocess.run(
        ["docker", "image", "inspect", "--format", "{{len .RootFS.Layers}}",
         f"{registry_plain.host}/suture/daemon:bookworm-patched"],
        env={**os.environ, **env}, capture_output=True, text=True, check=True, timeout=60,
    )
    assert inspected.stdout.strip() == "2"


def _platform_report(arch: str, name: str, installed: str, fixed: str) -> dict[str, Any]:
    return {
        "SchemaVersion": 2,
        "Metadata": {"OS": {"Family": "debian", "Name": "12"},
                     "ImageConfig": {"architecture": arch, "os": "linux"}},
        "Results": [{"Target": f"{arch} (debian 12)", "Class": "os-pkgs", "Type": "debian",
                     "Vulnerabilities": [{"VulnerabilityID": "CVE-2026-0001", "PkgName": name,
                                          "InstalledVersion": installed, "FixedVersion": fixed,
                                          "Status": "fixed"}]}],
    }


def test_failed_platform_carried_over_with_ignore_errors(images: Images, tmp_path: Path) -> None:
    layout = images.layout_copy("multiplatform-bookworm", tmp_path / "layout")
    original = read_blob(layout, ref_descriptor(layout, "latest")["digest"])
    planned = run("plan", "-i", f"oci:{layout}:latest", "--summary", str(tmp_path / "plan.json"))
    assert planned.exit_code == 0, planned.stderr
    platforms = json.loads((tmp_path / "plan.json").read_text())["platforms"]
    amd64 = next(p for p in platforms if p["platform"] == "linux/amd64")
    update = next(p for p in amd64["packages"] if p["status"] == "update")
    reports = tmp_path / "reports"
    reports.mkdir()
    (reports / "amd64.json").write_text(json.dumps(
        _platform_report("amd64", update["name"], update["installed"], update["target"])))
    (reports / "arm64.json").write_text(json.dumps(
        _platform_report("arm64", update["name"], update["installed"], "9:99.0-1")))
    before = layout_state(layout)

    failed = run("patch", "-i", f"oci:{layout}:latest", "-r", str(reports))

    assert failed.exit_code == 1
    assert "linux/arm64" in failed.stderr
    assert layout_state(layout) == before

    ignored = run("patch", "-i", f"oci:{layout}:latest", "-r", str(reports), "--ignore-errors")

    assert ignored.exit_code == 0, ignored.stderr
    patched = read_blob(layout, ref_descriptor(layout, "latest-patched")["digest"])
    by_arch = {m["platform"]["architecture"]: m for m in patched["manifests"]}
    before_arch = {m["platform"]["architecture"]: m for m in original["manifests"]}
    assert len(patched["manifests"]) == len(original["manifests"])
    assert by_arch["arm64"] == before_arch["arm64"]
    assert by_arch["amd64"]["digest"] != before_arch["amd64"]["digest"]
