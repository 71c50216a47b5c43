"""Checks that the shared fixtures are what tests rely on: real, vulnerable, reachable."""

from __future__ import annotations

import http.client
import json
import os
import ssl
import subprocess
import tarfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Images
from tests.harness.debrepo import download_debs
from tests.harness.docker import DockerDaemon
from tests.harness.faults import (
    DebianRepositoryServer,
    FaultProxy,
    FaultRule,
    TestRepository,
    build_test_repository,
)
from tests.harness.oracle import AptOracle
from tests.harness.registry import Registry

pytestmark = pytest.mark.integration

ALL_IMAGES = (
    "debian-bookworm",
    "debian-bookworm-layered",
    "distroless-bookworm",
    "debian-trixie",
    "debian-bookworm-arm64",
    "multiplatform-bookworm",
)
ELF_MACHINE_AARCH64 = 183


def _blob(layout: Path, digest: str) -> Path:
    return layout / "blobs" / "sha256" / digest.split(":", 1)[1]


def _json_blob(layout: Path, digest: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(_blob(layout, digest).read_text(encoding="utf-8"))
    return data


def _manifest(layout: Path) -> dict[str, Any]:
    (entry,) = json.loads((layout / "index.json").read_text(encoding="utf-8"))["manifests"]
    return _json_blob(layout, entry["digest"])


def _skopeo(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["skopeo", *args], capture_output=True, text=True, check=False, timeout=300
    )


# Images.


@pytest.mark.parametrize("name", ALL_IMAGES)
def test_layout_has_single_latest_ref(images: Images, name: str) -> None:
    index = json.loads((images.layout(name) / "index.json").read_text(encoding="utf-8"))
    refs = [m["annotations"]["org.opencontainers.image.ref.name"] for m in index["manifests"]]
    assert refs == ["latest"]


@pytest.mark.parametrize("name", ALL_IMAGES)
def test_skopeo_inspects_layout(images: Images, name: str) -> None:
    result = _skopeo("inspect", "--raw", f"oci:{images.layout(name)}:latest")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["schemaVersion"] == 2


def test_bookworm_has_pending_security_upgrades(images: Images) -> None:
    upgrades = AptOracle(images.rootfs("debian-bookworm")).pending_upgrades()
    security = [u for u in upgrades if u.is_security]
    assert security, "the point-release fixture should lag behind bookworm-security"


def test_bookworm_upgrades_start_from_installed(images: Images) -> None:
    oracle = AptOracle(images.rootfs("debian-bookworm"))
    installed = oracle.installed_versions()
    for upgrade in oracle.pending_upgrades():
        assert installed[upgrade.name] == upgrade.installed


def test_bookworm_dpkg_audit_clean(images: Images) -> None:
    assert AptOracle(images.rootfs("debian-bookworm")).audit() == []


def test_bookworm_verify_clean(images: Images) -> None:
    oracle = AptOracle(images.rootfs("debian-bookworm"))
    assert oracle.verify(["libc6", "zlib1g", "base-files"]) == []


def test_bookworm_sources_use_host_mirror(images: Images) -> None:
    from tests.harness.mirror import debian_mirror_url, security_mirror_url

    rootfs = images.rootfs("debian-bookworm")
    text = (rootfs / "etc/apt/sources.list.d/debian.sources").read_text(encoding="utf-8")
    assert f"URIs: {debian_mirror_url()}" in text
    assert f"URIs: {security_mirror_url()}" in text
    assert "Suites: bookworm-security" in text
    assert not (rootfs / "etc/apt/sources.list").exists()
    assert (rootfs / "usr/share/keyrings/debian-archive-keyring.gpg").exists()


def test_bookworm_has_no_apt_lists(images: Images) -> None:
    layout = images.layout("debian-bookworm")
    (layer,) = _manifest(layout)["layers"]
    with tarfile.open(_blob(layout, layer["digest"])) as archive:
        names = archive.getnames()
    assert "var/lib/apt/lists" in names
    assert [n for n in names if n.startswith("var/lib/apt/lists/") and "Packages" in n] == []
    assert [n for n in names if n.startswith("var/cache/apt/") and n.endswith(".bin")] == []


def test_trixie_is_trixie(images: Images) -> None:
    rootfs = images.rootfs("debian-trixie")
    os_release = (rootfs / "etc/os-release").read_text(encoding="utf-8")
    assert "VERSION_CODENAME=trixie" in os_release
    assert "Suites: trixie-security" in (
        rootfs / "etc/apt/sources.list.d/debian.sources"
    ).read_text(encoding="utf-8")


def test_trixie_dpkg_audit_clean(images: Images) -> None:
    assert AptOracle(images.rootfs("debian-trixie")).audit() == []


def test_layered_has_whiteout_and_opaque(images: Images) -> None:
    layout = images.layout("debian-bookworm-layered")
    layers = _manifest(layout)["layers"]
    assert len(layers) >= 3
    with tarfile.open(_blob(layout, layers[-1]["digest"])) as archive:
        names = archive.getnames()
    assert "usr/share/doc/openssl/.wh.changelog.Debian.gz" in names
    assert "usr/share/doc/libssl3/.wh..wh..opq" in names


def test_layered_rootfs_merges_layers(images: Images) -> None:
    rootfs = images.rootfs("debian-bookworm-layered")
    assert not (rootfs / "usr/share/doc/openssl/changelog.Debian.gz").exists()
    assert sorted(p.name for p in (rootfs / "usr/share/doc/libssl3").iterdir()) == ["copyright"]
    assert "suture test harness" in (rootfs / "etc/ssl/openssl.cnf").read_text(encoding="utf-8")


def test_layered_conffile_edit_visible_to_dpkg(images: Images) -> None:
    problems = AptOracle(images.rootfs("debian-bookworm-layered")).verify(["openssl"])
    assert any(line.endswith(" c /etc/ssl/openssl.cnf") for line in problems), problems


def test_distroless_has_status_d_only(images: Images) -> None:
    rootfs = images.rootfs("distroless-bookworm")
    assert not (rootfs / "var/lib/dpkg/status").exists()
    assert (rootfs / "var/lib/dpkg/status.d/libc6").exists()
    assert not (rootfs / "bin/sh").exists()
    assert not (rootfs / "usr/bin/apt-get").exists()
    assert not (rootfs / "etc/apt/sources.list.d").exists()


def test_distroless_status_name_differs_from_package(images: Images) -> None:
    status = images.rootfs("distroless-bookworm") / "var/lib/dpkg/status.d/libssl3-openssl"
    assert "Package: libssl3\n" in status.read_text(encoding="utf-8")


def test_distroless_versions_readable(images: Images) -> None:
    versions = AptOracle(images.rootfs("distroless-bookworm")).installed_versions()
    assert {"libc6", "libssl3", "zlib1g", "tzdata"} <= set(versions)


def test_arm64_binaries_are_aarch64(images: Images) -> None:
    rootfs = images.rootfs("debian-bookworm-arm64")
    libc = rootfs / "usr/lib/aarch64-linux-gnu/libc.so.6"
    header = libc.read_bytes()[:20]
    assert int.from_bytes(header[18:20], "little") == ELF_MACHINE_AARCH64
    assert (rootfs / "lib").is_symlink()


def test_arm64_dpkg_audit_clean(images: Images) -> None:
    oracle = AptOracle(images.rootfs("debian-bookworm-arm64"))
    assert oracle.architecture == "arm64"
    assert oracle.audit() == []


def test_arm64_has_pending_upgrades(images: Images) -> None:
    upgrades = AptOracle(images.rootfs("debian-bookworm-arm64")).pending_upgrades()
    assert any(u.is_security and u.architecture in ("arm64", "all") for u in upgrades)


def test_multiplatform_index_platforms(images: Images) -> None:
    layout = images.layout("multiplatform-bookworm")
    (entry,) = json.loads((layout / "index.json").read_text(encoding="utf-8"))["manifests"]
    assert entry["mediaType"] == "application/vnd.oci.image.index.v1+json"
    index = _json_blob(layout, entry["digest"])
    platforms = sorted(m["platform"]["architecture"] for m in index["manifests"])
    assert platforms == ["amd64", "arm64"]
    assert "org.opencontainers.image.created" in index["annotations"]


# Registries.


def _get(
    registry: Registry, path: str, context: ssl.SSLContext | None = None, auth: bool = False
) -> int:
    headers = registry.auth_header() if auth else {}
    request = urllib.request.Request(f"{registry.url}{path}", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as response:
            status: int = response.status
            return status
    except urllib.error.HTTPError as error:
        return error.code


def test_registry_plain_answers(registry_plain: Registry) -> None:
    assert _get(registry_plain, "/v2/") == 200


def test_registry_plain_logs_requests(registry_plain: Registry) -> None:
    before = registry_plain.request_count()
    _get(registry_plain, "/v2/_catalog")
    assert registry_plain.request_count() == before + 1


def test_registry_tls_needs_ca(registry_tls: Registry) -> None:
    with pytest.raises(urllib.error.URLError):
        _get(registry_tls, "/v2/", context=ssl.create_default_context())
    assert _get(registry_tls, "/v2/", context=registry_tls.ssl_context()) == 200


def test_registry_auth_rejects_anonymous(registry_auth: Registry) -> None:
    assert _get(registry_auth, "/v2/", context=registry_auth.ssl_context()) == 401


def test_registry_auth_accepts_credentials(registry_auth: Registry) -> None:
    assert _get(registry_auth, "/v2/", context=registry_auth.ssl_context(), auth=True) == 200


def test_registry_auth_docker_config(registry_auth: Registry) -> None:
    config = json.loads((registry_auth.docker_config / "config.json").read_text(encoding="utf-8"))
    assert registry_auth.host in config["auths"]


def test_skopeo_pushes_to_auth_registry(images: Images, registry_auth: Registry) -> None:
    assert registry_auth.ca_file is not None
    certs = registry_auth.ca_file.parent
    dest = f"docker://{registry_auth.host}/harness/distroless:latest"
    creds = f"{registry_auth.username}:{registry_auth.password}"
    pushed = _skopeo(
        "copy",
        "--dest-cert-dir",
        str(certs),
        "--dest-creds",
        creds,
        f"oci:{images.layout('distroless-bookworm')}:latest",
        dest,
    )
    assert pushed.returncode == 0, pushed.stderr
    anonymous = _skopeo("inspect", "--cert-dir", str(certs), dest)
    assert anonymous.returncode != 0


# Docker daemon.


def test_docker_daemon_runs_fixture(images: Images, docker_daemon: DockerDaemon) -> None:
    socket_path = docker_daemon.host.removeprefix("unix://")
    loaded = _skopeo(
        "copy",
        "--dest-daemon-host",
        docker_daemon.host,
        f"oci:{images.layout('debian-bookworm')}:latest",
        "docker-daemon:harness/bookworm:latest",
    )
    assert loaded.returncode == 0, loaded.stderr
    assert os.path.exists(socket_path)
    result = docker_daemon.run(
        "run", "--rm", "--network", "none", "harness/bookworm:latest", "cat", "/etc/debian_version"
    )
    assert result.stdout.strip().startswith("12.")


# Fault-injection servers (declared mocks), checked with real clients.


@pytest.fixture(scope="module")
def test_repository(tmp_path_factory: pytest.TempPathFactory) -> TestRepository:
    work = tmp_path_factory.mktemp("test-repository")
    debs = download_debs(["zlib1g", "libzstd1"], "bookworm", "amd64", work / "debs")
    return build_test_repository(work / "repo", list(debs.values()), suite="bookworm-security")


def _apt_get(
    repository: TestRepository, url: str, work: Path, *args: str
) -> subprocess.CompletedProcess[str]:
    """Run the host's apt-get on only the test repository, with all state under `work`."""
    sources = work / "sources.list"
    sources.write_text(
        f"deb [signed-by={repository.keyring}] {url} {repository.suite} {repository.component}\n",
        encoding="utf-8",
    )
    (work / "parts").mkdir(exist_ok=True)
    (work / "lists/partial").mkdir(parents=True, exist_ok=True)
    (work / "archives/partial").mkdir(parents=True, exist_ok=True)

    options = [
        f"Dir::Etc::SourceList={sources}",
        f"Dir::Etc::SourceParts={work / 'parts'}",
        f"Dir::State::Lists={work / 'lists'}",
        f"Dir::Cache={work}",
        f"Dir::Cache::Archives={work / 'archives'}",
        "APT::Sandbox::User=root",
        "Debug::NoLocking=1",
        "Acquire::Retries=0",
    ]

    # The host's apt.conf.d may relax checks (Check-Valid-Until), so read none of it.
    config = work / "apt.conf"
    config.write_text(f'Dir::Etc::Parts "{work / "parts"}";\n', encoding="utf-8")
    command = ["apt-get", "-q"]
    for option in options:
        command += ["-o", option]
    return subprocess.run(
        [*command, *args],
        env={**os.environ, "APT_CONFIG": str(config)},
        capture_output=True,
        text=True,
        check=False,
        cwd=work / "archives",
        timeout=120,
    )


def test_repository_server_good_updates(test_repository: TestRepository, tmp_path: Path) -> None:
    with DebianRepositoryServer(test_repository) as server:
        result = _apt_get(test_repository, server.url, tmp_path, "update")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "W:" not in result.stderr


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        ("wrong-key", "NO_PUBKEY"),
        ("tampered-inrelease", "BADSIG"),
        ("expired", "expired"),
        ("corrupt-packages", "Hash Sum mismatch"),
    ],
)
def test_repository_server_faults_rejected(
    test_repository: TestRepository, tmp_path: Path, fault: str, message: str
) -> None:
    with DebianRepositoryServer(test_repository) as server:
        server.set_faults(fault)
        result = _apt_get(test_repository, server.url, tmp_path, "update")
    output = result.stdout + result.stderr
    assert message in output


