"""Read the Debian mirror from the host's apt sources and fetch its release files.

The harness never names a mirror host: it reads the deb822 file
/etc/apt/sources.list.d/debian.sources, whose `URIs` entries give the main
archive (suites without `-security`) and the security archive (suites ending in
`-security`). Other sources files on the host (third-party vendors) are ignored.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import re
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from debian.deb822 import Deb822

logger = logging.getLogger(__name__)

SOURCES_FILE = Path("/etc/apt/sources.list.d/debian.sources")
HOST_KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
HTTP_TIMEOUT = 60.0


@dataclass(frozen=True)
class MirrorUrls:
    debian: str
    security: str


@functools.cache
def read_mirror_urls(sources_file: Path = SOURCES_FILE) -> MirrorUrls:
    """Parse the host's deb822 sources file into the main and security archive URLs."""
    debian: str | None = None
    security: str | None = None
    with sources_file.open(encoding="utf-8") as handle:
        for stanza in Deb822.iter_paragraphs(handle):
            if "deb" not in stanza.get("Types", "").split():
                continue
            uris = stanza.get("URIs", "").split()
            suites = stanza.get("Suites", "").split()
            if not uris or not suites:
                continue
            if any(suite.endswith("-security") for suite in suites):
                security = security or uris[0].rstrip("/")
            else:
                debian = debian or uris[0].rstrip("/")
    if debian is None:
        raise RuntimeError(f"{sources_file}: no stanza lists a Debian main archive URI")
    if security is None:
        # A host without a security entry: the Debian layout puts it beside the archive.
        security = re.sub(r"/debian$", "/debian-security", debian)
    return MirrorUrls(debian=debian, security=security)


def debian_mirror_url() -> str:
    """Return the main Debian archive URL of the host, for example `http://HOST/debian`."""
    return read_mirror_urls().debian


def security_mirror_url() -> str:
    """Return the Debian security archive URL of the host."""
    return read_mirror_urls().security


def archive_url_for_suite(suite: str) -> str:
    """Return the archive URL that serves `suite` (the security archive for `*-security`)."""
    if suite.endswith("-security"):
        return security_mirror_url()
    return debian_mirror_url()


def http_get(url: str, timeout: float = HTTP_TIMEOUT) -> bytes:
    """Download `url` into memory; raise RuntimeError naming the URL on failure."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            data: bytes = response.read()
    except OSError as error:
        raise RuntimeError(f"failed to download {url}: {error}") from error
    logger.debug("fetched %s (%d bytes)", url, len(data))
    return data


def http_download(url: str, dest: Path, sha256: str | None = None) -> Path:
    """Stream `url` to `dest`, checking the SHA-256 digest when one is given."""
    digest = hashlib.sha256()
    # A name of its own, so that processes downloading the same file never share a partial one.
    descriptor, name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    os.fchmod(descriptor, 0o644)
    tmp = Path(name)
    try:
        with os.fdopen(descriptor, "wb") as out, \
                urllib.request.urlopen(url, timeout=HTTP_TIMEOUT) as response:
            while chunk := response.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
        if sha256 is not None and digest.hexdigest() != sha256:
            raise RuntimeError(
                f"{url}: sha256 {digest.hexdigest()} does not match index {sha256}")
        tmp.rename(dest)
    except OSError as error:
        raise RuntimeError(f"failed to download {url}: {error}") from error
    finally:
        tmp.unlink(missing_ok=True)
    return dest


@functools.cache
def fetch_inrelease(suite: str) -> str:
    """Return the clear-signed InRelease text of `suite` from the host's mirror."""
    url = f"{archive_url_for_suite(suite)}/dists/{suite}/InRelease"
    return http_get(url).decode("utf-8")


def release_date(suite: str) -> str:
    """Return the `Date:` field of the suite's InRelease file."""
    match = re.search(r"^Date: (.+)$", fetch_inrelease(suite), re.MULTILINE)
    if match is None:
        raise RuntimeError(f"InRelease of {suite} has no Date field")
    return match.group(1).strip()
