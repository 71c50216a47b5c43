"""End-to-end planning and fetching against a signed repository served on 127.0.0.1.

The repository is built here: a fresh OpenPGP key signs InRelease (or Release.gpg), and a
test swaps served files to inject faults (tampered package, tampered index, bad signature,
expired Valid-Until). The HTTP server, signatures and hashes are real.
"""

from __future__ import annotations

import gzip
import hashlib
import threading
import warnings
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pysequoia
import pytest

from suture.ecosystems.base import PackageStatus, PlanOptions
from suture.ecosystems.dpkg.ecosystem import DpkgEcosystem
from suture.ecosystems.dpkg.fetch import download, fetch_packages, new_client
from suture.errors import PackageError, RepositoryError, SignatureError

DEB = b"!<arch>\n" + b"payload of hello 2.0" * 50


class _Repository:
    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.requests: list[str] = []


@pytest.fixture
def repository() -> Iterator[tuple[_Repository, str]]:
    repo = _Repository()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            repo.requests.append(self.path)
            body = repo.files.get(self.path)
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        yield repo, f"http://127.0.0.1:{server.server_address[1]}/debian"
    finally:
        server.shutdown()
        server.server_close()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _key() -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return pysequoia.Cert.generate("suture test archive <archive@example.org>")


def _publish(
    repo: _Repository,
    key: Any,
    *,
    valid_until: datetime | None = None,
    deb: bytes = DEB,
    detached: bool = False,
    signer: Any = None,
    unsigned: bool = False,
    date: datetime | None = None,
) -> None:
    """Serve one `hello 2.0` package, its index, and a Release signed as the arguments select."""
    packages = (
        "Package: hello\nVersion: 2.0\nArchitecture: amd64\n"
        "Filename: pool/main/h/hello/hello_2.0_amd64.deb\n"
        f"Size: {len(DEB)}\nSHA256: {hashlib.sha256(DEB).hexdigest()}\n"
        "Description: greeting\n long text\n"
    ).encode()
    packages_gz = gzip.compress(packages, mtime=0)

    now = datetime.now(UTC)
    until = valid_until or now + timedelta(days=7)
    date = date or now - timedelta(hours=1)
    release = (
        "Origin: Test\nSuite: stable\nCodename: bookworm\n"
        f"Date: {format_datetime(date, usegmt=True)}\n"
        f"Valid-Until: {format_datetime(until, usegmt=True)}\n"
        "Architectures: amd64\nComponents: main\nSHA256:\n"
        f" {_sha256(packages_gz)} {len(packages_gz)} main/binary-amd64/Packages.gz\n"
        f" {_sha256(packages)} {len(packages)} main/binary-amd64/Packages\n"
    ).encode()

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        sign_key = (signer or key).secrets.signer()
    repo.files.clear()
    base = "/debian/dists/stable"
    if unsigned:
        repo.files[f"{base}/Release"] = release
    elif detached:
        repo.files[f"{base}/Release"] = release
        repo.files[f"{base}/Release.gpg"] = pysequoia.sign(
            sign_key, release, mode=pysequoia.SignatureMode.DETACHED
        )
    else:
        repo.files[f"{base}/InRelease"] = pysequoia.sign(
            sign_key, release, mode=pysequoia.SignatureMode.CLEAR
        )
    repo.files[f"{base}/main/binary-amd64/Packages.gz"] = packages_gz
    repo.files["/debian/pool/main/h/hello/hello_2.0_amd64.deb"] = deb


def _image(memory_fs: type[Any], url: str, key: Any) -> Any:
    return memory_fs(
        {
            "/etc/os-release": "ID=debian\nVERSION_CODENAME=bookworm\n",
            "/etc/apt/sources.list.d/test.sources": (
                f"Types: deb\nURIs: {url}\nSuites: stable\nComponents: main\n"
                "Signed-By: /etc/apt/keyrings/test.asc\n"
            ),
            "/etc/apt/keyrings/test.asc": str(key),
            "/var/lib/dpkg/status": (
                "Package: hello\nStatus: install ok installed\nArchitecture: amd64\n"
                "Version: 1.0\n"
            ),
        }
    )