def test_repository_server_corrupt_deb(test_repository: TestRepository, tmp_path: Path) -> None:
    with DebianRepositoryServer(test_repository) as server:
        assert _apt_get(test_repository, server.url, tmp_path, "update").returncode == 0
        server.set_faults("corrupt-deb")
        result = _apt_get(test_repository, server.url, tmp_path, "download", "zlib1g")
    assert result.returncode != 0
    assert "Hash Sum mismatch" in result.stdout + result.stderr


def test_fault_proxy_status_then_pass(registry_plain: Registry) -> None:
    with FaultProxy(registry_plain.host) as proxy:
        proxy.add(FaultRule("status", path=r"^/v2/$", status=429, retry_after="1"))
        url = f"http://{proxy.host}/v2/"
        with pytest.raises(urllib.error.HTTPError) as raised:
            urllib.request.urlopen(url, timeout=10)
        assert raised.value.code == 429
        assert raised.value.headers["Retry-After"] == "1"
        with urllib.request.urlopen(url, timeout=10) as response:
            assert response.status == 200
    assert [r.action for r in proxy.requests] == ["status", "pass"]


def test_fault_proxy_drops_connection(registry_plain: Registry) -> None:
    with FaultProxy(registry_plain.host) as proxy:
        proxy.add(FaultRule("drop"))
        with pytest.raises((urllib.error.URLError, http.client.HTTPException, OSError)):
            urllib.request.urlopen(f"http://{proxy.host}/v2/", timeout=10)


