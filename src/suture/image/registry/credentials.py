"""Registry credentials from flags, podman's auth.json and docker's config.json.

Lookup order for a registry (first match wins):
1. the username and password given as flags;
2. the containers auth file: the `auth_file` option or `$REGISTRY_AUTH_FILE`; without either,
   `$XDG_RUNTIME_DIR/containers/auth.json` and then `$XDG_CONFIG_HOME/containers/auth.json`
   (default `~/.config`), as containers-auth.json(5) describes;
3. docker's config: `$DOCKER_CONFIG/config.json`, the `docker_config` option, or
   `~/.docker/config.json`. In that file `credHelpers[<registry>]` wins over `credsStore`,
   which wins over `auths` (the same order as the docker CLI's `GetCredentialsStore`).

An `auths` entry contains a base64 `auth` ("user:password"), or `username` and `password`, and
optionally an `identitytoken` (an OAuth2 refresh token). A credential helper is the program
`docker-credential-<name>`; `get` reads the server URL on stdin and prints
`{"ServerURL", "Username", "Secret"}`, where the username `<token>` marks an identity token.

Secrets never appear in logs, exception messages or reprs.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from suture.errors import AuthError

logger = logging.getLogger(__name__)

# Docker Hub's credentials are stored under this legacy key (and `docker login` writes it).
DOCKER_HUB_CONFIG_KEY = "https://index.docker.io/v1/"
_DOCKER_HUB_ALIASES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
_HELPER_TIMEOUT = 30.0
_IDENTITY_TOKEN_USERNAME = "<token>"


@dataclass(frozen=True)
class Credentials:
    """A username and password, or an identity token to exchange for registry tokens."""

    username: str = ""
    password: str = field(default="", repr=False)
    identity_token: str = field(default="", repr=False)
    source: str = ""

    @property
    def empty(self) -> bool:
        return not (self.username or self.password or self.identity_token)


@dataclass(frozen=True)
class CredentialSources:
    """Credential locations and flag values. None means the standard location."""

    username: str | None = None
    password: str | None = None
    docker_config: Path | None = None
    auth_file: Path | None = None


def find_credentials(registry: str, repository: str, sources: CredentialSources) -> Credentials:
    """Return the credentials for `registry` (and `repository`), or empty credentials."""
    if sources.username is not None or sources.password is not None:
        return Credentials(sources.username or "", sources.password or "", source="flags")

    for path in _auth_files(sources):
        document = _read_config(path)
        if document is None:
            continue
        credentials = _credentials_from_document(document, registry, repository, path)
        if credentials is not None:
            logger.debug("using credentials for %s from %s", registry, credentials.source)
            return credentials
    return Credentials()


def _auth_files(sources: CredentialSources) -> Iterator[Path]:
    if sources.auth_file is not None:
        yield sources.auth_file
    elif os.environ.get("REGISTRY_AUTH_FILE"):
        yield Path(os.environ["REGISTRY_AUTH_FILE"])
    else:
        if os.environ.get("XDG_RUNTIME_DIR"):
            yield Path(os.environ["XDG_RUNTIME_DIR"]) / "containers" / "auth.json"
        config_home = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
        yield Path(config_home) / "containers" / "auth.json"

    if sources.docker_config is not None:
        config = sources.docker_config
        yield config / "config.json" if config.is_dir() else config
    elif os.environ.get("DOCKER_CONFIG"):
        yield Path(os.environ["DOCKER_CONFIG"]) / "config.json"
    else:
        yield Path.home() / ".docker" / "config.json"


def _read_config(path: Path) -> Mapping[str, Any] | None:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as error:
        raise AuthError(f"cannot read credentials file {path}: {error.strerror}") from error
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        # The position is safe to show; the text around it may hold a secret, so it is not shown.
        raise AuthError(
            f"credentials file {path} is not valid JSON (line {error.lineno}, column "
            f"{error.colno}); fix or remove it"
        ) from None
    if not isinstance(document, dict):
        raise AuthError(f"credentials file {path} must contain a JSON object")
    return document


def _credentials_from_document(
    document: Mapping[str, Any], registry: str, repository: str, path: Path
) -> Credentials | None:
    helpers = document.get("credHelpers") or {}
    if isinstance(helpers, Mapping):
        for key, helper in helpers.items():
            if _registry_of_key(key) == _canonical_registry(registry) and helper:
                return run_credential_helper(str(helper), registry)

    store = document.get("credsStore")
    if isinstance(store, str) and store:
        credentials = run_credential_helper(store, registry)
        if not credentials.empty:
            return credentials

    auths = document.get("auths") or {}
    if not isinstance(auths, Mapping):
        return None
    entry = _match_auths_entry(auths, registry, repository)
    if entry is None:
        return None
    key, value = entry
    return _decode_auths_entry(value, f"{path} auths[{key!r}]")


def _canonical_registry(registry: str) -> str:
    return "docker.io" if registry in _DOCKER_HUB_ALIASES else registry


def _registry_of_key(key: str) -> str:
    """Reduce an auths key (`https://index.docker.io/v1/`, `host:5000`, `host/ns`) to its host."""
    host = key.split("://", 1)[-1].split("/", 1)[0]
    return _canonical_registry(host)


def _match_auths_entry(
    auths: Mapping[str, Any], registry: str, repository: str
) -> tuple[str, Any] | None:
    # podman allows keys naming a namespace or repository (`quay.io/org`); the longest wins.
    wanted = _canonical_registry(registry)
    best: tuple[int, str, Any] | None = None
    for key, value in auths.items():
        stripped = key.split("://", 1)[-1].rstrip("/")
        host, _, path = stripped.partition("/")
        if _canonical_registry(host) != wanted:
            continue
        if path and path != "v1" and not (repository == path or repository.startswith(path + "/")):
            continue
        score = len(path) if path != "v1" else 0
        if best is None or score > best[0]:
            best = (score, key, value)
    return (best[1], best[2]) if best is not None else None


def _decode_auths_entry(value: Any, what: str) -> Credentials:
    if not isinstance(value, Mapping):
        raise AuthError(f"{what} must be a JSON object")
    identity_token = str(value.get("identitytoken") or "")
    username = str(value.get("username") or "")
    password = str(value.get("password") or "")
    encoded = value.get("auth")
    if encoded:
        try:
            decoded = base64.b64decode(str(encoded), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            raise AuthError(f"{what}: 'auth' is not base64 of user:password") from None
        username, colon, password = decoded.partition(":")
        if not colon:
            raise AuthError(f"{what}: 'auth' does not decode to user:password")
    return Credentials(username, password, identity_token, source=what)


def helper_server_url(registry: str) -> str:
    """Return the server URL docker passes to credential helpers for `registry`."""
    return DOCKER_HUB_CONFIG_KEY if _canonical_registry(registry) == "docker.io" else registry


def run_credential_helper(name: str, registry: str) -> Credentials:
    """Run `docker-credential-<name> get` for `registry`; empty credentials if it has none."""
    program = f"docker-credential-{name}"
    executable = shutil.which(program)
    if executable is None:
        raise AuthError(
            f"credential helper {program} for {registry} is not on PATH; install it or remove "
            f"it from the docker config"
        )
    server_url = helper_server_url(registry)
    try:
        completed = subprocess.run(
            [executable, "get"], input=server_url.encode(), capture_output=True,
            timeout=_HELPER_TIMEOUT, check=False,
        )
    except subprocess.TimeoutExpired:
        raise AuthError(
            f"credential helper {program} timed out for {registry} after "
            f"{_HELPER_TIMEOUT:.0f} s"
        ) from None
    except OSError as error:
        raise AuthError(f"cannot run credential helper {program}: {error.strerror}") from error

    if completed.returncode != 0:
        output = completed.stdout.decode(errors="replace").strip()
        # Helpers print this exact text when they hold nothing for the server.
        if "credentials not found" in output.lower():
            return Credentials()
        raise AuthError(
            f"credential helper {program} failed for {registry} (exit status "
            f"{completed.returncode}); run `echo {server_url} | {program} get` to see why"
        )
    return _parse_helper_output(completed.stdout, program, registry)


def _parse_helper_output(output: bytes, program: str, registry: str) -> Credentials:
    try:
        document = json.loads(output)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise AuthError(
            f"credential helper {program} printed invalid JSON for {registry}"
        ) from None
    if not isinstance(document, dict):
        raise AuthError(f"credential helper {program} printed a non-object for {registry}")
    username = str(document.get("Username") or "")
    secret = str(document.get("Secret") or "")
    source = f"credential helper {program}"
    if username == _IDENTITY_TOKEN_USERNAME:
        return Credentials(identity_token=secret, source=source)
    return Credentials(username, secret, source=source)
