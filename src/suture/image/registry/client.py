"""A client for one registry over the OCI distribution API (distribution-spec v1.1), on httpx.

oras-py 0.2.43 was evaluated for this module and is not used, because it lacks the parts suture
needs. It is built on `requests`, and it downloads blobs to files without checking their digest
while streaming. It keeps one bearer token instead of one per scope set and has no
cross-repository mount. A chunked upload that loses its connection is not resumed, and TLS
verification is switched for the whole session instead of per registry. So this client
implements the small API surface (ping, manifests, blobs, uploads) directly.

Every request has connect and read timeouts and goes through `RetryPolicy`; a 401 is answered
once through `Authenticator`. Errors name the registry, the repository and what to check, and
never include credentials or tokens.
"""

from __future__ import annotations

import functools
import logging
import ssl
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import certifi
import httpx

from suture.errors import AuthError, DigestMismatchError, ImageError, RegistryError
from suture.image.model import ALL_MANIFEST_TYPES, sha256_digest, verify_digest
from suture.image.reference import DEFAULT_REGISTRY, DOCKER_HUB_API_HOST
from suture.image.registry.auth import Authenticator, login_hint, repository_scope
from suture.image.registry.credentials import CredentialSources, find_credentials
from suture.image.registry.retry import RETRYABLE_STATUS, RetryPolicy, describe_wait

logger = logging.getLogger(__name__)

# distribution rejects manifests above 4 MiB; reading more than that is refused.
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
_MAX_REDIRECTS = 5
_LOOPBACK_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})
BODY_READ_ERRORS = (httpx.ReadError, httpx.RemoteProtocolError, httpx.ReadTimeout)
_MANIFEST_ACCEPT = ", ".join(sorted(ALL_MANIFEST_TYPES))

ProgressHook = Callable[[str, int, int | None], None]


@dataclass(frozen=True)
class RegistrySettings:
    """Connection settings shared by every registry client of one command.

    `timeout` is the connect and read timeout of each request in seconds. Blobs of at least
    `chunk_threshold` bytes are uploaded in PATCH chunks of `chunk_size` bytes. A smaller blob
    goes up in one request from memory, so the threshold bounds the memory an upload holds.
    """

    insecure_registries: frozenset[str] = frozenset()
    ca_file: Path | None = None
    credentials: CredentialSources = field(default_factory=CredentialSources)
    timeout: float = 60.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    chunk_threshold: int = 16 * 1024 * 1024
    chunk_size: int = 8 * 1024 * 1024
    progress: ProgressHook | None = None


@dataclass(frozen=True)
class ManifestResponse:
    """A manifest as the registry served it: exact bytes, media type and digest."""

    raw: bytes
    media_type: str
    digest: str


