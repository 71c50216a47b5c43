"""dpkg planning against the real Debian mirror: apt agreement, distroless, and failures.

The reference for update-all is apt itself (`AptOracle`): the image's own apt in a chroot of a
copy of the image, or for a foreign architecture the host's apt pointed at the copy. Faults come
from the harness's fault repository (a mock that serves real .deb files signed with a test key)
or, on the real mirror, from changing the expected hash or the clock, as the comment in each
test states.
"""

from __future__ import annotations

import shutil
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from suture.ecosystems.base import PackageStatus, Plan, PlanOptions
from suture.ecosystems.dpkg.database import read_database
from suture.ecosystems.dpkg.ecosystem import DpkgEcosystem, default_cache_dir
from suture.ecosystems.dpkg.fetch import fetch_packages, new_client
from suture.ecosystems.dpkg.index import PackagesIndex
from suture.ecosystems.dpkg.release import (
    fetch_index,
    fetch_release,
    image_certificates,
    shipped_certificates,
    verify_clearsigned,
)
from suture.ecosystems.dpkg.sources import AptSource
from suture.errors import PackageError, RepositoryError, SignatureError
from suture.image.merged import DirectoryFileSystem
from tests.harness.debrepo import download_debs
from tests.harness.faults import DebianRepositoryServer, TestRepository, build_test_repository
from tests.harness.mirror import debian_mirror_url, security_mirror_url
from tests.harness.oracle import AptOracle

pytestmark = pytest.mark.integration


def _plan(rootfs: Path, cache: Path, **options: Any) -> Plan:
    return DpkgEcosystem().plan(
        DirectoryFileSystem(rootfs), None, PlanOptions(cache_dir=cache, **options)
    )


@pytest.mark.skipif(shutil.which("apt-get") is None, reason="apt-get is not on this machine")
@pytest.mark.parametrize(
    "image",
    ["debian-bookworm", "debian-trixie", "debian-bookworm-layered", "debian-bookworm-arm64"],
)
def test_update_all_matches_apt(images: Any, tmp_path: Path, image: str) -> None:
    rootfs = images.fresh_rootfs(image, tmp_path / "rootfs")
    # Plan from suture's default cache, as a user's repeated runs do, where indexes are found
    # by their signed hash. The tests below fetch into empty caches.
    plan = _plan(rootfs, default_cache_dir())
    architecture = read_database(DirectoryFileSystem(rootfs)).native_architecture
    expected = {u.name: u.candidate for u in AptOracle(rootfs, architecture).pending_upgrades()}
    planned = {p.name: p.target for p in plan.updates}
    assert planned == expected
    assert set(plan.downloads) == {f"{p.name}:{p.architecture}" for p in plan.updates}


def test_distroless_plans_with_host_sources(images: Any, tmp_path: Path) -> None:
    rootfs = images.rootfs("distroless-bookworm")
    fs = DirectoryFileSystem(rootfs)
    assert image_certificates(fs) == [], "distroless has no apt keys, so shipped keys are used"
    database = read_database(fs)
    renamed = [p for p in database.packages if Path(p.file).name != p.name]
    plan = _plan(rootfs, tmp_path / "cache", host_apt_dir=Path("/etc/apt"))
    assert plan.distribution.endswith("bookworm")
    assert renamed, "the fixture has status.d files named differently from their package"
    for package in plan.updates:
        assert database.find(package.name, package.architecture) is not None
    # Dependencies the image never had (ca-certificates on openssl) keep nothing back.
    held = [p for p in plan.packages if p.status is PackageStatus.HELD]
    assert held == []


def _bookworm_source() -> AptSource:
    return AptSource(debian_mirror_url(), "bookworm", ("main",), origin="host")