def _options(tmp_path: Path, **extra: Any) -> PlanOptions:
    return PlanOptions(cache_dir=tmp_path / "cache", host_apt_dir=tmp_path / "no-host", **extra)


@pytest.mark.parametrize("detached", [False, True])
def test_plan_and_fetch_signed_repository(
    repository: tuple[_Repository, str], memory_fs: type[Any], tmp_path: Path, detached: bool
) -> None:
    repo, url = repository
    key = _key()
    _publish(repo, key, detached=detached)
    plan = DpkgEcosystem().plan(_image(memory_fs, url, key), None, _options(tmp_path))
    assert [(p.name, p.target, p.status) for p in plan.packages] == [
        ("hello", "2.0", PackageStatus.UPDATE)
    ]
    download = plan.downloads["hello:amd64"]
    assert download.url == f"{url}/pool/main/h/hello/hello_2.0_amd64.deb"
    result = fetch_packages(plan, tmp_path / "cache")
    assert result.bytes_downloaded == len(DEB)
    assert result.paths["hello:amd64"].read_bytes() == DEB


def test_index_cached_by_hash(
    repository: tuple[_Repository, str], memory_fs: type[Any], tmp_path: Path
) -> None:
    repo, url = repository
    key = _key()
    _publish(repo, key)
    DpkgEcosystem().plan(_image(memory_fs, url, key), None, _options(tmp_path))
    cached = list((tmp_path / "cache" / "indexes").iterdir())
    assert len(cached) == 1
    assert hashlib.sha256(cached[0].read_bytes()).hexdigest() == cached[0].name


def test_tampered_package_rejected(
    repository: tuple[_Repository, str], memory_fs: type[Any], tmp_path: Path
) -> None:
    repo, url = repository
    key = _key()
    _publish(repo, key, deb=DEB[:-1] + b"X")
    plan = DpkgEcosystem().plan(_image(memory_fs, url, key), None, _options(tmp_path))
    with pytest.raises(PackageError) as raised:
        fetch_packages(plan, tmp_path / "cache")
    message = str(raised.value)
    assert "hello" in message
    assert plan.downloads["hello:amd64"].url in message
    assert plan.downloads["hello:amd64"].sha256 in message
    assert hashlib.sha256(DEB[:-1] + b"X").hexdigest() in message
    assert list((tmp_path / "cache" / "packages").iterdir()) == []


def test_tampered_index_rejected(
    repository: tuple[_Repository, str], memory_fs: type[Any], tmp_path: Path
) -> None:
    repo, url = repository
    key = _key()
    _publish(repo, key)
    path = "/debian/dists/stable/main/binary-amd64/Packages.gz"
    repo.files[path] = gzip.compress(b"Package: hello\nVersion: 9.0\n", mtime=0)
    with pytest.raises(RepositoryError, match="does not match the signed Release"):
        DpkgEcosystem().plan(_image(memory_fs, url, key), None, _options(tmp_path))
    assert [p.name for p in (tmp_path / "cache" / "indexes").iterdir()] == []


def test_wrong_key_signature_rejected(
    repository: tuple[_Repository, str], memory_fs: type[Any], tmp_path: Path
) -> None:
    repo, url = repository
    key = _key()
    _publish(repo, key, signer=_key())
    with pytest.raises(SignatureError, match="InRelease"):
        DpkgEcosystem().plan(_image(memory_fs, url, key), None, _options(tmp_path))
    assert not any("Packages" in request for request in repo.requests)