class RegistryClient:
    """Talks to one registry; safe to share between threads once created."""

    def __init__(self, registry: str, settings: RegistrySettings | None = None) -> None:
        self.registry = registry
        self.host = DOCKER_HUB_API_HOST if registry == DEFAULT_REGISTRY else registry
        self.settings = settings or RegistrySettings()
        self._base_url: str | None = None
        self._http: httpx.Client | None = None
        self._foreign_http: httpx.Client | None = None
        self._ready = threading.Lock()
        self._auth = Authenticator(registry, self._load_credentials, self._send_token_request)
        self._repository_for_credentials = ""

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        for client in (self._http, self._foreign_http):
            if client is not None:
                client.close()

    @property
    def base_url(self) -> str:
        """`https://host` or `http://host`, chosen by the first request."""
        self._connect()
        assert self._base_url is not None
        return self._base_url

    def url(self, path: str) -> str:
        return f"{self.base_url}{path}"

    # Manifests.

    def get_manifest(self, repository: str, reference: str) -> ManifestResponse:
        """Fetch a manifest or index by tag or digest and verify its digest.

        A manifest requested by digest must hash to it. One requested by tag must hash to the
        `Docker-Content-Digest` header when the registry sends one.
        """
        what = f"manifest {_display(self.registry, repository, reference)}"
        scopes = [repository_scope(repository, "pull")]
        policy = self.settings.retry
        attempt = 0
        while True:
            attempt += 1
            response = self.request(
                "GET", self.url(f"/v2/{repository}/manifests/{reference}"), scopes=scopes,
                what=what, repository=repository, headers={"Accept": _MANIFEST_ACCEPT},
                stream=True,
            )
            try:
                self.check(response, (200,), what, repository, "pull")
                raw = _read_limited(response, MAX_MANIFEST_BYTES, what)
                break
            except BODY_READ_ERRORS as error:
                # The connection broke inside the body: fetch the whole manifest again.
                if not policy.should_retry(attempt):
                    raise RegistryError(
                        f"{what}: reading the manifest failed after {attempt} attempts: {error}"
                    ) from error
                delay = policy.delay(attempt)
                logger.warning("%s: %s while reading; %s", what, type(error).__name__,
                               describe_wait(delay))
                policy.sleep(delay)
            finally:
                response.close()

        digest = sha256_digest(raw)
        if reference.startswith("sha") and ":" in reference:
            verify_digest(raw, reference, what)
        else:
            header = response.headers.get("docker-content-digest")
            if header and header != digest:
                raise DigestMismatchError(
                    f"{what}: content has digest {digest}, but the registry's "
                    f"Docker-Content-Digest header says {header}"
                )
        media_type = response.headers.get("content-type", "").split(";")[0].strip()
        return ManifestResponse(raw, media_type, digest)

    def put_manifest(self, repository: str, reference: str, raw: bytes, media_type: str) -> str:
        """Upload a manifest under a tag or its digest and return its digest."""
        what = f"manifest {_display(self.registry, repository, reference)}"
        digest = sha256_digest(raw)
        response = self.request(
            "PUT", self.url(f"/v2/{repository}/manifests/{reference}"),
            scopes=[repository_scope(repository, "pull,push")], what=what,
            repository=repository, headers={"Content-Type": media_type}, content=raw,
        )
        self.check(response, (200, 201), what, repository, "push")
        header = response.headers.get("docker-content-digest")
        if header and header != digest:
            raise RegistryError(
                f"{what}: registry stored digest {header}, expected {digest}; the registry "
                "rewrote the manifest"
            )
        logger.debug("pushed %s (%d bytes, %s)", what, len(raw), digest)
        return digest

    # Blobs.

    def blob_exists(self, repository: str, digest: str) -> bool:
        """Whether the repository already has the blob (HEAD returns 200)."""
        what = f"blob {digest} in {self.registry}/{repository}"
        response = self.request(
            "HEAD", self.url(f"/v2/{repository}/blobs/{digest}"),
            scopes=[repository_scope(repository, "pull,push")], what=what, repository=repository,
        )
        if response.status_code == 404:
            return False
        self.check(response, (200,), what, repository, "pull")
        return True

    def open_blob_response(
        self, repository: str, digest: str, offset: int = 0
    ) -> httpx.Response:
        """Start a streamed GET of a blob from `offset`, following redirects to storage.

        A redirect to another host is followed without the Authorization header. The caller
        closes the response. A 206 status means the registry honoured the range.
        """
        what = f"blob {digest} from {self.registry}/{repository}"
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        response = self.request(
            "GET", self.url(f"/v2/{repository}/blobs/{digest}"),
            scopes=[repository_scope(repository, "pull")], what=what, repository=repository,
            headers=headers, stream=True,
        )
        for _ in range(_MAX_REDIRECTS):
            if response.status_code not in (301, 302, 303, 307, 308):
                break
            location = response.headers.get("location", "")
            response.close()
            target = httpx.URL(self.url("/")).join(location)
            if target.host == httpx.URL(self.base_url).host:
                response = self.request(
                    "GET", str(target), scopes=[repository_scope(repository, "pull")],
                    what=what, repository=repository, headers=headers, stream=True,
                )
            else:
                foreign = self._foreign_client()
                response = self._send_with_retry(
                    functools.partial(foreign.build_request, "GET", target, headers=headers),
                    what, stream=True, client=foreign,
                )
        expected = (200, 206) if offset else (200,)
        if response.status_code not in expected:
            try:
                self.check(response, expected, what, repository, "pull")
            finally:
                response.close()
        return response

    def mount_blob(self, repository: str, digest: str, source_repository: str) -> str | None:
        """Ask the registry to mount a blob from another repository.

        Returns None when the blob is mounted (201), or the upload location the registry opened
        instead (202), which the caller uploads into.
        """
        what = f"mount of blob {digest} from {source_repository} into {repository}"
        response = self.request(
            "POST", self.url(f"/v2/{repository}/blobs/uploads/"),
            params={"mount": digest, "from": source_repository},
            scopes=[repository_scope(repository, "pull,push"),
                    repository_scope(source_repository, "pull")],
            what=what, repository=repository,
        )
        self.check(response, (201, 202), what, repository, "push")
        if response.status_code == 201:
            logger.debug("mounted %s", what)
            return None
        return self.location(response, what)

    def location(self, response: httpx.Response, what: str) -> str:
        """Return the absolute URL in a response's Location header."""
        location = response.headers.get("location")
        if not location:
            raise RegistryError(f"{what}: registry {self.registry} sent no Location header")
        return str(httpx.URL(self.url("/")).join(location))

    # Requests.

    def request(
        self,
        method: str,
        url: str,
        *,
        scopes: Sequence[str],
        what: str,
        repository: str,
        headers: dict[str, str] | None = None,
        content: bytes | None = None,
        params: dict[str, str] | None = None,
        stream: bool = False,
        retry: bool = True,
    ) -> httpx.Response:
        """Send a request with authentication, timeouts and retries, and return the last response.

        Connection errors, 429 and transient 5xx are retried under the retry policy unless
        `retry` is False. After a 401 the request is sent once more with credentials or a new
        token. The caller checks the final status with `check`.
        """
        self._repository_for_credentials = repository
        client = self._connect()
        reauthenticated = False
        while True:
            def build() -> httpx.Request:
                request_headers = dict(headers or {})
                request_headers.update(self._auth.headers(scopes))
                return client.build_request(method, url, headers=request_headers,
                                            content=content, params=params)

            response = self._send_with_retry(build, what, stream=stream, client=client,
                                             retry=retry)
            if response.status_code != 401 or reauthenticated:
                return response
            response.close()
            reauthenticated = True
            if not self._auth.handle_unauthorized(response, scopes):
                return response

    def check(
        self, response: httpx.Response, expected: Sequence[int], what: str, repository: str,
        action: str,
    ) -> None:
        """Raise an error naming registry, repository and next step unless status is expected."""
        status = response.status_code
        if status in expected:
            return
        detail = _registry_error_detail(response)
        where = f"{self.registry}/{repository}"
        if status == 401:
            raise AuthError(
                f"{what}: registry {self.registry} rejected the credentials for {repository} "
                f"(HTTP 401{detail}): {login_hint(self.registry)}"
            )
        if status == 403:
            raise AuthError(
                f"{what}: access denied to {where} (HTTP 403{detail}); check that the account "
                f"may {action} this repository"
            )
        if status == 404:
            raise RegistryError(
                f"{what}: not found in {where} (HTTP 404{detail}); check that the repository "
                "exists and the tag or digest is right"
            )
        if status in RETRYABLE_STATUS:
            raise RegistryError(
                f"{what}: registry {self.registry} still responded with HTTP {status}{detail} "
                f"after {self.settings.retry.max_attempts} attempts; try again later"
            )
        raise RegistryError(
            f"{what}: registry {self.registry} responded with HTTP {status}{detail}"
        )

    def _send_with_retry(
        self,
        build: Callable[[], httpx.Request],
        what: str,
        *,
        stream: bool,
        client: httpx.Client,
        retry: bool = True,
    ) -> httpx.Response:
        policy = self.settings.retry
        attempt = 0
        while True:
            attempt += 1
            request = build()
            try:
                response = client.send(request, stream=stream)
            except httpx.TransportError as error:
                if _is_tls_error(error):
                    raise RegistryError(
                        f"{what}: TLS handshake with {request.url.host} failed ({error}); pass "
                        "--registry-ca FILE with the registry's CA certificate, or "
                        f"--insecure-registry {self.registry} if you trust the network"
                    ) from error
                if not retry or not policy.should_retry(attempt):
                    raise RegistryError(
                        f"{what}: {type(error).__name__} talking to {request.url.host} after "
                        f"{attempt} attempt(s): {error}"
                    ) from error
                delay = policy.delay(attempt)
                logger.warning("%s: %s (%s); %s", what, type(error).__name__, error,
                               describe_wait(delay))
                policy.sleep(delay)
                continue
            if (retry and response.status_code in RETRYABLE_STATUS
                    and policy.should_retry(attempt)):
                delay = policy.delay(attempt, response.headers.get("retry-after"))
                response.close()
                logger.warning("%s: HTTP %d from %s; %s", what, response.status_code,
                               request.url.host, describe_wait(delay))
                policy.sleep(delay)
                continue
            return response

    # Connection set-up.

    def _connect(self) -> httpx.Client:
        with self._ready:
            if self._http is not None:
                return self._http
            errors: list[str] = []
            tls_failed = False
            for scheme, verify in self._candidates():
                client = self._new_client(verify)
                base = f"{scheme}://{self.host}"
                try:
                    response = self._send_with_retry(
                        functools.partial(client.build_request, "GET", f"{base}/v2/"),
                        f"ping of {base}/v2/", stream=False, client=client,
                    )
                except RegistryError as error:
                    client.close()
                    errors.append(str(error))
                    cause = error.__cause__
                    tls_failed |= isinstance(cause, httpx.TransportError) and _is_tls_error(cause)
                    continue
                if response.status_code not in (200, 401):
                    client.close()
                    # An HTTPS server returns 400 to a plain-HTTP request. After a TLS failure
                    # that line only hides the real error.
                    if not (tls_failed and scheme == "http" and response.status_code == 400):
                        errors.append(f"{base}/v2/ responded with HTTP {response.status_code}")
                    continue
                self._http, self._base_url = client, base
                logger.debug("registry %s speaks the v2 API at %s", self.registry, base)
                if response.status_code == 401:
                    self._auth.handle_unauthorized(response, ())
                return client
            raise RegistryError(
                f"cannot reach registry {self.registry}: " + "; ".join(errors)
                + "; check that the registry is running and its address is right"
            )

    def _candidates(self) -> list[tuple[str, ssl.SSLContext | bool]]:
        host = self.host.rsplit(":", 1)[0] if not self.host.endswith("]") else self.host
        insecure = self.settings.insecure_registries
        if self.registry in insecure or self.host in insecure:
            return [("https", False), ("http", False)]
        if host in _LOOPBACK_HOSTS:
            # docker treats loopback registries as insecure; suture still verifies TLS there and
            # falls back only to plain HTTP.
            return [("https", self._ssl_context()), ("http", False)]
        return [("https", self._ssl_context())]

    def _ssl_context(self) -> ssl.SSLContext:
        ca_file = self.settings.ca_file
        if ca_file is None:
            return _verifying_context(None, b"")
        try:
            data = Path(ca_file).read_bytes()
        except OSError as error:
            raise RegistryError(f"cannot load CA file {ca_file}: {error}") from error
        return _verifying_context(str(ca_file), data)

    def _new_client(self, verify: ssl.SSLContext | bool) -> httpx.Client:
        timeout = httpx.Timeout(self.settings.timeout, connect=min(self.settings.timeout, 30.0))
        return httpx.Client(verify=verify, timeout=timeout, follow_redirects=False,
                            headers={"User-Agent": "suture"})

    def _foreign_client(self) -> httpx.Client:
        if self._foreign_http is None:
            self._foreign_http = self._new_client(self._ssl_context())
        return self._foreign_http

    def _load_credentials(self) -> Any:
        # NOTE: credentials are looked up once per client, for the first repository it talks
        # to, so an auth file entry for another namespace of the same registry is not used.
        return find_credentials(self.registry, self._repository_for_credentials,
                                self.settings.credentials)

    def _send_token_request(self, request: httpx.Request) -> httpx.Response:
        client = self._http if self._http is not None else self._foreign_client()
        return self._send_with_retry(lambda: request, f"token request to {request.url.host}",
                                     stream=False, client=client)


