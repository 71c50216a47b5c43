"""Signed repository metadata: `InRelease` (or `Release` + `Release.gpg`) and its indexes.

The signature is checked with pysequoia against the keys the image trusts for the source:
its `Signed-By` keys, else the image's `/etc/apt/trusted.gpg`, `/etc/apt/trusted.gpg.d/*` and
`/usr/share/keyrings/*`. Sources without keys in the image (distroless, or sources taken from
the host) use the Debian and Ubuntu archive keys shipped in `suture/data/keyrings`.

Index files (`Packages.xz`, `.gz` or plain) are fetched by the SHA256 the signed Release lists,
through `by-hash/` when the Release offers `Acquire-By-Hash`, and cached under
`<cache_dir>/indexes/<sha256>`.
"""

from __future__ import annotations

import email.utils
import gzip
import logging
import lzma
import os
import re
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any

import httpx
import pysequoia

from suture.ecosystems.dpkg.fetch import NotFoundError, download, sha256_file
from suture.ecosystems.dpkg.sources import AptSource
from suture.errors import RepositoryError, SignatureError
from suture.image.fsview import FileSystemView, FileType

logger = logging.getLogger(__name__)

_CLEARSIGN_HEADER = b"-----BEGIN PGP SIGNED MESSAGE-----"

IMAGE_KEYRING_FILES = ("/etc/apt/trusted.gpg",)
IMAGE_KEYRING_DIRS = ("/etc/apt/trusted.gpg.d", "/usr/share/keyrings")
_KEY_SUFFIXES = (".gpg", ".asc", ".pgp")
_FINGERPRINT_RE = re.compile(r"^[0-9A-Fa-f]{16,40}!?$")

# apt accepts a Date slightly in the future; this tolerance covers ordinary clock skew.
CLOCK_SKEW = timedelta(minutes=10)
MAX_RELEASE_BYTES = 64 << 20
MAX_INDEX_BYTES = 512 << 20
# A decompressed index larger than this is rejected (bookworm main for amd64 is about 50 MB).
MAX_PLAIN_INDEX_BYTES = 4 << 30
_DECOMPRESS_CHUNK = 1 << 20


@dataclass(frozen=True)
class IndexFile:
    """One file listed in the SHA256 section of a Release file."""

    path: str
    size: int
    sha256: str


@dataclass(frozen=True)
class Release:
    """A verified Release file of one suite."""

    source: AptSource
    fields: Mapping[str, str]
    files: Mapping[str, IndexFile]
    signed_by: tuple[str, ...] = ()
    notes: tuple[str, ...] = field(default=())

    @property
    def acquire_by_hash(self) -> bool:
        return self.fields.get("Acquire-By-Hash", "").strip().lower() == "yes"

    @property
    def not_automatic(self) -> bool:
        """Whether apt gives this suite priority 100 (backports, experimental)."""
        return self.fields.get("NotAutomatic", "").strip().lower() == "yes"

    @property
    def but_automatic_upgrades(self) -> bool:
        return self.fields.get("ButAutomaticUpgrades", "").strip().lower() == "yes"


def parse_release(text: str, source: AptSource) -> tuple[dict[str, str], dict[str, IndexFile]]:
    """Parse Release text into its top-level fields and its SHA256 file list."""
    fields: dict[str, str] = {}
    files: dict[str, IndexFile] = {}
    current = ""
    for line in text.splitlines():
        if not line.strip():
            continue
        if line[0] in " \t":
            if current == "SHA256":
                parts = line.split()
                if len(parts) == 3 and parts[1].isdigit():
                    files[parts[2]] = IndexFile(parts[2], int(parts[1]), parts[0].lower())
            continue
        name, _, value = line.partition(":")
        current = name.strip()
        fields[current] = value.strip()
    if not files:
        raise RepositoryError(
            f"the Release file of {source} lists no SHA256 hashes; suture cannot verify its indexes"
        )
    return fields, files


def load_certificates(data: bytes, origin: str) -> list[Any]:
    """Parse every OpenPGP certificate in `data` (binary or armoured); [] for other formats."""
    try:
        return list(pysequoia.Cert.split_bytes(data))
    except RuntimeError as error:
        logger.debug("no usable OpenPGP keys in %s: %s", origin, _first_line(error))
        return []


def shipped_certificates() -> list[Any]:
    """Return the Debian and Ubuntu archive keys shipped with suture."""
    certificates: list[Any] = []
    directory = resources.files("suture").joinpath("data", "keyrings")
    for name in ("debian-archive-keyring.gpg", "ubuntu-archive-keyring.gpg"):
        certificates += load_certificates(directory.joinpath(name).read_bytes(), name)
    return certificates


