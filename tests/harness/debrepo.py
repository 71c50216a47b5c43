"""Fetch verified package indexes and .deb files from the host's Debian mirror.

Used to assemble images without a package manager (distroless, foreign
architectures). The InRelease signature is checked with gpgv against the host's
Debian archive keyring, and every download against the SHA-256 in the index.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import lzma
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from debian.deb822 import Packages

from tests.harness.digests import sha256_file
from tests.harness.mirror import (
    HOST_KEYRING,
    archive_url_for_suite,
    fetch_inrelease,
    http_download,
    http_get,
)
from tests.harness.paths import cache_root

logger = logging.getLogger(__name__)


def verify_inrelease(suite: str) -> str:
    """Check the InRelease signature of `suite` with gpgv; return the signed text."""
    text = fetch_inrelease(suite)
    with tempfile.NamedTemporaryFile("w", suffix=".InRelease") as handle:
        handle.write(text)
        handle.flush()
        result = subprocess.run(
            ["gpgv", "--keyring", str(HOST_KEYRING), handle.name],
            capture_output=True,
            text=True,
            check=False,
        )
    if result.returncode != 0:
        raise RuntimeError(f"InRelease of {suite}: bad signature: {result.stderr.strip()}")
    return text


def _release_sha256(release_text: str, name: str) -> str:
    pattern = rf"^ ([0-9a-f]{{64}})\s+\d+\s+{re.escape(name)}$"
    match = re.search(pattern, release_text, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"InRelease lists no SHA256 for {name}")
    return match.group(1)


class PackageIndex(Mapping[str, Packages]):
    """A Packages index that parses a stanza only when it is looked up.

    python-debian needs about ten seconds for the 60,000 stanzas of bookworm,
    and the harness needs a few dozen of them.
    """

    def __init__(self, text: str) -> None:
        self._raw: dict[str, str] = {}
        for chunk in text.split("\n\n"):
            match = _PACKAGE_LINE.search(chunk)
            if match is not None:
                self._raw[match.group(1)] = chunk
        self._parsed: dict[str, Packages] = {}

    def __getitem__(self, name: str) -> Packages:
        if name not in self._parsed:
            self._parsed[name] = Packages(self._raw[name])
        return self._parsed[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._raw)

    def __len__(self) -> int:
        return len(self._raw)

    def providers(self) -> dict[str, str]:
        """Map each virtual package name to the first real package that provides it."""
        provides: dict[str, str] = {}
        for name, chunk in self._raw.items():
            match = _PROVIDES_LINE.search(chunk)
            if match is None:
                continue
            for item in match.group(1).split(","):
                provided = item.strip().split(" ")[0]
                if provided:
                    provides.setdefault(provided, name)
        return provides


_PACKAGE_LINE = re.compile(r"^Package: (\S+)$", re.MULTILINE)
_PROVIDES_LINE = re.compile(r"^Provides: (.+)$", re.MULTILINE)


@functools.cache
def load_packages(suite: str, arch: str, component: str = "main") -> PackageIndex:
    """Return the suite's verified Packages index (one stanza per package name).

    The uncompressed index is kept in the fixture cache under the SHA-256 that the signed
    InRelease lists for it, and hashed again on every reuse.
    """
    release = verify_inrelease(suite)
    index_name = f"{component}/binary-{arch}/Packages"
    expected_text = _release_sha256(release, index_name)
    cached = cache_root() / "indexes" / f"{expected_text}.Packages"
    if cached.exists():
        data = cached.read_bytes()
        if hashlib.sha256(data).hexdigest() == expected_text:
            return PackageIndex(data.decode("utf-8"))
        logger.warning("removing %s: its content does not match its name", cached)
        cached.unlink(missing_ok=True)

    expected = _release_sha256(release, f"{index_name}.xz")
    compressed = http_get(f"{archive_url_for_suite(suite)}/dists/{suite}/{index_name}.xz")
    if hashlib.sha256(compressed).hexdigest() != expected:
        raise RuntimeError(f"{suite} {index_name}.xz: sha256 does not match InRelease")
    data = lzma.decompress(compressed)
    if hashlib.sha256(data).hexdigest() != expected_text:
        raise RuntimeError(f"{suite} {index_name}: sha256 does not match InRelease")
    cached.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=cached.parent, delete=False) as handle:
        handle.write(data)
    Path(handle.name).chmod(0o644)
    Path(handle.name).replace(cached)
    return PackageIndex(data.decode("utf-8"))


def dependency_closure(
    names: Iterable[str], index: PackageIndex, skip: Iterable[str] = ()
) -> list[str]:
    """Close `names` over Depends and Pre-Depends, taking the first satisfiable alternative."""
    provides = index.providers()
    closure: list[str] = []
    seen = set(skip)
    queue = list(names)
    while queue:
        name = queue.pop(0)
        if name in seen:
            continue
        seen.add(name)
        closure.append(name)
        stanza = index[name]
        for field in ("Pre-Depends", "Depends"):
            for group in stanza.get(field, "").split(","):
                if not group.strip():
                    continue
                for alternative in group.split("|"):
                    dep = alternative.strip().split(" ")[0].split(":")[0]
                    if dep in seen:
                        break
                    if dep in index:
                        queue.append(dep)
                        break
                    if dep in provides:
                        queue.append(provides[dep])
                        break
    return sorted(closure)


def download_debs(
    names: Iterable[str], suite: str, arch: str, dest: Path
) -> dict[str, tuple[Path, Packages]]:
    """Download each named package's .deb into `dest`, verified against the index.

    Verified files are stored in the fixture cache under their SHA-256, so a later
    session copies a package the index still names instead of downloading it again.
    """
    index = load_packages(suite, arch)
    base = archive_url_for_suite(suite)
    dest.mkdir(parents=True, exist_ok=True)
    result: dict[str, tuple[Path, Packages]] = {}
    for name in names:
        stanza = index[name]
        target = dest / Path(stanza["Filename"]).name
        if not target.exists():
            cached = _stored_deb(f"{base}/{stanza['Filename']}", stanza["SHA256"])
            shutil.copyfile(cached, target)
        result[name] = (target, stanza)
    return result


_PRINT_URIS_LINE = re.compile(
    r"^'(?P<url>[^']+)' (?P<name>\S+) \d+ SHA256:(?P<sha256>[0-9a-f]{64})$"
)


def download_printed_uris(output: str, dest: Path) -> list[Path]:
    """Download the packages that `apt-get download --print-uris` listed into `dest`.

    Each line names a URL, the file name apt would save and the SHA-256 from apt's verified
    index. Files come from the fixture cache's .deb store when it has them. Returns the paths
    in `dest`. Raises RuntimeError when a line lacks a SHA-256.
    """
    dest.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    for line in output.splitlines():
        if not line.startswith("'"):
            continue
        match = _PRINT_URIS_LINE.match(line.strip())
        if match is None:
            raise RuntimeError(f"apt-get --print-uris gave no SHA-256 in {line!r}")
        target = dest / match["name"]
        shutil.copyfile(_stored_deb(match["url"], match["sha256"]), target)
        paths.append(target)
    return paths


def _stored_deb(url: str, sha256: str) -> Path:
    """Return the .deb with this SHA-256 from the fixture cache, downloading it if missing."""
    deb_cache = cache_root() / "debs"
    deb_cache.mkdir(parents=True, exist_ok=True)
    cached = deb_cache / f"{sha256}.deb"
    if cached.exists() and sha256_file(cached) != sha256:
        logger.warning("removing %s: its content does not match its name", cached)
        cached.unlink(missing_ok=True)
    if not cached.exists():
        http_download(url, cached, sha256)
    return cached


# Index-only fields that dpkg does not keep in its status database.
_INDEX_ONLY_FIELDS = ("Filename", "Size", "MD5sum", "SHA256", "SHA1", "Description-md5", "Tag")


def status_stanza(stanza: Packages) -> str:
    """Turn a Packages stanza into a dpkg status stanza marked installed."""
    lines: list[str] = []
    for key, value in stanza.items():
        if key in _INDEX_ONLY_FIELDS:
            continue
        if key == "Package":
            lines.append(f"Package: {value}")
            lines.append("Status: install ok installed")
            continue
        lines.append(f"{key}: {value}")
    return "\n".join(lines) + "\n"


def extract_deb(deb: Path, root: Path) -> tuple[list[str], Path]:
    """Unpack the payload of `deb` into `root` without running maintainer scripts.

    Returns the package's file list (dpkg `.list` style) and a temporary directory
    holding its control files; the caller removes that directory.
    """
    payload = subprocess.run(
        ["dpkg-deb", "--fsys-tarfile", str(deb)], check=True, capture_output=True
    ).stdout
    # --keep-directory-symlink keeps merged-/usr links such as /lib -> usr/lib in place.
    subprocess.run(
        ["tar", "-x", "--keep-directory-symlink", "-C", str(root)],
        input=payload,
        check=True,
    )
    control = Path(tempfile.mkdtemp(prefix="control-"))
    subprocess.run(["dpkg-deb", "-e", str(deb), str(control)], check=True)
    names = subprocess.run(
        ["tar", "-t"], input=payload, check=True, capture_output=True
    ).stdout.decode("utf-8")
    paths: list[str] = []
    for line in names.splitlines():
        path = "/" + line.lstrip("./").rstrip("/")
        paths.append("/." if path == "/" else path)
    return paths, control