@functools.lru_cache(maxsize=8)
def _verifying_context(ca_file: str | None, ca_data: bytes) -> ssl.SSLContext:
    """Build a TLS context trusting certifi's CAs and `ca_data`, read from `ca_file`.

    Loading certifi's bundle took about 16 ms here, and a patch opens several registry
    clients, so contexts are cached by the CA file's name and content. A changed CA file
    loads again. A context whose CA data fails to load is not cached, so the error repeats.
    """
    context = ssl.create_default_context(cafile=certifi.where())
    if ca_file is not None:
        try:
            context.load_verify_locations(cadata=_pem_or_der(ca_data))
        except (ValueError, ssl.SSLError) as error:
            raise RegistryError(f"cannot load CA file {ca_file}: {error}") from error
    return context


def _pem_or_der(data: bytes) -> str | bytes:
    """Return CA data as `load_verify_locations(cadata=...)` takes it: PEM text or DER bytes."""
    if b"-----BEGIN" in data:
        return data.decode("ascii", errors="replace")
    return data


def _display(registry: str, repository: str, reference: str) -> str:
    separator = "@" if ":" in reference else ":"
    return f"{registry}/{repository}{separator}{reference}"


def _is_tls_error(error: httpx.TransportError) -> bool:
    if not isinstance(error, httpx.ConnectError):
        return False
    text = str(error).upper()
    return "SSL" in text or "CERTIFICATE" in text or "TLS" in text


def _read_limited(response: httpx.Response, limit: int, what: str) -> bytes:
    chunks: list[bytes] = []
    total = 0
    for chunk in response.iter_bytes():
        total += len(chunk)
        if total > limit:
            raise ImageError(f"{what}: larger than {limit} bytes; refusing to read it")
        chunks.append(chunk)
    return b"".join(chunks)


def _registry_error_detail(response: httpx.Response) -> str:
    """Return `: CODE message` from a distribution error body, or an empty string."""
    try:
        if not response.is_stream_consumed:
            response.read()
        document = response.json()
        error = document["errors"][0]
        code, message = str(error.get("code", "")), str(error.get("message", ""))
    except (ValueError, KeyError, IndexError, TypeError, AttributeError, httpx.HTTPError,
            RuntimeError):
        return ""
    text = " ".join(part for part in (code, message) if part)[:200]
    return f": {text}" if text else ""