def image_certificates(fs: FileSystemView) -> list[Any]:
    """Return the keys in the image's default apt keyrings.

    Keyrings of retired keys (`debian-archive-removed-keys.gpg` and the like) are skipped,
    because a key was removed from the archive keyring in order to stop trusting it.
    """
    paths = list(IMAGE_KEYRING_FILES)
    for directory in IMAGE_KEYRING_DIRS:
        paths += [
            f"{directory}/{name}"
            for name in fs.listdir(directory)
            if name.endswith(_KEY_SUFFIXES) and "-removed-keys." not in name
        ]
    certificates: list[Any] = []
    for path in paths:
        entry = fs.lstat(path)
        if entry is None or entry.type is FileType.DIRECTORY:
            continue
        data = fs.read(path)
        if data is not None:
            certificates += load_certificates(data, path)
    return certificates


def certificates_for(
    source: AptSource, fs: FileSystemView, image_keys: Callable[[], list[Any]]
) -> tuple[list[Any], str]:
    """Return the keys that may sign `source`, and a short description of where they came from.

    Raises SignatureError when a `Signed-By` key file named by the source is missing.
    """
    if source.signed_by_key:
        return load_certificates(
            source.signed_by_key.encode(), f"{source.file}"
        ), "inline Signed-By"

    if source.signed_by:
        certificates: list[Any] = []
        fingerprints = [v.rstrip("!").lower() for v in source.signed_by if _FINGERPRINT_RE.match(v)]
        for path in source.signed_by:
            if _FINGERPRINT_RE.match(path):
                continue
            data = _read_key_file(source, fs, path)
            certificates += load_certificates(data, path)
        if fingerprints:
            pool = certificates or image_keys() or shipped_certificates()
            certificates = [
                c for c in pool if any(c.fingerprint.lower().endswith(f) for f in fingerprints)
            ]
        return certificates, "Signed-By " + " ".join(source.signed_by)

    if source.origin == "image":
        keys = image_keys()
        if keys:
            return keys, "the image's apt keyrings"
    return shipped_certificates(), "the Debian and Ubuntu archive keys shipped with suture"


def _read_key_file(source: AptSource, fs: FileSystemView, path: str) -> bytes:
    if source.origin == "image":
        data = fs.read(path)
        where = "in the image"
    else:
        try:
            data = Path(path).read_bytes()
        except OSError:
            data = None
        where = "on this machine"
    if data is None:
        raise SignatureError(
            f"the key file {path} named by Signed-By of {source} ({source.file}) is missing "
            f"{where}; add the key or fix the sources entry"
        )
    return data


def _first_line(error: BaseException) -> str:
    # pysequoia appends a Rust backtrace to its messages.
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def verify_clearsigned(data: bytes, certificates: Sequence[Any], what: str) -> bytes:
    """Return the signed text of a clearsigned file; raise SignatureError unless it verifies."""
    try:
        result = pysequoia.verify(bytes=data, store=lambda _ids: list(certificates))
    except RuntimeError as error:
        raise SignatureError(f"{what}: {_first_line(error)}") from error
    if not result.valid_sigs or result.bytes is None:
        raise SignatureError(f"{what}: no valid signature")
    signed: bytes = result.bytes
    return signed


def verify_detached(data: bytes, signature: bytes, certificates: Sequence[Any], what: str) -> None:
    """Raise SignatureError unless `signature` is a valid signature of `data`."""
    try:
        sig = pysequoia.Sig.from_bytes(signature)
        result = pysequoia.verify(bytes=data, store=lambda _ids: list(certificates), signature=sig)
    except (RuntimeError, ValueError) as error:
        raise SignatureError(f"{what}: {_first_line(error)}") from error
    if not result.valid_sigs:
        raise SignatureError(f"{what}: no valid signature")


def parse_date(value: str) -> datetime | None:
    """Parse a Release `Date` or `Valid-Until` (RFC 2822, UTC); None when absent or invalid."""
    if not value:
        return None
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def fetch_release(
    client: httpx.Client,
    source: AptSource,
    fs: FileSystemView,
    image_keys: Callable[[], list[Any]],
    *,
    allow_insecure: bool = False,
    now: datetime | None = None,
) -> Release:
    """Fetch and verify the Release of `source`.

    Tries `InRelease`, then `Release` with `Release.gpg`. Raises SignatureError for a bad or
    missing signature and RepositoryError for an expired `Valid-Until` or a `Date` in the
    future, unless `allow_insecure` is set, in which case the problem becomes a note.
    """
    now = now or datetime.now(UTC)
    notes: list[str] = []
    text = _fetch_signed_release(client, source, fs, image_keys, allow_insecure, notes)
    fields, files = parse_release(text, source)
    _check_dates(source, fields, now, allow_insecure, notes)
    _check_suite(source, fields, notes)
    return Release(
        source=source,
        fields=MappingProxyType(fields),
        files=MappingProxyType(files),
        notes=tuple(notes),
    )