def test_bookworm_main_index_parses(empty_fs: DirectoryFileSystem) -> None:
    # The index comes through suture's default cache: this test is about parsing the real
    # index, and the index-fetch tests below start from empty caches.
    with new_client() as client:
        release = fetch_release(client, _bookworm_source(), empty_fs, list)
        data = fetch_index(client, release, "main/binary-amd64/Packages", default_cache_dir())
    assert data is not None
    index = PackagesIndex(data.decode(), base_url=_bookworm_source().uri, suite="bookworm")
    assert len(index) > 50_000
    assert index.candidates("libc6")


def test_bad_signature_is_rejected(tmp_path: Path) -> None:
    with new_client() as client:
        response = client.get(f"{_bookworm_source().dist_url}/InRelease")
    # Fault injection: one byte of the signed text is changed after download.
    data = response.content.replace(b"Codename: bookworm", b"Codename: bookwork", 1)
    with pytest.raises(SignatureError, match="InRelease"):
        verify_clearsigned(data, shipped_certificates(), "InRelease of bookworm")


def test_expired_valid_until_names_suite(empty_fs: Any) -> None:
    # The security archive sets Valid-Until; the main archive does not.
    source = AptSource(security_mirror_url(), "bookworm-security", ("main",), origin="host")
    # Fault injection: the clock is moved a year ahead so Valid-Until has passed.
    later = datetime.now(UTC) + timedelta(days=365)
    with new_client() as client:
        with pytest.raises(RepositoryError, match="bookworm-security"):
            fetch_release(client, source, empty_fs, list, now=later)
        release = fetch_release(client, source, empty_fs, list, now=later, allow_insecure=True)
    assert any("expired" in note for note in release.notes)


def test_tampered_index_is_rejected(empty_fs: Any, tmp_path: Path) -> None:
    with new_client() as client:
        release = fetch_release(client, _bookworm_source(), empty_fs, list)
        name = "main/binary-all/Packages.xz"
        entry = release.files[name]
        # Fault injection: the signed Release is made to list another hash.
        files = dict(release.files)
        files[name] = replace(entry, sha256="0" * 64)
        tampered = replace(release, files=files)
        with pytest.raises(RepositoryError, match="does not match the signed Release"):
            fetch_index(client, tampered, "main/binary-all/Packages", tmp_path)
    assert list((tmp_path / "indexes").iterdir()) == []


def test_tampered_package_leaves_cache_empty(images: Any, tmp_path: Path) -> None:
    plan = _plan(images.rootfs("debian-bookworm"), default_cache_dir())
    if not plan.downloads:
        pytest.skip("the debian-bookworm fixture has no pending updates on this mirror")
    key, package = sorted(plan.downloads.items(), key=lambda item: item[1].size)[0]
    # Fault injection: the plan expects another hash than the mirror serves.
    bad = replace(plan, downloads={key: replace(package, sha256="f" * 64)})
    cache = tmp_path / "packages-cache"
    with pytest.raises(PackageError, match=package.name) as raised:
        fetch_packages(bad, cache)
    assert package.url in str(raised.value)
    assert list((cache / "packages").iterdir()) == []


def test_fetch_packages_verifies_and_counts(images: Any, tmp_path: Path) -> None:
    plan = _plan(images.rootfs("debian-bookworm"), default_cache_dir())
    if not plan.downloads:
        pytest.skip("the debian-bookworm fixture has no pending updates on this mirror")
    smallest = sorted(plan.downloads.items(), key=lambda item: item[1].size)[:3]
    subset = replace(plan, downloads=dict(smallest))
    result = fetch_packages(subset, tmp_path / "packages-cache")
    assert result.bytes_downloaded == sum(p.size for _, p in smallest)
    assert set(result.paths) == {key for key, _ in smallest}
    again = fetch_packages(subset, tmp_path / "packages-cache")
    assert again.bytes_downloaded == 0


@pytest.fixture
def empty_fs(tmp_path: Path) -> DirectoryFileSystem:
    (tmp_path / "empty-root").mkdir()
    return DirectoryFileSystem(tmp_path / "empty-root")


