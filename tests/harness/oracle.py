"""Judge an unpacked image with Debian's own tools: dpkg-query, apt-get and dpkg.

Tests use this to check suture's output without trusting suture. For an image
of the host's architecture the tools of the image itself run in a chroot with
/proc, a minimal /dev and the host's resolv.conf. For a foreign architecture
(arm64 on an amd64 host) nothing from the image can run without emulation, so
the host's apt and dpkg read the image's database and sources through `-o Dir=`
and `--root`.

The results of `pending_upgrades` are stored under the fixture cache, keyed by
a hash of every input apt reads to compute them. These are the dpkg database,
the apt configuration and keyrings that apply, the apt that runs, and the
InRelease file of every suite the image's sources name, as the mirror serves it
now. For a foreign architecture the host's resolved apt configuration and
keyrings count too. An image with the same content, checked against the same
mirror state, gets the result apt returned before. Any change to those inputs
runs apt again.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import logging
import os
import re
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from debian.deb822 import Deb822

from tests.harness.mirror import http_get
from tests.harness.paths import cache_root

logger = logging.getLogger(__name__)

COMMAND_TIMEOUT = 600.0
_CHROOT_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LC_ALL": "C",
    "DEBIAN_FRONTEND": "noninteractive",
    "HOME": "/root",
}
# `Inst NAME [OLD] (NEW ORIGINS [ARCH])`, as printed by `apt-get -s upgrade`.
_INST_LINE = re.compile(r"^Inst (\S+) \[([^\]]+)\] \((\S+) ([^\[]*)\[([^\]]+)\]\)")
_DEVICES = {
    "null": (1, 3),
    "zero": (1, 5),
    "full": (1, 7),
    "random": (1, 8),
    "urandom": (1, 9),
    "tty": (5, 0),
}
# A `dpkg --audit` section that only reports the image's architecture as unknown to the host's dpkg.
_FOREIGN_ARCH_SECTION = "unknown foreign architecture"
# Bump when the way results are computed or parsed changes, so older results are not reused.
RESULTS_VERSION = "1"
# The words apt's configuration parser reads as false, as in `Enabled: no` of a deb822 source.
_APT_FALSE = frozenset({"no", "false", "without", "off", "disable", "0"})
# Files of an image that apt reads when it simulates an upgrade, besides its lists.
_APT_INPUTS = ("etc/apt", "usr/share/keyrings", "var/lib/dpkg/status", "var/lib/dpkg/status.d",
               "var/lib/dpkg/arch")


@dataclass(frozen=True)
class Upgrade:
    """One package apt would upgrade: its installed and candidate versions and origins."""

    name: str
    installed: str
    candidate: str
    origins: str
    architecture: str

    @property
    def is_security(self) -> bool:
        return "security" in self.origins.lower()


def default_lists_cache() -> Path:
    """Return the directory that keeps apt lists between sessions, beside the fixture images."""
    return cache_root() / "apt-lists"


def default_results_cache() -> Path:
    """Return the directory that keeps apt's results between sessions."""
    return cache_root() / "oracle-results"


def host_architecture() -> str:
    return subprocess.run(
        ["dpkg", "--print-architecture"], capture_output=True, text=True, check=True
    ).stdout.strip()


def mounted_paths() -> set[str]:
    """Return the mount points listed in /proc/self/mounts."""
    with open("/proc/self/mounts", encoding="utf-8") as handle:
        return {line.split()[1] for line in handle}