def _fetch_signed_release(
    client: httpx.Client,
    source: AptSource,
    fs: FileSystemView,
    image_keys: Callable[[], list[Any]],
    allow_insecure: bool,
    notes: list[str],
) -> str:
    base = source.dist_url
    with tempfile.TemporaryDirectory(prefix="suture-release-") as scratch:
        inrelease = Path(scratch) / "InRelease"
        try:
            download(client, f"{base}/InRelease", inrelease, max_bytes=MAX_RELEASE_BYTES)
            data: bytes | None = inrelease.read_bytes()
        except NotFoundError:
            data = None

        if source.trusted:
            notes.append(
                f"{source}: signature not checked because the source is marked trusted=yes"
            )
            if data is not None:
                return _strip_clearsign(data)
            return _fetch_text(client, f"{base}/Release", Path(scratch) / "Release")

        certificates, key_origin = certificates_for(source, fs, image_keys)
        if data is not None and not data.lstrip().startswith(_CLEARSIGN_HEADER):
            # A plain Release served as InRelease carries no signature, so Release and
            # Release.gpg are tried as if there were no InRelease.
            logger.warning("%s/InRelease is not clearsigned; trying Release and Release.gpg",
                           base)
            data = None
        if data is not None:
            signed = verify_clearsigned(
                data, certificates, f"signature check of {base}/InRelease with {key_origin} failed"
            )
            return signed.decode("utf-8", errors="replace")

        release = _fetch_text(client, f"{base}/Release", Path(scratch) / "Release")
        signature_path = Path(scratch) / "Release.gpg"
        try:
            download(client, f"{base}/Release.gpg", signature_path, max_bytes=1 << 20)
        except NotFoundError as error:
            if not allow_insecure:
                raise SignatureError(
                    f"{base} is not signed (no InRelease or Release.gpg); pass "
                    "--allow-insecure-repositories to use it anyway"
                ) from error
            notes.append(
                f"{source}: repository is not signed; "
                "used because insecure repositories are allowed"
            )
            return release
        verify_detached(
            release.encode(),
            signature_path.read_bytes(),
            certificates,
            f"signature check of {base}/Release with {key_origin} failed",
        )
        return release


def _fetch_text(client: httpx.Client, url: str, path: Path) -> str:
    download(client, url, path, max_bytes=MAX_RELEASE_BYTES)
    return path.read_text(errors="replace")


def _strip_clearsign(data: bytes) -> str:
    text = data.decode("utf-8", errors="replace")
    match = re.search(
        r"-----BEGIN PGP SIGNED MESSAGE-----\n(?:.+\n)*\n(.*?)\n-----BEGIN PGP SIGNATURE",
        text,
        re.S,
    )
    return match.group(1) if match else text


def _check_dates(
    source: AptSource,
    fields: Mapping[str, str],
    now: datetime,
    allow_insecure: bool,
    notes: list[str],
) -> None:
    problems: list[str] = []
    valid_until = parse_date(fields.get("Valid-Until", ""))
    if valid_until is not None and now > valid_until:
        problems.append(
            f"the Release file of suite {source.suite} at {source.uri} expired on "
            f"{valid_until:%Y-%m-%d %H:%M} UTC (Valid-Until); the mirror is stale, refresh it "
            "or pass --allow-insecure-repositories"
        )
    date = parse_date(fields.get("Date", ""))
    if date is not None and date > now + CLOCK_SKEW:
        problems.append(
            f"the Release file of suite {source.suite} at {source.uri} is dated "
            f"{date:%Y-%m-%d %H:%M} UTC, in the future; check this machine's clock"
        )
    for problem in problems:
        if not allow_insecure:
            raise RepositoryError(problem)
        notes.append(problem.split(";")[0] + "; used because insecure repositories are allowed")


def _check_suite(source: AptSource, fields: Mapping[str, str], notes: list[str]) -> None:
    # apt warns when a Release names another suite than the one requested ("conflicting
    # distribution"), which happens with a misconfigured mirror or a replayed old Release.
    if source.is_flat:
        return
    names = {fields.get("Suite", ""), fields.get("Codename", "")}
    if source.suite not in names:
        note = (
            f"the Release file at {source.dist_url} names suite {fields.get('Suite', '?')} and "
            f"codename {fields.get('Codename', '?')}, not {source.suite}; check the mirror"
        )
        logger.warning("%s", note)
        notes.append(note)