def test_fault_proxy_stall_is_bounded(registry_plain: Registry) -> None:
    with FaultProxy(registry_plain.host) as proxy:
        proxy.add(FaultRule("stall", delay=1.0))
        started = time.monotonic()
        with urllib.request.urlopen(f"http://{proxy.host}/v2/", timeout=10) as response:
            assert response.status == 200
        assert 1.0 <= time.monotonic() - started < 10


def test_fault_proxy_forwards_push(images: Images, registry_plain: Registry) -> None:
    with FaultProxy(registry_plain.host) as proxy:
        result = _skopeo(
            "copy",
            "--dest-tls-verify=false",
            f"oci:{images.layout('distroless-bookworm')}:latest",
            f"docker://{proxy.host}/harness/proxied:latest",
        )
    assert result.returncode == 0, result.stderr
    assert any(r.method == "PUT" and "/manifests/" in r.path for r in proxy.requests)


def test_fault_proxy_truncates_body(registry_plain: Registry) -> None:
    with FaultProxy(registry_plain.host) as proxy:
        proxy.add(FaultRule("truncate", path=r"^/v2/_catalog", keep_bytes=3))
        with pytest.raises(http.client.IncompleteRead):
            urllib.request.urlopen(f"http://{proxy.host}/v2/_catalog", timeout=10).read()


