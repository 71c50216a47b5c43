"""Image references: `[registry/]repository[:tag][@digest]`.

Implements the grammar of github.com/distribution/reference (reference.go and normalize.go):

    reference  := name [ ":" tag ] [ "@" digest ]
    name       := [ domain "/" ] path-component ( "/" path-component )*
    domain     := host [ ":" port ]          host is a DNS name, or an IPv6 address in brackets
    path-component := [a-z0-9]+ ( ( "." | "_" | "__" | "-"+ ) [a-z0-9]+ )*
    tag        := [\\w][\\w.-]{0,127}
    digest     := algorithm ":" hex

Normalisation follows docker's `ParseNormalizedNamed`: the first component is a registry only when
it contains "." or ":" or is "localhost", otherwise the registry is `docker.io`; a single-component
name on `docker.io` gets the `library/` namespace; `index.docker.io` becomes `docker.io`.

One deliberate difference: newer distribution/reference releases also treat a first component with
upper-case letters as a registry host. suture keeps the older, stricter rule, so `UPPER/x` is an
invalid repository name instead of an image on a host called `UPPER`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from suture.errors import InvalidReferenceError

DEFAULT_REGISTRY = "docker.io"
DOCKER_HUB_API_HOST = "registry-1.docker.io"
_LEGACY_REGISTRY = "index.docker.io"
_OFFICIAL_NAMESPACE = "library"

NAME_TOTAL_LENGTH_MAX = 255

_ALPHANUMERIC = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|[-]+)"
_PATH_COMPONENT = rf"{_ALPHANUMERIC}(?:{_SEPARATOR}{_ALPHANUMERIC})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN_NAME = rf"{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*"
_IPV6 = r"\[(?:[a-fA-F0-9:]+)\]"
_DOMAIN = rf"(?:{_DOMAIN_NAME}|{_IPV6})(?::[0-9]+)?"

_DOMAIN_RE = re.compile(rf"^{_DOMAIN}$")
_PATH_RE = re.compile(rf"^{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*$")
_TAG_RE = re.compile(r"^[\w][\w.-]{0,127}$", re.ASCII)
_DIGEST_RE = re.compile(r"^[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}$")
# A bare 64-hex string is an image ID, which docker rejects as a repository name.
_IMAGE_ID_RE = re.compile(r"^[a-f0-9]{64}$")

# Hex lengths of the digest algorithms OCI registries accept (go-digest: sha256, sha384, sha512).
_DIGEST_HEX_LENGTHS = {"sha256": 64, "sha384": 96, "sha512": 128}


def validate_digest(digest: str, text: str | None = None) -> str:
    """Return `digest` if it is `algorithm:hex` with a supported algorithm and lower-case hex."""
    where = f"invalid reference {text!r}: " if text is not None else ""
    if not _DIGEST_RE.match(digest):
        raise InvalidReferenceError(f"{where}invalid digest {digest!r}: expected sha256:<64 hex>")
    algorithm, _, hex_part = digest.partition(":")
    length = _DIGEST_HEX_LENGTHS.get(algorithm)
    if length is None:
        raise InvalidReferenceError(
            f"{where}unsupported digest algorithm {algorithm!r}: use sha256, sha384 or sha512"
        )
    if len(hex_part) != length or hex_part != hex_part.lower():
        raise InvalidReferenceError(
            f"{where}invalid digest {digest!r}: {algorithm} needs {length} lower-case hex digits"
        )
    return digest


def validate_tag(tag: str, text: str | None = None) -> str:
    """Return `tag` if it matches the tag grammar (`[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`)."""
    if not _TAG_RE.match(tag):
        where = f"invalid reference {text!r}: " if text is not None else ""
        raise InvalidReferenceError(
            f"{where}invalid tag {tag!r}: use up to 128 letters, digits, '_', '.' or '-', "
            "not starting with '.' or '-'"
        )
    return tag


@dataclass(frozen=True)
class Reference:
    """A normalised image reference; `registry` is `docker.io` for Docker Hub."""

    registry: str
    repository: str
    tag: str | None = None
    digest: str | None = None

    @classmethod
    def parse(cls, text: str) -> Reference:
        """Parse and normalise a reference such as `debian:12`, `localhost:5000/x@sha256:...`."""
        if not text:
            raise InvalidReferenceError("invalid reference '': the reference is empty")
        if text != text.strip():
            raise InvalidReferenceError(f"invalid reference {text!r}: remove surrounding spaces")

        name, tag, digest = _split_reference(text)
        if len(name) > NAME_TOTAL_LENGTH_MAX:
            raise InvalidReferenceError(
                f"invalid reference {text[:40]!r}...: the name is {len(name)} characters long, "
                f"the maximum is {NAME_TOTAL_LENGTH_MAX}"
            )
        if _IMAGE_ID_RE.match(name):
            raise InvalidReferenceError(
                f"invalid reference {text!r}: a 64-character hex string is an image ID, "
                "not a repository name"
            )

        registry, repository = _split_registry(name)
        if not registry or not _DOMAIN_RE.match(registry):
            raise InvalidReferenceError(
                f"invalid reference {text!r}: invalid registry {registry!r}"
            )
        if repository != repository.lower():
            raise InvalidReferenceError(
                f"invalid reference {text!r}: repository name {repository!r} must be lowercase"
            )
        if not _PATH_RE.match(repository):
            raise InvalidReferenceError(
                f"invalid reference {text!r}: invalid repository name {repository!r}; use "
                "lowercase letters and digits separated by '/', '.', '_', '__' or '-'"
            )
        if tag is not None:
            validate_tag(tag, text)
        if digest is not None:
            validate_digest(digest, text)
        return cls(registry, repository, tag, digest)

    def __str__(self) -> str:
        text = f"{self.registry}/{self.repository}"
        if self.tag is not None:
            text += f":{self.tag}"
        if self.digest is not None:
            text += f"@{self.digest}"
        return text

    @property
    def name(self) -> str:
        """The repository with its registry, without tag or digest."""
        return f"{self.registry}/{self.repository}"

    @property
    def familiar(self) -> str:
        """The short form docker prints: `debian:12` for `docker.io/library/debian:12`."""
        if self.registry != DEFAULT_REGISTRY:
            return str(self)
        repository = self.repository
        if repository.count("/") == 1 and repository.startswith(f"{_OFFICIAL_NAMESPACE}/"):
            repository = repository.removeprefix(f"{_OFFICIAL_NAMESPACE}/")
        text = repository
        if self.tag is not None:
            text += f":{self.tag}"
        if self.digest is not None:
            text += f"@{self.digest}"
        return text

    @property
    def api_host(self) -> str:
        """The host serving the registry API (`registry-1.docker.io` for Docker Hub)."""
        return DOCKER_HUB_API_HOST if self.registry == DEFAULT_REGISTRY else self.registry

    @property
    def identifier(self) -> str:
        """What to request from the manifests endpoint: the digest if known, else the tag."""
        return self.digest or self.tag or "latest"

    def with_tag(self, tag: str) -> Reference:
        """Return this repository with `tag` and no digest."""
        return Reference(self.registry, self.repository, validate_tag(tag), None)

    def with_digest(self, digest: str) -> Reference:
        """Return this reference with `digest`, keeping the tag."""
        return Reference(self.registry, self.repository, self.tag, validate_digest(digest))


def _split_reference(text: str) -> tuple[str, str | None, str | None]:
    name, at, digest = text.partition("@")
    if at and not digest:
        raise InvalidReferenceError(f"invalid reference {text!r}: empty digest after '@'")
    # The tag separator is the last ':' after the last '/', so a registry port is never a tag.
    slash = name.rfind("/")
    colon = name.rfind(":")
    tag: str | None = None
    if colon > slash:
        name, tag = name[:colon], name[colon + 1 :]
        if not tag:
            raise InvalidReferenceError(f"invalid reference {text!r}: empty tag after ':'")
    if not name:
        raise InvalidReferenceError(f"invalid reference {text!r}: missing repository name")
    if name.startswith("/") or name.endswith("/") or "//" in name:
        raise InvalidReferenceError(f"invalid reference {text!r}: empty path component")
    return name, tag, digest if at else None


def _split_registry(name: str) -> tuple[str, str]:
    first, slash, rest = name.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost"):
        registry, repository = first, rest
    else:
        registry, repository = DEFAULT_REGISTRY, name
    if registry == _LEGACY_REGISTRY:
        registry = DEFAULT_REGISTRY
    if registry == DEFAULT_REGISTRY and "/" not in repository:
        repository = f"{_OFFICIAL_NAMESPACE}/{repository}"
    return registry, repository
