"""Registry authentication: `WWW-Authenticate` challenges, Basic auth and bearer tokens.

The flow is the distribution token authentication spec (docs/spec/auth/token.md in
distribution/distribution). A 401 response carries a challenge such as
`Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a:pull"`;
the client asks the realm for a token for the service and scopes, with Basic credentials
(GET) or an identity token as an OAuth2 refresh token (POST, docs/spec/auth/oauth.md), and
repeats the request with `Authorization: Bearer <token>`. Tokens are cached per set of scopes
until shortly before they expire.
"""

from __future__ import annotations

import base64
import logging
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from suture.errors import AuthError, RegistryError
from suture.image.registry.credentials import Credentials

logger = logging.getLogger(__name__)

# Tokens are refreshed this many seconds before the expiry the token service reports.
_EXPIRY_MARGIN = 10.0
# The token spec's default lifetime when a response has no `expires_in`.
_DEFAULT_TOKEN_LIFETIME = 60.0
_CLIENT_ID = "suture"

_TOKEN = r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_CHALLENGE_PART = re.compile(
    rf"\s*(?:(?P<key>{_TOKEN})\s*=\s*(?:\"(?P<quoted>(?:[^\"\\]|\\.)*)\"|(?P<bare>[^\s,]*))"
    rf"|(?P<scheme>{_TOKEN}))\s*,?"
)


def login_hint(registry: str) -> str:
    """Return the next step for missing or rejected registry credentials."""
    return (
        f"run `docker login {registry}`, or set REGISTRY_AUTH_FILE to an auth.json (or "
        "DOCKER_CONFIG to a directory whose config.json) with credentials for it"
    )


@dataclass(frozen=True)
class Challenge:
    """One `WWW-Authenticate` challenge: scheme (lower case) and its parameters."""

    scheme: str
    params: dict[str, str] = field(default_factory=dict)

    @property
    def realm(self) -> str:
        return self.params.get("realm", "")

    @property
    def service(self) -> str:
        return self.params.get("service", "")

    @property
    def scopes(self) -> tuple[str, ...]:
        scope = self.params.get("scope", "")
        return tuple(scope.split()) if scope else ()


def parse_challenges(headers: Sequence[str]) -> list[Challenge]:
    """Parse `WWW-Authenticate` header values (RFC 9110 section 11.6.1) into challenges."""
    challenges: list[Challenge] = []
    for header in headers:
        position = 0
        current: Challenge | None = None
        while position < len(header):
            match = _CHALLENGE_PART.match(header, position)
            if match is None or match.end() == position:
                break
            position = match.end()
            if match.group("scheme"):
                current = Challenge(match.group("scheme").lower())
                challenges.append(current)
            elif current is not None:
                value = match.group("quoted")
                if value is not None:
                    value = re.sub(r"\\(.)", r"\1", value)
                else:
                    value = match.group("bare") or ""
                current.params[match.group("key").lower()] = value
    return challenges


def repository_scope(repository: str, actions: str) -> str:
    """Return the token scope for `repository` with `actions` such as `pull` or `pull,push`."""
    return f"repository:{repository}:{actions}"


@dataclass
class _Token:
    value: str
    expires_at: float