def test_oracle_leaves_rootfs_unchanged(images: Images, tmp_path: Path) -> None:
    from tests.harness.ocilayout import snapshot

    rootfs = images.fresh_rootfs("debian-bookworm", tmp_path / "rootfs")
    before = snapshot(rootfs)
    oracle = AptOracle(rootfs)
    oracle.pending_upgrades(reuse=False)
    oracle.audit()
    assert snapshot(rootfs) == before


def test_oracle_reuses_result_only_for_same_inputs(images: Images, tmp_path: Path) -> None:
    rootfs = images.fresh_rootfs("debian-bookworm", tmp_path / "rootfs")
    oracle = AptOracle(rootfs)
    from_apt = oracle.pending_upgrades(reuse=False)
    assert from_apt, "the fixture should have pending upgrades"
    assert oracle.pending_upgrades() == from_apt

    # Holding the first upgradable package (`apt-mark hold` writes the same status) makes the
    # stored result stale, so apt must run again and keep that package back.
    first = from_apt[0]
    status = rootfs / "var/lib/dpkg/status"
    stanzas = status.read_text(encoding="utf-8").split("\n\n")
    edited = [
        stanza.replace("\nStatus: install ok installed\n", "\nStatus: hold ok installed\n")
        if stanza.startswith(f"Package: {first.name}\n") else stanza
        for stanza in stanzas
    ]
    assert edited != stanzas
    status.write_text("\n\n".join(edited), encoding="utf-8")
    assert first.name not in {u.name for u in oracle.pending_upgrades()}


