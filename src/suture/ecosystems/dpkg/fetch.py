"""Downloading repository files and packages: bounded retries, hash checks, a content cache.

Packages land in `<cache_dir>/packages/<sha256>.deb` only after their size and SHA256 match the
signed `Packages` index; a mismatch leaves nothing in the cache.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import ssl
import tempfile
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx

from suture.ecosystems.base import PackageFile, Plan
from suture.errors import PackageError, RepositoryError

logger = logging.getLogger(__name__)

ProgressHook = Callable[[str, int, int | None], None]
"""Called as (label, bytes done, total bytes or None) while a file downloads."""

DEFAULT_TIMEOUT = httpx.Timeout(60.0, connect=15.0)
MAX_ATTEMPTS = 4
MAX_RETRY_AFTER = 30.0
_RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})
_CHUNK = 1 << 16


class NotFoundError(RepositoryError):
    """A repository URL that returned 404 or 410."""


@dataclass(frozen=True)
class FetchResult:
    """Downloaded packages by `name:arch` key, and how many bytes came over the network."""

    paths: Mapping[str, Path]
    bytes_downloaded: int


def new_client(timeout: httpx.Timeout = DEFAULT_TIMEOUT) -> httpx.Client:
    """Return an HTTP client with TLS verification on and redirects followed."""
    context = _tls_context(os.environ.get("SSL_CERT_FILE"), os.environ.get("SSL_CERT_DIR"))
    return httpx.Client(timeout=timeout, follow_redirects=True, verify=context)


@functools.lru_cache(maxsize=4)
def _tls_context(cert_file: str | None, cert_dir: str | None) -> ssl.SSLContext:
    """Build httpx's default verifying TLS context once per CA setting.

    Loading the CA bundle costs tens of milliseconds and a patch opens several clients.
    httpx picks the CA bundle from SSL_CERT_FILE, SSL_CERT_DIR or certifi, so those
    variables are the cache key.
    """
    return httpx.create_ssl_context(verify=True)


def download(
    client: httpx.Client,
    url: str,
    destination: Path,
    *,
    label: str = "",
    progress: ProgressHook | None = None,
    max_bytes: int | None = None,
) -> int:
    """Download `url` into `destination` with bounded retries; return the number of bytes.

    Retries connection errors, timeouts and 408/429/5xx responses up to MAX_ATTEMPTS times with
    exponential backoff. Raises NotFoundError for 404 and 410, RepositoryError otherwise.
    """
    if not url.startswith(("http://", "https://")):
        raise RepositoryError(
            f"cannot fetch {url}: only http and https repositories are supported; "
            "rewrite the URI with --mirror FROM=TO"
        )
    delay = 0.5
    for attempt in range(1, MAX_ATTEMPTS + 1):
        try:
            return _download_once(client, url, destination, label or url, progress, max_bytes)
        except httpx.HTTPStatusError as error:
            status = error.response.status_code
            if status in (404, 410):
                raise NotFoundError(f"{url} was not found (HTTP {status})") from error
            if status not in _RETRY_STATUS or attempt == MAX_ATTEMPTS:
                raise RepositoryError(
                    f"download of {url} failed with HTTP {status} after {attempt} attempts"
                ) from error
            logger.warning("HTTP %d from %s; retrying (attempt %d)", status, url, attempt)
            delay = max(delay, _retry_after(error.response))
        except httpx.TransportError as error:
            if attempt == MAX_ATTEMPTS:
                raise RepositoryError(
                    f"download of {url} failed after {attempt} attempts: {error}; "
                    "check the network or name a reachable mirror with --mirror FROM=TO"
                ) from error
            logger.warning("download of %s failed (%s); retrying (attempt %d)", url, error, attempt)
        time.sleep(delay)
        delay *= 2
    raise AssertionError("unreachable")


def _retry_after(response: httpx.Response) -> float:
    # Only the delay-seconds form of Retry-After is honoured, capped so a server cannot stall
    # the command.
    value = response.headers.get("Retry-After", "")
    return min(float(value), MAX_RETRY_AFTER) if value.isdigit() else 0.0


def _download_once(
    client: httpx.Client,
    url: str,
    destination: Path,
    label: str,
    progress: ProgressHook | None,
    max_bytes: int | None,
) -> int:
    started = time.monotonic()
    done = 0
    with client.stream("GET", url) as response, destination.open("wb") as output:
        response.raise_for_status()
        total = (
            int(response.headers["Content-Length"])
            if "Content-Length" in response.headers
            else None
        )
        for chunk in response.iter_bytes(_CHUNK):
            done += len(chunk)
            if max_bytes is not None and done > max_bytes:
                raise RepositoryError(f"{url} is larger than the expected {max_bytes} bytes")
            output.write(chunk)
            if progress is not None:
                progress(label, done, total)
    logger.debug("fetched %s (%d bytes) in %.2fs", url, done, time.monotonic() - started)
    return done


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as stream:
        for chunk in iter(lambda: stream.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def package_cache_path(cache_dir: Path, sha256: str) -> Path:
    return cache_dir / "packages" / f"{sha256}.deb"


def fetch_package(
    client: httpx.Client,
    package: PackageFile,
    cache_dir: Path,
    progress: ProgressHook | None = None,
) -> tuple[Path, int]:
    """Fetch one package into the cache unless it is there; return its path and bytes fetched.

    Raises PackageError naming the package, URL and both hashes when the file does not match the
    index, and removes the partial file.
    """
    final = package_cache_path(cache_dir, package.sha256)
    if final.exists() and final.stat().st_size == package.size:
        if sha256_file(final) == package.sha256:
            return final, 0
        final.unlink()
    final.parent.mkdir(parents=True, exist_ok=True)

    label = f"{package.name}_{package.version}_{package.architecture}.deb"
    descriptor, temporary_name = tempfile.mkstemp(dir=final.parent, prefix=".partial-")
    os.close(descriptor)
    temporary = Path(temporary_name)
    try:
        # Allow one extra byte so that an oversized file is reported as a size mismatch.
        fetched = download(
            client,
            package.url,
            temporary,
            label=label,
            progress=progress,
            max_bytes=package.size + 1,
        )
        actual = sha256_file(temporary)
        if fetched != package.size or actual != package.sha256:
            raise PackageError(
                f"package {package.name} {package.version} from {package.url} does not match the "
                f"signed index: SHA256 {actual} ({fetched} bytes), expected {package.sha256} "
                f"({package.size} bytes); the mirror may be corrupt or tampered with"
            )
        os.replace(temporary, final)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return final, fetched


def fetch_packages(
    plan: Plan,
    cache_dir: Path,
    progress: ProgressHook | None = None,
    concurrency: int = 4,
) -> FetchResult:
    """Download every file in `plan.downloads` concurrently into the cache, verified.

    The first failure is raised once the other downloads stop. Files that verified stay in the
    cache, which is harmless because they are addressed by their hash.
    """
    paths: dict[str, Path] = {}
    total = 0
    with new_client() as client, ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        futures = {
            key: pool.submit(fetch_package, client, package, cache_dir, progress)
            for key, package in sorted(plan.downloads.items())
        }
        errors: list[BaseException] = []
        for key, future in futures.items():
            try:
                path, fetched = future.result()
            except Exception as error:  # the first one is re-raised once the pool drains
                errors.append(error)
                continue
            paths[key] = path
            total += fetched
        if errors:
            raise errors[0]
    logger.info("fetched %d packages, %d bytes downloaded", len(paths), total)
    return FetchResult(paths=paths, bytes_downloaded=total)