class Authenticator:
    """Produces the `Authorization` header for requests to one registry.

    It starts anonymous. The first 401 sets the scheme (Basic or Bearer) and the token
    endpoint. It then loads credentials once through `load_credentials`, and caches tokens per
    scope set. `send` performs the token request so it uses the client's TLS settings.
    """

    def __init__(
        self,
        registry: str,
        load_credentials: Callable[[], Credentials],
        send: Callable[[httpx.Request], httpx.Response],
    ) -> None:
        self.registry = registry
        self._load_credentials = load_credentials
        self._send = send
        self._credentials: Credentials | None = None
        self._challenge: Challenge | None = None
        self._tokens: dict[tuple[str, ...], _Token] = {}
        self._lock = threading.Lock()

    @property
    def credentials(self) -> Credentials:
        if self._credentials is None:
            self._credentials = self._load_credentials()
        return self._credentials

    def headers(self, scopes: Sequence[str]) -> dict[str, str]:
        """Return the `Authorization` header for a request needing `scopes`, if any is known."""
        challenge = self._challenge
        if challenge is None:
            return {}
        if challenge.scheme == "basic":
            return self._basic_header()
        if challenge.scheme == "bearer":
            return {"Authorization": f"Bearer {self._token(tuple(sorted(set(scopes))))}"}
        return {}

    def handle_unauthorized(self, response: httpx.Response, scopes: Sequence[str]) -> bool:
        """Learn from a 401 response; return whether repeating the request may now succeed."""
        challenges = parse_challenges(response.headers.get_list("www-authenticate"))
        usable = [c for c in challenges if c.scheme in ("bearer", "basic")]
        if not usable:
            return False
        # Prefer Bearer when a registry offers both, as docker does.
        challenge = next((c for c in usable if c.scheme == "bearer"), usable[0])
        previous = self._challenge
        with self._lock:
            self._challenge = challenge
            self._tokens.pop(tuple(sorted(set(scopes))), None)
        if challenge.scheme == "basic":
            if self.credentials.empty:
                raise AuthError(
                    f"registry {self.registry} requires credentials: {login_hint(self.registry)}"
                )
            # A second 401 with the same Basic credentials means they are wrong.
            return previous is None or previous.scheme != "basic"
        return True

    def _basic_header(self) -> dict[str, str]:
        credentials = self.credentials
        if credentials.empty:
            return {}
        pair = f"{credentials.username}:{credentials.password}".encode()
        return {"Authorization": "Basic " + base64.b64encode(pair).decode("ascii")}

    def _token(self, scopes: tuple[str, ...]) -> str:
        with self._lock:
            cached = self._tokens.get(scopes)
            if cached is not None and cached.expires_at > time.monotonic():
                return cached.value
            token = self._fetch_token(scopes)
            self._tokens[scopes] = token
            return token.value

    def _fetch_token(self, scopes: tuple[str, ...]) -> _Token:
        challenge = self._challenge
        assert challenge is not None
        if not challenge.realm.startswith(("https://", "http://")):
            raise AuthError(
                f"registry {self.registry} sent a token realm that is not an HTTP URL; "
                "check the registry address"
            )
        credentials = self.credentials
        started = time.monotonic()
        if credentials.identity_token:
            request = httpx.Request("POST", challenge.realm, data={
                "grant_type": "refresh_token",
                "refresh_token": credentials.identity_token,
                "service": challenge.service,
                "scope": " ".join(scopes),
                "client_id": _CLIENT_ID,
            })
        else:
            params: list[tuple[str, str | int | float | bool | None]] = [
                ("scope", scope) for scope in scopes
            ]
            if challenge.service:
                params.insert(0, ("service", challenge.service))
            if not credentials.empty:
                params.append(("account", credentials.username))
            request = httpx.Request("GET", challenge.realm, params=params,
                                    headers=self._basic_header())
        response = self._send(request)
        if response.status_code in (401, 403):
            source = f" from {credentials.source}" if credentials.source else ""
            what = "rejected the credentials" + source if not credentials.empty else (
                "requires credentials")
            raise AuthError(
                f"token service for {self.registry} {what} (HTTP {response.status_code}) for "
                f"scope {' '.join(scopes)}: {login_hint(self.registry)}"
            )
        if response.status_code != 200:
            raise RegistryError(
                f"token service for {self.registry} responded with HTTP {response.status_code} for "
                f"scope {' '.join(scopes)}"
            )
        document = _json_object(response)
        value = document.get("token") or document.get("access_token")
        if not isinstance(value, str) or not value:
            raise RegistryError(f"token service for {self.registry} returned no token")
        lifetime = float(document.get("expires_in") or _DEFAULT_TOKEN_LIFETIME)
        logger.debug("got a token for %s scope %s in %.2f s", self.registry, " ".join(scopes),
                     time.monotonic() - started)
        return _Token(value, started + max(0.0, lifetime - _EXPIRY_MARGIN))


def _json_object(response: httpx.Response) -> dict[str, Any]:
    try:
        document = response.json()
    except ValueError:
        document = None
    if not isinstance(document, dict):
        raise RegistryError(f"token service at {response.request.url.host} returned invalid JSON")
    return document