def test_expired_valid_until(
    repository: tuple[_Repository, str], memory_fs: type[Any], tmp_path: Path
) -> None:
    repo, url = repository
    key = _key()
    _publish(repo, key, valid_until=datetime.now(UTC) - timedelta(days=1))
    with pytest.raises(RepositoryError, match=r"suite stable .* expired"):
        DpkgEcosystem().plan(_image(memory_fs, url, key), None, _options(tmp_path))
    plan = DpkgEcosystem().plan(
        _image(memory_fs, url, key), None, _options(tmp_path, allow_insecure_repositories=True)
    )
    assert any("expired" in note for note in plan.notes)
    assert plan.updates


def test_missing_signed_by_file(
    repository: tuple[_Repository, str], memory_fs: type[Any], tmp_path: Path
) -> None:
    repo, url = repository
    key = _key()
    _publish(repo, key)
    fs = _image(memory_fs, url, key)
    del fs.files["/etc/apt/keyrings/test.asc"]
    with pytest.raises(SignatureError, match=r"/etc/apt/keyrings/test\.asc"):
        DpkgEcosystem().plan(fs, None, _options(tmp_path))


def test_mirror_rewrite_reaches_server(
    repository: tuple[_Repository, str], memory_fs: type[Any], tmp_path: Path
) -> None:
    repo, url = repository
    key = _key()
    _publish(repo, key)
    fs = _image(memory_fs, "http://archive.invalid/debian", key)
    options = _options(tmp_path, mirrors=[("http://archive.invalid/debian", url)])
    plan = DpkgEcosystem().plan(fs, None, options)
    assert plan.downloads["hello:amd64"].url.startswith(url)


def test_unsigned_repository_needs_flag(
    repository: tuple[_Repository, str], memory_fs: type[Any], tmp_path: Path
) -> None:
    repo, url = repository
    key = _key()
    _publish(repo, key, unsigned=True)
    with pytest.raises(SignatureError, match="not signed"):
        DpkgEcosystem().plan(_image(memory_fs, url, key), None, _options(tmp_path))
    plan = DpkgEcosystem().plan(
        _image(memory_fs, url, key), None, _options(tmp_path, allow_insecure_repositories=True)
    )
    assert any("not signed" in note for note in plan.notes)


def test_release_dated_in_future(
    repository: tuple[_Repository, str], memory_fs: type[Any], tmp_path: Path
) -> None:
    repo, url = repository
    key = _key()
    _publish(repo, key, date=datetime.now(UTC) + timedelta(days=2))
    with pytest.raises(RepositoryError, match="in the future"):
        DpkgEcosystem().plan(_image(memory_fs, url, key), None, _options(tmp_path))


def test_inline_signed_by_key(
    repository: tuple[_Repository, str], memory_fs: type[Any], tmp_path: Path
) -> None:
    repo, url = repository
    key = _key()
    _publish(repo, key)
    folded = "\n".join(f" {line}" if line else " ." for line in str(key).splitlines())
    fs = _image(memory_fs, url, key)
    fs.files["/etc/apt/sources.list.d/test.sources"] = (
        f"Types: deb\nURIs: {url}\nSuites: stable\nComponents: main\nSigned-By:\n{folded}\n"
    ).encode()
    del fs.files["/etc/apt/keyrings/test.asc"]
    plan = DpkgEcosystem().plan(fs, None, _options(tmp_path))
    assert [p.name for p in plan.updates] == ["hello"]


def test_trusted_source_skips_signature(
    repository: tuple[_Repository, str], memory_fs: type[Any], tmp_path: Path
) -> None:
    repo, url = repository
    key = _key()
    _publish(repo, key, signer=_key())
    fs = _image(memory_fs, url, key)
    fs.files["/etc/apt/sources.list.d/test.sources"] = (
        f"Types: deb\nURIs: {url}\nSuites: stable\nComponents: main\nTrusted: yes\n"
    ).encode()
    plan = DpkgEcosystem().plan(fs, None, _options(tmp_path))
    assert any("trusted=yes" in note for note in plan.notes)
    assert [p.name for p in plan.updates] == ["hello"]