def fetch_index(
    client: httpx.Client,
    release: Release,
    name: str,
    cache_dir: Path,
) -> bytes | None:
    """Return the decompressed contents of index `name` (such as `main/binary-amd64/Packages`).

    Tries the `.xz`, `.gz` and plain files the Release lists, in that order, moving on when the
    mirror does not have one. Verifies the size and SHA256 and caches the compressed file by
    hash. Returns None when the Release lists no such index. Raises RepositoryError when a
    downloaded file does not match the signed hash or no listed file can be fetched.
    """
    path = fetch_index_file(client, release, name, cache_dir)
    return None if path is None else path.read_bytes()


def fetch_index_file(
    client: httpx.Client,
    release: Release,
    name: str,
    cache_dir: Path,
) -> Path | None:
    """Like `fetch_index`, but return the path of the decompressed index in the cache.

    The decompressed file is kept in `<cache_dir>/decompressed/`, named after the compressed
    file's signed SHA256, so a later run reads it without decompressing again. It is written to
    a temporary file and renamed, so concurrent processes never see a partial index.
    """
    entries = [release.files[name + s] for s in (".xz", ".gz", "") if name + s in release.files]
    if not entries:
        return None

    for number, entry in enumerate(entries, start=1):
        cached = cache_dir / "indexes" / entry.sha256
        compressed = entry.path.endswith((".xz", ".gz"))
        plain = cache_dir / "decompressed" / entry.sha256 if compressed else cached
        if compressed and plain.exists():
            return plain
        if not (cached.exists() and sha256_file(cached) == entry.sha256):
            cached.parent.mkdir(parents=True, exist_ok=True)
            try:
                _download_index(client, release, entry, cached)
            except NotFoundError:
                if number == len(entries):
                    raise
                logger.debug(
                    "%s has no %s; trying the next compression", release.source, entry.path
                )
                continue
        if compressed:
            plain.parent.mkdir(parents=True, exist_ok=True)
            _decompress_file(cached, plain, entry.path, release)
        return plain
    raise AssertionError("the loop returns or raises on its last entry")


def _download_index(client: httpx.Client, release: Release, entry: IndexFile, cached: Path) -> None:
    base = release.source.dist_url
    urls = [f"{base}/{entry.path}"]
    if release.acquire_by_hash:
        directory = entry.path.rsplit("/", 1)[0]
        urls.insert(0, f"{base}/{directory}/by-hash/SHA256/{entry.sha256}")

    descriptor, temporary_name = tempfile.mkstemp(dir=cached.parent, prefix=".partial-")
    os.close(descriptor)
    temporary = Path(temporary_name)
    try:
        for number, url in enumerate(urls, start=1):
            try:
                size = download(
                    client, url, temporary, max_bytes=min(entry.size + 1, MAX_INDEX_BYTES)
                )
            except NotFoundError:
                if number == len(urls):
                    raise
                continue
            actual = sha256_file(temporary)
            if size != entry.size or actual != entry.sha256:
                raise RepositoryError(
                    f"index {url} does not match the signed Release of {release.source}: SHA256 "
                    f"{actual} ({size} bytes), expected {entry.sha256} ({entry.size} bytes); the "
                    "mirror may be mid-update or tampered with, retry later or use another mirror"
                )
            os.replace(temporary, cached)
            return
    finally:
        temporary.unlink(missing_ok=True)


def _decompress_file(source: Path, target: Path, path: str, release: Release) -> None:
    """Decompress `source` into `target` in bounded chunks, through a temporary file."""
    descriptor, temporary_name = tempfile.mkstemp(dir=target.parent, prefix=".partial-")
    temporary = Path(temporary_name)
    opener = lzma.open if path.endswith(".xz") else gzip.open
    try:
        with os.fdopen(descriptor, "wb") as output, opener(source, "rb") as stream:
            written = 0
            while chunk := stream.read(_DECOMPRESS_CHUNK):
                written += len(chunk)
                if written > MAX_PLAIN_INDEX_BYTES:
                    raise RepositoryError(
                        f"index {path} of {release.source} decompresses to more than "
                        f"{MAX_PLAIN_INDEX_BYTES} bytes and was rejected; check the mirror"
                    )
                output.write(chunk)
        os.replace(temporary, target)
    except (lzma.LZMAError, OSError, EOFError) as error:
        raise RepositoryError(
            f"index {path} of {release.source} cannot be decompressed: {error}"
        ) from error
    finally:
        temporary.unlink(missing_ok=True)
