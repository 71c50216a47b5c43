"""The unpack engine against real apt: the same upgrade done both ways must give the same files.

The fixture image is upgraded twice from the same .deb files: once by `apt-get upgrade` in a
chroot (which runs dpkg and every maintainer script), once by suture's engine into a staging
tree that is then applied like a layer. Every path the updated packages own must match in type,
content, mode, owner and symlink target, and their status stanzas must match field for field.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from suture.ecosystems.base import PackageStatus, PlannedPackage
from suture.ecosystems.dpkg.database import read_database, split_stanzas
from suture.ecosystems.dpkg.dbwrite import parse_fields
from suture.ecosystems.dpkg.debfile import DebFile
from suture.ecosystems.dpkg.unpack import ApplyResult, apply_updates
from suture.patch.staging import Staging
from tests.conftest import Images
from tests.harness.debrepo import download_printed_uris
from tests.harness.oracle import AptOracle, Upgrade, chroot_mounts
from tests.harness.paths import cache_root

pytestmark = pytest.mark.integration


def _payload_cache() -> Path:
    """Return where suture's engine keeps decompressed payloads for these tests.

    A cold run reads every payload from its .deb and fills this directory, and a warm run
    reads the cached copies. The unit tests compare both sources member by member.
    """
    return cache_root() / "payloads"

_CHROOT_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LC_ALL": "C",
    "DEBIAN_FRONTEND": "noninteractive",
    "HOME": "/root",
}


@dataclass(frozen=True)
class Upgraded:
    base: Path
    by_apt: Path
    by_suture: Path
    upgrades: tuple[Upgrade, ...]
    debs: dict[str, Path]
    result: ApplyResult


def _chroot(root: Path, *command: str) -> None:
    with chroot_mounts(root):
        subprocess.run(["chroot", str(root), *command], env=_CHROOT_ENV, check=True,
                       capture_output=True, text=True, timeout=900)


def _copy_tree(source: Path, dest: Path) -> Path:
    subprocess.run(["cp", "-a", str(source), str(dest)], check=True)
    return dest


def _materialise(staging: Staging, root: Path) -> None:
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit" / "dpkg_apply"))
    from applykit import materialise

    materialise(staging, root)


@pytest.fixture(scope="module")
def bookworm(images: Images, tmp_path_factory: pytest.TempPathFactory) -> Upgraded:
    return _upgrade_both_ways(images, "debian-bookworm", tmp_path_factory.mktemp("dpkg-apply"))


@pytest.fixture(scope="module")
def layered(images: Images, tmp_path_factory: pytest.TempPathFactory) -> Upgraded:
    return _upgrade_both_ways(images, "debian-bookworm-layered",
                              tmp_path_factory.mktemp("dpkg-apply-layered"))


@pytest.fixture(scope="module")
def trixie(images: Images, tmp_path_factory: pytest.TempPathFactory) -> Upgraded:
    return _upgrade_both_ways(images, "debian-trixie", tmp_path_factory.mktemp("dpkg-apply-trixie"),
                              require_upgrades=False)


def _upgrade_both_ways(
    images: Images, name: str, work: Path, *, require_upgrades: bool = True
) -> Upgraded:
    # The session's shared copy, which nothing below writes to.
    base = images.rootfs(name)
    upgrades = tuple(AptOracle(base).pending_upgrades())
    if not upgrades and not require_upgrades:
        pytest.skip(f"the mirror has no newer version of any package in {name}")
    assert upgrades, "the fixture image has no pending upgrades, so nothing would be tested"

    # The apt reference depends only on the image and the mirror state, so it is cached with
    # the fixture images, and a warm run reads it where it is. Tests only read `by_apt`.
    reference = images.cache.derived(f"apt-reference-{name}",
                                     lambda out: _apt_reference(base, out))
    by_apt = reference / "root"
    debs = {DebFile(path).name: path for path in sorted((reference / "debs").glob("*.deb"))}

    by_suture = images.fresh_rootfs(name, work / "by-suture")
    view = _directory_view(base)
    planned = [
        (PlannedPackage(u.name, u.architecture, u.installed, "", u.candidate,
                        PackageStatus.UPDATE), debs[u.name])
        for u in upgrades
    ]
    staging = Staging(work / "staging")
    result = apply_updates(view, read_database(view), planned, staging,
                           payload_cache=_payload_cache())
    _materialise(staging, by_suture)
    return Upgraded(base, by_apt, by_suture, upgrades, debs, result)


def _apt_reference(base: Path, out: Path) -> None:
    """Upgrade a copy of `base` with real apt into `out`: the tree as `root`, the .deb files
    as `debs`.

    apt downloads the exact candidate versions, and the same files feed suture's engine.
    """
    root = _copy_tree(base, out / "root")
    _chroot(root, "apt-get", "-q", "update")
    _chroot(root, "apt-get", "-y", "-q", "--download-only", "upgrade")
    debs_dir = out / "debs"
    debs_dir.mkdir()
    for deb_path in sorted((root / "var/cache/apt/archives").glob("*.deb")):
        shutil.copy2(deb_path, debs_dir)
    _chroot(root, "apt-get", "-y", "-q", "-o", "Dpkg::Options::=--force-confold", "upgrade")
    # The indexes and downloads are apt's working state, not part of the upgraded image.
    # Only files go, because the directories belong to the apt package and are compared.
    for state in ("var/lib/apt/lists", "var/cache/apt/archives"):
        for item in (root / state).iterdir():
            if item.is_file() and item.name != "lock":
                item.unlink()


def _directory_view(root: Path) -> object:
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit" / "dpkg_apply"))
    from applykit import DirectoryView

    return DirectoryView(root)


def _describe(root: Path, path: str) -> tuple[object, ...] | None:
    host = root / path.lstrip("/")
    # Parents are resolved inside the root: /bin/x is /usr/bin/x in a merged-/usr image.
    parent = Path(os.path.realpath(host.parent))
    if not str(parent).startswith(str(root)):
        return ("outside",)
    host = parent / host.name
    try:
        info = os.lstat(host)
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(info.st_mode):
        return ("symlink", info.st_uid, info.st_gid, os.readlink(host))
    if stat.S_ISDIR(info.st_mode):
        return ("dir", stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid)
    return ("file", stat.S_IMODE(info.st_mode), info.st_uid, info.st_gid, host.read_bytes())


def _owned_paths(root: Path, names: list[str]) -> list[str]:
    info = root / "var/lib/dpkg/info"
    paths: list[str] = []
    for name in names:
        lists = list(info.glob(f"{name}.list")) + list(info.glob(f"{name}:*.list"))
        for listing in lists:
            paths.extend(line for line in listing.read_text().splitlines() if line != "/.")
    return paths


def _stanzas(root: Path) -> dict[str, str]:
    text = (root / "var/lib/dpkg/status").read_text()
    result = {}
    for stanza in split_stanzas(text):
        fields = dict(parse_fields(stanza))
        result[f"{fields['Package']}:{fields.get('Architecture', '')}"] = stanza
    return result


# apt itself hands its download directories to the _apt user while it fetches the indexes and
# packages for the reference upgrade. No package payload is involved.
_APT_RUNTIME_PATHS = frozenset({"/var/cache/apt/archives/partial", "/var/lib/apt/lists/partial"})


def test_bookworm_owned_files_match_apt(bookworm: Upgraded) -> None:
    names = [u.name for u in bookworm.upgrades]
    differing = []
    for path in sorted(set(_owned_paths(bookworm.by_apt, names)) - _APT_RUNTIME_PATHS):
        if _describe(bookworm.by_suture, path) != _describe(bookworm.by_apt, path):
            differing.append(path)
    assert differing == []


def test_bookworm_file_lists_match_apt(bookworm: Upgraded) -> None:
    names = [u.name for u in bookworm.upgrades]
    assert _owned_paths(bookworm.by_suture, names) == _owned_paths(bookworm.by_apt, names)


def test_bookworm_status_stanzas_match_apt(bookworm: Upgraded) -> None:
    ours = _stanzas(bookworm.by_suture)
    theirs = _stanzas(bookworm.by_apt)
    updated = {f"{u.name}:{DebFile(bookworm.debs[u.name]).architecture}"
               for u in bookworm.upgrades}
    assert sorted(ours) == sorted(theirs)
    differing = [key for key in sorted(updated) if ours[key] != theirs[key]]
    assert differing == []


def test_bookworm_other_stanzas_unchanged(bookworm: Upgraded) -> None:
    before = _stanzas(bookworm.base)
    after = _stanzas(bookworm.by_suture)
    updated = {u.name for u in bookworm.upgrades}
    unchanged = [key for key in before if key.split(":")[0] not in updated]
    assert [key for key in unchanged if before[key] != after[key]] == []


def test_bookworm_no_pending_upgrades(bookworm: Upgraded) -> None:
    assert AptOracle(bookworm.by_suture).pending_upgrades() == []


def test_bookworm_audit_clean(bookworm: Upgraded) -> None:
    assert AptOracle(bookworm.by_suture).audit() == []


def test_bookworm_verify_clean(bookworm: Upgraded) -> None:
    names = [u.name for u in bookworm.upgrades]
    assert AptOracle(bookworm.by_suture).verify(names) == []


def test_bookworm_result_lists_every_update(bookworm: Upgraded) -> None:
    assert sorted(p.name for p in bookworm.result.packages) == sorted(
        u.name for u in bookworm.upgrades)


# trixie: a newer dpkg, and base-files ships the merged-/usr symlinks itself.


def test_trixie_owned_files_match_apt(trixie: Upgraded) -> None:
    names = [u.name for u in trixie.upgrades]
    differing = []
    for path in sorted(set(_owned_paths(trixie.by_apt, names)) - _APT_RUNTIME_PATHS):
        if _describe(trixie.by_suture, path) != _describe(trixie.by_apt, path):
            differing.append(path)
    assert differing == []


def test_trixie_status_stanzas_match_apt(trixie: Upgraded) -> None:
    ours = _stanzas(trixie.by_suture)
    theirs = _stanzas(trixie.by_apt)
    assert sorted(ours) == sorted(theirs)
    assert [key for key in sorted(ours) if ours[key] != theirs[key]] == []


# The layered image: a user-edited conffile, a whited-out file and an opaque directory.


def test_layered_owned_files_match_apt(layered: Upgraded) -> None:
    names = [u.name for u in layered.upgrades]
    differing = []
    for path in sorted(set(_owned_paths(layered.by_apt, names)) - _APT_RUNTIME_PATHS):
        if _describe(layered.by_suture, path) != _describe(layered.by_apt, path):
            differing.append(path)
    assert differing == []


def test_layered_status_stanzas_match_apt(layered: Upgraded) -> None:
    ours = _stanzas(layered.by_suture)
    theirs = _stanzas(layered.by_apt)
    assert sorted(ours) == sorted(theirs)
    assert [key for key in sorted(ours) if ours[key] != theirs[key]] == []


def test_layered_keeps_edited_conffiles(layered: Upgraded) -> None:
    for path in ("etc/ssl/openssl.cnf", "etc/security/limits.conf"):
        assert (layered.by_suture / path).read_bytes() == (layered.base / path).read_bytes()


def test_layered_dpkg_dist_files_match_apt(layered: Upgraded) -> None:
    def dist_files(root: Path) -> list[str]:
        return sorted(str(p.relative_to(root)) for p in (root / "etc").rglob("*.dpkg-dist"))

    assert dist_files(layered.by_suture) == dist_files(layered.by_apt)


def test_layered_verify_clean(layered: Upgraded) -> None:
    names = [u.name for u in layered.upgrades]
    lines = AptOracle(layered.by_suture).verify(names)
    # dpkg -V reports edited conffiles (flag c); the image's own edits are expected there.
    assert [line for line in lines if " c " not in line] == []


# Distroless: status.d entries under their own names, no status file, no info directory.


def _host_candidates(names: list[str]) -> dict[str, str]:
    """Return the host apt candidate version of each name (the host uses the image's suites)."""
    output = subprocess.run(["apt-cache", "policy", *names], check=True, capture_output=True,
                            text=True).stdout
    candidates: dict[str, str] = {}
    current = ""
    for line in output.splitlines():
        if line and not line.startswith(" "):
            current = line.rstrip(":")
        elif line.strip().startswith("Candidate:") and current:
            candidates[current] = line.split(":", 1)[1].strip()
    return candidates


def _download(specs: list[str], dest: Path) -> list[Path]:
    """Download `name=version` packages as the host's apt finds them, through the .deb store."""
    output = subprocess.run(["apt-get", "download", "--print-uris", "-q", *specs], check=True,
                            capture_output=True, text=True, timeout=600).stdout
    return download_printed_uris(output, dest)


@dataclass(frozen=True)
class Distroless:
    base: Path
    patched: Path
    debs: dict[str, Path]
    result: ApplyResult


@pytest.fixture(scope="module")
def distroless(images: Images, tmp_path_factory: pytest.TempPathFactory) -> Distroless:
    from suture.ecosystems.dpkg.version import compare_versions

    work = tmp_path_factory.mktemp("dpkg-apply-distroless")
    base = images.rootfs("distroless-bookworm")
    view = _directory_view(base)
    database = read_database(view)
    installed = {p.name: p for p in database.packages}
    candidates = _host_candidates(sorted(installed))
    debs_dir = work / "debs"
    debs_dir.mkdir()
    newer = {name: candidates[name] for name, package in sorted(installed.items())
             if candidates.get(name) and compare_versions(candidates[name], package.version) > 0}
    if not newer:
        pytest.skip("the mirror has no newer version of any distroless package")
    debs = {DebFile(path).name: path
            for path in _download([f"{name}={version}" for name, version in newer.items()],
                                  debs_dir)}
    planned = [(PlannedPackage(name, installed[name].architecture, installed[name].version, "",
                               version, PackageStatus.UPDATE), debs[name])
               for name, version in newer.items()]
    patched = images.fresh_rootfs("distroless-bookworm", work / "patched")
    staging = Staging(work / "staging")
    result = apply_updates(view, database, planned, staging, payload_cache=_payload_cache())
    _materialise(staging, patched)
    return Distroless(base, patched, debs, result)


def test_distroless_no_status_or_info(distroless: Distroless) -> None:
    assert not (distroless.patched / "var/lib/dpkg/status").exists()
    assert not (distroless.patched / "var/lib/dpkg/info").exists()


def test_distroless_status_d_names_kept(distroless: Distroless) -> None:
    status_d = "var/lib/dpkg/status.d"
    before = sorted(p.name for p in (distroless.base / status_d).iterdir())
    assert sorted(p.name for p in (distroless.patched / status_d).iterdir()) == before


def test_distroless_entries_have_new_versions(distroless: Distroless) -> None:
    database = read_database(_directory_view(distroless.patched))  # type: ignore[arg-type]
    for name, deb in distroless.debs.items():
        package = database.find(name)
        assert package is not None
        assert package.version == DebFile(deb).version


def test_distroless_md5sums_companions_updated(distroless: Distroless) -> None:
    database = read_database(_directory_view(distroless.patched))  # type: ignore[arg-type]
    for name, deb in distroless.debs.items():
        package = database.find(name)
        assert package is not None
        companion = distroless.patched / (package.file.lstrip("/") + ".md5sums")
        if (distroless.base / (package.file.lstrip("/") + ".md5sums")).exists():
            assert companion.read_bytes() == DebFile(deb).control_files["md5sums"]


def test_distroless_files_match_payloads(distroless: Distroless) -> None:
    differing = []
    for deb_path in distroless.debs.values():
        for member, fileobj in DebFile(deb_path).iter_data():
            if fileobj is None:
                continue
            described = _describe(distroless.patched, member.path)
            expected = ("file", member.mode, member.uid, member.gid, fileobj.read())
            if described != expected:
                differing.append(member.path)
    assert differing == []


def test_distroless_bundle_has_new_certificates(distroless: Distroless) -> None:
    if "ca-certificates" not in distroless.debs:
        pytest.skip("ca-certificates has no update on the mirror")
    bundle = (distroless.patched / "etc/ssl/certs/ca-certificates.crt").read_bytes()
    for member, fileobj in DebFile(distroless.debs["ca-certificates"]).iter_data():
        if fileobj is not None and member.path.startswith("/usr/share/ca-certificates/"):
            assert fileobj.read().strip() in bundle, member.path


# ca-certificates: the offline regeneration against the package's own update-ca-certificates.


def test_cacerts_regeneration_matches_update_ca_certificates(
    images: Images, tmp_path: Path
) -> None:
    from suture.ecosystems.dpkg import cacerts
    from suture.ecosystems.dpkg.unpack import MergedView

    root = images.fresh_rootfs("debian-bookworm-layered", tmp_path / "root")
    downloads = tmp_path / "debs"
    downloads.mkdir()
    version = _host_candidates(["ca-certificates"])["ca-certificates"]
    (deb,) = _download([f"ca-certificates={version}"], downloads)
    subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
    certificates = sorted(
        str(p.relative_to(root / "usr/share/ca-certificates"))
        for p in (root / "usr/share/ca-certificates").rglob("*.crt"))
    # A disabled certificate and a stale entry exercise the conf handling.
    conf = ["# comment", f"!{certificates[0]}", *certificates[1:], "mozilla/Gone_Root.crt"]
    (root / "etc/ca-certificates.conf").write_text("\n".join(conf) + "\n")
    (root / "etc/ssl/certs").mkdir(parents=True, exist_ok=True)

    ours = _copy_tree(root, tmp_path / "ours")
    staging = Staging(tmp_path / "staging")
    view = _directory_view(root)
    cacerts.regenerate(MergedView(view, staging), staging)  # type: ignore[arg-type]
    _materialise(staging, ours)

    # The package's own script, run inside the image's chroot, is the reference.
    _chroot(root, "/usr/sbin/update-ca-certificates")
    certs = "etc/ssl/certs"
    assert sorted(os.listdir(ours / certs)) == sorted(os.listdir(root / certs))
    differing = [name for name in os.listdir(root / certs)
                 if _describe(ours, f"/{certs}/{name}") != _describe(root, f"/{certs}/{name}")]
    assert differing == []


# arm64 on an amd64 host: nothing from the image can run, and nothing needs to.

ELF_MACHINE_AARCH64 = 183


def _foreign_apt(root: Path, architecture: str, *args: str, cwd: Path | None = None) -> str:
    command = [
        "apt-get", "-q", "-o", f"Dir={root}",
        "-o", f"Dir::State::status={root}/var/lib/dpkg/status",
        "-o", f"APT::Architecture={architecture}", "-o", f"APT::Architectures={architecture}",
        "-o", "Debug::NoLocking=1", *args,
    ]
    return subprocess.run(command, cwd=cwd, check=True, capture_output=True, text=True,
                          timeout=900).stdout


def test_arm64_patch_uses_arm64_payloads(images: Images, tmp_path: Path) -> None:
    base = images.fresh_rootfs("debian-bookworm-arm64", tmp_path / "base")
    upgrades = AptOracle(base).pending_upgrades(keep_lists=True)
    if not upgrades:
        pytest.skip("the mirror has no newer version of any package in the arm64 image")
    downloads = tmp_path / "debs"
    downloads.mkdir()
    uris = _foreign_apt(base, "arm64", "download", "--print-uris",
                        *(f"{u.name}={u.candidate}" for u in upgrades))
    debs = {DebFile(p).name: p for p in download_printed_uris(uris, downloads)}
    planned = [(PlannedPackage(u.name, u.architecture, u.installed, "", u.candidate,
                               PackageStatus.UPDATE), debs[u.name]) for u in upgrades]
    view = _directory_view(base)
    staging = Staging(tmp_path / "staging")
    apply_updates(view, read_database(view), planned, staging,  # type: ignore[arg-type]
                  payload_cache=_payload_cache())
    patched = _copy_tree(base, tmp_path / "patched")
    _materialise(staging, patched)

    oracle = AptOracle(patched)
    assert oracle.pending_upgrades() == []
    assert oracle.audit() == []
    assert oracle.verify([u.name for u in upgrades]) == []
    elf_machines = set()
    for entry in staging.entries():
        if entry.content is None:
            continue
        head = entry.content.read_bytes()[:20]
        if head[:4] == b"\x7fELF":
            elf_machines.add(int.from_bytes(head[18:20], "little"))
    assert elf_machines == {ELF_MACHINE_AARCH64}