def test_file_uri_rejected_with_hint(memory_fs: type[Any], tmp_path: Path) -> None:
    fs = _image(memory_fs, "file:/srv/repo", _key())
    with pytest.raises(RepositoryError, match="only http and https"):
        DpkgEcosystem().plan(fs, None, _options(tmp_path))


def test_release_for_other_suite_noted(
    repository: tuple[_Repository, str], memory_fs: type[Any], tmp_path: Path
) -> None:
    repo, url = repository
    key = _key()
    _publish(repo, key)
    base = "/debian/dists/stable"
    repo.files["/debian/dists/testing/InRelease"] = repo.files[f"{base}/InRelease"]
    repo.files["/debian/dists/testing/main/binary-amd64/Packages.gz"] = repo.files[
        f"{base}/main/binary-amd64/Packages.gz"
    ]
    fs = _image(memory_fs, url, key)
    fs.files["/etc/apt/sources.list.d/test.sources"] = fs.files[
        "/etc/apt/sources.list.d/test.sources"
    ].replace(b"Suites: stable", b"Suites: testing")
    plan = DpkgEcosystem().plan(fs, None, _options(tmp_path))
    assert any("not testing" in note for note in plan.notes)


def test_download_retries_after_503(tmp_path: Path) -> None:
    # Fault injection: the first request gets a 503 response with Retry-After: 1.
    calls: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            calls.append(self.path)
            if len(calls) == 1:
                self.send_response(503)
                self.send_header("Retry-After", "1")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Length", "5")
            self.end_headers()
            self.wfile.write(b"hello")

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    try:
        with new_client() as client:
            url = f"http://127.0.0.1:{server.server_address[1]}/file"
            size = download(client, url, tmp_path / "file")
    finally:
        server.shutdown()
        server.server_close()
    assert size == 5
    assert len(calls) == 2
    assert (tmp_path / "file").read_bytes() == b"hello"


def test_missing_compressed_index_falls_back(
    repository: tuple[_Repository, str], memory_fs: type[Any], tmp_path: Path
) -> None:
    repo, url = repository
    key = _key()
    _publish(repo, key)
    # The Release lists Packages.gz and Packages; the mirror serves only the plain file.
    base = "/debian/dists/stable/main/binary-amd64"
    packages_gz = repo.files.pop(f"{base}/Packages.gz")
    repo.files[f"{base}/Packages"] = gzip.decompress(packages_gz)
    plan = DpkgEcosystem().plan(_image(memory_fs, url, key), None, _options(tmp_path))
    assert [p.name for p in plan.updates] == ["hello"]


def test_unsigned_inrelease_falls_back_to_release_gpg(
    repository: tuple[_Repository, str], memory_fs: type[Any], tmp_path: Path
) -> None:
    repo, url = repository
    key = _key()
    _publish(repo, key, detached=True)
    base = "/debian/dists/stable"
    repo.files[f"{base}/InRelease"] = repo.files[f"{base}/Release"]
    plan = DpkgEcosystem().plan(_image(memory_fs, url, key), None, _options(tmp_path))
    assert "hello:amd64" in plan.downloads


def test_unsigned_inrelease_without_gpg_needs_flag(
    repository: tuple[_Repository, str], memory_fs: type[Any], tmp_path: Path
) -> None:
    repo, url = repository
    key = _key()
    _publish(repo, key, unsigned=True)
    base = "/debian/dists/stable"
    repo.files[f"{base}/InRelease"] = repo.files[f"{base}/Release"]
    with pytest.raises(SignatureError, match="not signed"):
        DpkgEcosystem().plan(_image(memory_fs, url, key), None, _options(tmp_path / "a"))
    plan = DpkgEcosystem().plan(
        _image(memory_fs, url, key), None,
        _options(tmp_path / "b", allow_insecure_repositories=True),
    )
    assert any("not signed" in note for note in plan.notes)