# The harness's fault repository: real bookworm .deb files, signed with a throwaway key.

_FAULT_PACKAGES = ("zlib1g", "libzstd1")


@pytest.fixture(scope="module")
def fault_repository(tmp_path_factory: pytest.TempPathFactory) -> TestRepository:
    work = tmp_path_factory.mktemp("dpkg-fault-repository")
    debs = download_debs(_FAULT_PACKAGES, "bookworm", "amd64", work / "debs")
    return build_test_repository(work / "repo", list(debs.values()), suite="bookworm-security")


def _image_on_fault_repository(
    images: Any, tmp_path: Path, repository: TestRepository, url: str
) -> Path:
    """Copy debian-bookworm, point its apt at `url` only, and make the test packages older."""
    rootfs = images.fresh_rootfs("debian-bookworm", tmp_path / "rootfs")
    apt = rootfs / "etc/apt"
    for entry in (apt / "sources.list.d").iterdir():
        entry.unlink()
    (apt / "keyrings").mkdir(exist_ok=True)
    shutil.copyfile(repository.keyring, apt / "keyrings/test.gpg")
    (apt / "sources.list").write_text(
        f"deb [signed-by=/etc/apt/keyrings/test.gpg] {url} {repository.suite} main\n"
    )
    status = rootfs / "var/lib/dpkg/status"
    stanzas = status.read_text().split("\n\n")
    for number, stanza in enumerate(stanzas):
        name = stanza.split("\n", 1)[0].removeprefix("Package: ")
        if name in _FAULT_PACKAGES:
            lines = stanza.split("\n")
            lines = ["Version: 0.1-1" if ln.startswith("Version: ") else ln for ln in lines]
            stanzas[number] = "\n".join(lines)
    status.write_text("\n\n".join(stanzas))
    return rootfs


def test_fault_repository_good(
    images: Any, tmp_path: Path, fault_repository: TestRepository
) -> None:
    with DebianRepositoryServer(fault_repository) as server:
        rootfs = _image_on_fault_repository(images, tmp_path, fault_repository, server.url)
        plan = _plan(rootfs, tmp_path / "cache")
        result = fetch_packages(plan, tmp_path / "cache")
    assert sorted(p.name for p in plan.updates) == sorted(_FAULT_PACKAGES)
    assert set(result.paths) == set(plan.downloads)


@pytest.mark.parametrize(
    ("fault", "error", "message"),
    [
        ("wrong-key", SignatureError, "InRelease"),
        ("tampered-inrelease", SignatureError, "InRelease"),
        ("expired", RepositoryError, "bookworm-security .* expired"),
        ("corrupt-packages", RepositoryError, "does not match the signed Release"),
    ],
)
def test_fault_repository_metadata(
    images: Any,
    tmp_path: Path,
    fault_repository: TestRepository,
    fault: str,
    error: type[Exception],
    message: str,
) -> None:
    with DebianRepositoryServer(fault_repository) as server:
        rootfs = _image_on_fault_repository(images, tmp_path, fault_repository, server.url)
        server.set_faults(fault)
        with pytest.raises(error, match=message):
            _plan(rootfs, tmp_path / "cache")
        requested = list(server.requests)
    assert not any(path.endswith(".deb") for path in requested)
    assert not (tmp_path / "cache" / "packages").exists()


def test_fault_repository_corrupt_deb(
    images: Any, tmp_path: Path, fault_repository: TestRepository
) -> None:
    with DebianRepositoryServer(fault_repository) as server:
        rootfs = _image_on_fault_repository(images, tmp_path, fault_repository, server.url)
        plan = _plan(rootfs, tmp_path / "cache")
        server.set_faults("corrupt-deb")
        with pytest.raises(PackageError, match="does not match the signed index"):
            fetch_packages(plan, tmp_path / "cache")
    assert list((tmp_path / "cache" / "packages").iterdir()) == []