class AptOracle:
    """Ask apt and dpkg about the root filesystem at `rootfs` (an unpacked image).

    Queries leave the tree as it was. The one exception is the apt lists that
    `pending_upgrades(keep_lists=True)` leaves behind. apt's caches and logs go
    to tmpfs mounts, and the chroot's /proc, /dev and resolv.conf are undone.
    """

    def __init__(
        self, rootfs: Path, architecture: str | None = None, lists_cache: Path | None = None
    ) -> None:
        self.rootfs = rootfs.resolve()
        self.architecture = architecture or self._image_architecture()
        self.native = self.architecture in (host_architecture(), "all")
        self.lists_cache = lists_cache if lists_cache is not None else default_lists_cache()
        self.results_cache = default_results_cache()

    # Public questions.

    def installed_versions(self) -> dict[str, str]:
        """Return `{package: version}` for every package dpkg records as installed."""
        status = self.rootfs / "var/lib/dpkg/status"
        if not status.exists():
            return self._status_d_versions()
        output = self._run_dpkg_query(["-W", "-f", "${Package}\t${Version}\t${db:Status-Abbrev}\n"])
        versions: dict[str, str] = {}
        for line in output.splitlines():
            name, version, abbrev = line.split("\t")
            if abbrev.startswith("ii"):
                versions[name] = version
        return versions

    def pending_upgrades(
        self, dist_upgrade: bool = False, keep_lists: bool = False, reuse: bool = True
    ) -> list[Upgrade]:
        """Run `apt-get update` on the image's sources; list what `apt-get -s upgrade` installs.

        By default the tree is left exactly as it was, as the shared
        `images.rootfs` trees require, and the result apt gave earlier for the same
        inputs (see the module docstring) is returned without running apt; pass
        `reuse=False` to run apt regardless. With `keep_lists` apt always runs and
        the downloaded indexes stay in the image's /var/lib/apt/lists, so apt can
        run there afterwards.
        """
        releases = self._source_release_digests() if reuse and not keep_lists else []
        key = self._result_key(dist_upgrade, releases) if releases else None
        stored = self.results_cache / f"{key}.json" if key is not None else None
        if stored is not None and stored.is_file():
            try:
                return [Upgrade(**item) for item in json.loads(stored.read_text(encoding="utf-8"))]
            except (OSError, ValueError, TypeError) as error:
                logger.warning("ignoring unreadable stored apt result %s: %s", stored, error)

        action = "dist-upgrade" if dist_upgrade else "upgrade"
        with self._scratch_apt_state(keep_lists):
            self._run_apt(["apt-get", "-q", "update"])
            output = self._run_apt(["apt-get", "-s", "-q", action])
            used = _release_digests(self.rootfs / "var/lib/apt/lists")
        upgrades: list[Upgrade] = []
        for line in output.splitlines():
            match = _INST_LINE.match(line)
            if match:
                name, old, new, origins, arch = match.groups()
                upgrades.append(Upgrade(name, old, new, origins.strip(), arch))
        # Store the result only if apt saw the release files the key was made from.
        if stored is not None and used == releases:
            self.results_cache.mkdir(parents=True, exist_ok=True)
            partial = stored.with_name(f".{stored.name}.{os.getpid()}")
            partial.write_text(json.dumps([asdict(u) for u in upgrades]), encoding="utf-8")
            partial.rename(stored)
        return upgrades

    def audit(self) -> list[str]:
        """Return the problems `dpkg --audit` reports, one line each; empty means clean."""
        result = self._run(self._dpkg_command(["--audit"]), check=False)
        if result.returncode not in (0, 1):
            raise RuntimeError(f"dpkg --audit on {self.rootfs} failed: {result.stderr.strip()}")
        sections = [s for s in result.stdout.split("\n\n") if s.strip()]
        if not self.native:
            # NOTE: the host's dpkg treats the image's architecture as an unregistered foreign one.
            sections = [s for s in sections if _FOREIGN_ARCH_SECTION not in s]
        return [line for section in sections for line in section.splitlines() if line.strip()]

    def verify(self, packages: Sequence[str]) -> list[str]:
        """Return the `dpkg -V` lines for `packages`; empty means every file matches its md5sum."""
        result = self._run(self._dpkg_command(["--verify", *packages]), check=False)
        if result.returncode not in (0, 1) or "not installed" in result.stderr:
            raise RuntimeError(f"dpkg --verify on {self.rootfs} failed: {result.stderr.strip()}")
        return [line for line in result.stdout.splitlines() if line.strip()]

    # Helpers.

    def _result_key(self, dist_upgrade: bool, releases: list[str]) -> str:
        """Hash every input of a simulated upgrade, given the digests of its release files."""
        digest = hashlib.sha256()
        for part in (RESULTS_VERSION, self.architecture, str(self.native), str(dist_upgrade),
                     *releases):
            digest.update(part.encode() + b"\0")
        _hash_files(digest, self.rootfs, _APT_INPUTS)
        if not self.native:
            # The host's apt runs here, so its version, its resolved configuration (with the
            # host's apt.conf.d and APT_CONFIG) and the host keyrings Signed-By names count too.
            digest.update(_host_apt_version().encode() + b"\0")
            config = self._run_apt(["apt-config", "dump"]).replace(str(self.rootfs), "<root>")
            digest.update(config.encode() + b"\0")
            _hash_files(digest, Path("/"), ("usr/share/keyrings",))
        return digest.hexdigest()

    def _source_release_digests(self) -> list[str]:
        """Return the SHA-256 of each InRelease the image's sources name, fetched now, sorted."""
        digests = []
        try:
            for url in _release_urls(self.rootfs / "etc/apt"):
                digests.append(_inrelease_digest(url))
        except (RuntimeError, UnicodeDecodeError) as error:
            logger.info("not reusing stored apt results for %s: %s", self.rootfs, error)
            return []
        return sorted(digests)

    @contextlib.contextmanager
    def _scratch_apt_state(self, keep_lists: bool) -> Iterator[None]:
        """Give apt tmpfs mounts for its caches and logs, and seed its lists from earlier sessions.

        The lists go to a tmpfs too unless `keep_lists` is set. apt-get update
        still checks every index against the mirror. The cache of lists only saves
        downloading indexes that have not changed since the last session.
        """
        lists = self.rootfs / "var/lib/apt/lists"
        apt_cache = self.rootfs / "var/cache/apt"
        # apt-get -s writes its solver log (eipp.log.xz) here.
        apt_log = self.rootfs / "var/log/apt"
        sources = sorted((self.rootfs / "etc/apt").glob("sources.list*"))
        sources += sorted((self.rootfs / "etc/apt/sources.list.d").glob("*"))
        digest = hashlib.sha256(self.architecture.encode())
        for path in sources:
            if path.is_file():
                digest.update(path.name.encode() + b"\0" + path.read_bytes())
        cached = self.lists_cache / digest.hexdigest()[:16]
        self.lists_cache.mkdir(parents=True, exist_ok=True)

        with (
            (self.lists_cache / f"{cached.name}.lock").open("w") as lock,
            contextlib.nullcontext() if keep_lists else _tmpfs(lists),
            _tmpfs(apt_cache),
            _tmpfs(apt_log),
        ):
            fcntl.flock(lock, fcntl.LOCK_EX)
            lists.mkdir(parents=True, exist_ok=True)
            if cached.is_dir() and not any(lists.glob("*_InRelease")):
                for item in cached.iterdir():
                    shutil.copy2(item, lists / item.name)
            yield
            staging = Path(tempfile.mkdtemp(dir=self.lists_cache, prefix=".lists-"))
            for item in lists.iterdir():
                if item.is_file() and item.name != "lock":
                    shutil.copy2(item, staging / item.name)
            if cached.exists():
                shutil.rmtree(cached)
            staging.rename(cached)

    def _image_architecture(self) -> str:
        for stanza in self._status_stanzas():
            arch = stanza.get("Architecture", "all")
            if arch != "all":
                return str(arch)
        return host_architecture()

    def _status_stanzas(self) -> list[Deb822]:
        files = [self.rootfs / "var/lib/dpkg/status"]
        status_d = self.rootfs / "var/lib/dpkg/status.d"
        if status_d.is_dir():
            files += sorted(p for p in status_d.iterdir() if "." not in p.name)
        stanzas: list[Deb822] = []
        for path in files:
            if path.exists():
                with path.open(encoding="utf-8") as handle:
                    stanzas.extend(Deb822.iter_paragraphs(handle, use_apt_pkg=False))
        return stanzas

    def _status_d_versions(self) -> dict[str, str]:
        # dpkg-query cannot read distroless status.d files, so parse them directly.
        versions: dict[str, str] = {}
        for stanza in self._status_stanzas():
            if stanza.get("Status", "").endswith(" installed"):
                versions[str(stanza["Package"])] = str(stanza["Version"])
        return versions

    def _dpkg_command(self, args: list[str]) -> list[str]:
        if self.native:
            return ["dpkg", *args]
        return ["dpkg", f"--root={self.rootfs}", *args]

    def _run_dpkg_query(self, args: list[str]) -> str:
        if self.native:
            command = ["dpkg-query", *args]
        else:
            command = ["dpkg-query", f"--admindir={self.rootfs}/var/lib/dpkg", *args]
        return self._run(command).stdout

    def _run_apt(self, command: list[str]) -> str:
        if not self.native:
            # NOTE: Signed-By paths are not prefixed by Dir, so the host's copy of the
            # Debian archive keyring verifies the image's repositories here.
            root = str(self.rootfs)
            command = [
                command[0],
                "-o",
                f"Dir={root}",
                "-o",
                f"Dir::State::status={root}/var/lib/dpkg/status",
                "-o",
                f"APT::Architecture={self.architecture}",
                "-o",
                f"APT::Architectures={self.architecture}",
                "-o",
                "Debug::NoLocking=1",
                *command[1:],
            ]
        result = self._run(command, check=False)
        if result.returncode != 0:
            raise RuntimeError(
                f"{' '.join(command[:3])} in {self.rootfs} failed: {result.stderr.strip()[-2000:]}"
            )
        return result.stdout

    def _run(self, command: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
        if self.native:
            with chroot_mounts(self.rootfs):
                full = ["chroot", str(self.rootfs), *command]
                result = subprocess.run(
                    full,
                    env=_CHROOT_ENV,
                    capture_output=True,
                    text=True,
                    check=False,
                    timeout=COMMAND_TIMEOUT,
                )
        else:
            result = subprocess.run(
                command,
                env={**os.environ, "LC_ALL": "C"},
                capture_output=True,
                text=True,
                check=False,
                timeout=COMMAND_TIMEOUT,
            )
        if check and result.returncode != 0:
            raise RuntimeError(
                f"{' '.join(command)} in {self.rootfs} failed: {result.stderr.strip()}"
            )
        return result


def _hash_files(digest: hashlib._Hash, root: Path, tops: tuple[str, ...]) -> None:
    """Feed the names, link targets and contents of the files under `root/top` to `digest`."""
    for top in tops:
        path = root / top
        files = sorted(path.rglob("*")) if path.is_dir() else [path]
        for item in files:
            digest.update(str(item.relative_to(root)).encode() + b"\0")
            if item.is_symlink():
                digest.update(b"-> " + os.readlink(item).encode())
            elif item.is_file():
                digest.update(item.read_bytes())
            digest.update(b"\0")


@functools.cache
def _host_apt_version() -> str:
    return subprocess.run(["apt-get", "--version"], capture_output=True, text=True,
                          check=True).stdout.splitlines()[0]


@functools.cache
def _inrelease_digest(url: str) -> str:
    """Fetch one InRelease file, once per session, and return its SHA-256."""
    return hashlib.sha256(http_get(url)).hexdigest()


def _release_digests(lists: Path) -> list[str]:
    """Return the SHA-256 of each InRelease file apt keeps in `lists`, sorted."""
    return sorted(hashlib.sha256(p.read_bytes()).hexdigest() for p in lists.glob("*_InRelease"))


def _release_urls(apt_dir: Path) -> list[str]:
    """Return the InRelease URL of every enabled `deb` entry in the sources under `apt_dir`.

    Reads deb822 `.sources` files and one-line `sources.list` files. A suite
    ending in `/` names a flat repository, whose InRelease sits in that directory.
    """
    entries: list[tuple[str, str]] = []
    for path in sorted((apt_dir / "sources.list.d").glob("*.sources")):
        with path.open(encoding="utf-8") as handle:
            for stanza in Deb822.iter_paragraphs(handle, use_apt_pkg=False):
                if "deb" not in stanza.get("Types", "").split():
                    continue
                if stanza.get("Enabled", "yes").strip().lower() in _APT_FALSE:
                    continue
                entries += [(uri, suite) for uri in stanza.get("URIs", "").split()
                            for suite in stanza.get("Suites", "").split()]
    one_line = [apt_dir / "sources.list", *sorted((apt_dir / "sources.list.d").glob("*.list"))]
    for path in one_line:
        if not path.is_file():
            continue
        for line in path.read_text(encoding="utf-8").splitlines():
            words = re.sub(r"\[[^\]]*\]", " ", line.split("#", 1)[0]).split()
            if len(words) >= 3 and words[0] == "deb":
                entries.append((words[1], words[2]))
    urls = []
    for uri, suite in entries:
        base = uri.rstrip("/")
        urls.append(f"{base}/{suite}InRelease" if suite.endswith("/")
                    else f"{base}/dists/{suite}/InRelease")
    return sorted(set(urls))


@contextlib.contextmanager
def _tmpfs(path: Path) -> Iterator[None]:
    """Mount an empty tmpfs on `path` for the duration of the block."""
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=755", "tmpfs", str(path)], check=True)
    try:
        yield
    finally:
        result = subprocess.run(["umount", str(path)], capture_output=True, check=False)
        if result.returncode != 0:
            subprocess.run(["umount", "-l", str(path)], check=False)


@contextlib.contextmanager
def chroot_mounts(root: Path) -> Iterator[None]:
    """Mount /proc and a tmpfs /dev with the basic device nodes, and copy resolv.conf.

    /dev is a fresh tmpfs, never a bind mount of the host's, so deleting the
    tree afterwards cannot touch host devices. Everything is undone on exit.
    """
    mounted: list[Path] = []
    resolv = root / "etc/resolv.conf"
    saved_resolv: bytes | None = None
    resolv_existed = resolv.exists() or resolv.is_symlink()
    try:
        proc = root / "proc"
        proc.mkdir(exist_ok=True)
        subprocess.run(["mount", "-t", "proc", "proc", str(proc)], check=True)
        mounted.append(proc)

        dev = root / "dev"
        dev.mkdir(exist_ok=True)
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "mode=755,size=1m", "tmpfs", str(dev)], check=True
        )
        mounted.append(dev)
        for name, (major, minor) in _DEVICES.items():
            node = dev / name
            os.mknod(node, 0o666 | stat.S_IFCHR, os.makedev(major, minor))
            node.chmod(0o666)
        (dev / "pts").mkdir()
        (dev / "shm").mkdir(mode=0o1777)

        if resolv.is_symlink() or resolv.exists():
            saved_resolv = (
                resolv.read_bytes() if resolv.is_file() and not resolv.is_symlink() else None
            )
            resolv.unlink()
        shutil.copyfile("/etc/resolv.conf", resolv)
        yield
    finally:
        for path in reversed(mounted):
            result = subprocess.run(["umount", str(path)], capture_output=True, check=False)
            if result.returncode != 0:
                subprocess.run(["umount", "-l", str(path)], check=False)
        leftover = {str(p) for p in mounted} & mounted_paths()
        if resolv.exists() or resolv.is_symlink():
            resolv.unlink()
        if saved_resolv is not None:
            resolv.write_bytes(saved_resolv)
        elif resolv_existed:
            logger.warning(
                "%s was a symlink; it was replaced during the chroot and not restored", resolv
            )
        if leftover:
            raise RuntimeError(f"could not unmount {sorted(leftover)}; unmount them by hand")