def test_oracle_result_key_covers_inputs(images: Images, tmp_path: Path) -> None:
    rootfs = images.fresh_rootfs("debian-bookworm", tmp_path / "rootfs")
    oracle = AptOracle(rootfs)
    releases = oracle._source_release_digests()
    assert releases, "the fixture's sources should name release files the mirror serves"
    keys = [oracle._result_key(False, releases), oracle._result_key(True, releases)]
    status = rootfs / "var/lib/dpkg/status"
    status.write_bytes(status.read_bytes() + b"\n")
    keys.append(oracle._result_key(False, releases))
    (rootfs / "etc/apt/apt.conf.d/99suture-test").write_text('APT::Get::Show-Versions "1";\n')
    keys.append(oracle._result_key(False, releases))
    keys.append(oracle._result_key(False, [*releases, "0" * 64]))
    assert len(set(keys)) == len(keys)


def test_release_urls_reads_sources_like_apt(tmp_path: Path) -> None:
    from tests.harness.oracle import _release_urls

    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "a.sources").write_text(
        "Types: deb deb-src\nURIs: http://one.example/debian/\nSuites: s1 s1-updates\n"
        "Components: main\n\n"
        "Types: deb\nURIs: http://off.example/\nSuites: x\nEnabled: false\n\n"
        "Types: deb\nURIs: http://zero.example/\nSuites: x\nEnabled: 0\n\n"
        "Types: deb-src\nURIs: http://src.example/\nSuites: x\n")
    (tmp_path / "sources.list").write_text(
        "# comment\n"
        "deb [arch=amd64 signed-by=/k.gpg] http://two.example/debian s2 main # trailing\n"
        "deb-src http://src.example/ y main\n"
        "deb http://flat.example/repo ./\n")
    assert _release_urls(tmp_path) == [
        "http://flat.example/repo/./InRelease",
        "http://one.example/debian/dists/s1-updates/InRelease",
        "http://one.example/debian/dists/s1/InRelease",
        "http://two.example/debian/dists/s2/InRelease",
    ]
