"""Reference parsing against the distribution reference grammar, case by case."""

from __future__ import annotations

import pytest

from suture.errors import InvalidReferenceError
from suture.image.reference import Reference

DIGEST = "sha256:" + "a" * 64

VALID = [
    # (text, registry, repository, tag, digest)
    ("debian", "docker.io", "library/debian", None, None),
    ("debian:12", "docker.io", "library/debian", "12", None),
    ("library/debian:12", "docker.io", "library/debian", "12", None),
    ("docker.io/debian", "docker.io", "library/debian", None, None),
    ("index.docker.io/debian", "docker.io", "library/debian", None, None),
    ("user/app", "docker.io", "user/app", None, None),
    ("user/sub/app:v1", "docker.io", "user/sub/app", "v1", None),
    ("foo:5000", "docker.io", "library/foo", "5000", None),
    ("localhost/x", "localhost", "x", None, None),
    ("localhost:5000/x", "localhost:5000", "x", None, None),
    ("localhost:5000/x:tag", "localhost:5000", "x", "tag", None),
    ("127.0.0.1:5000/a/b:c", "127.0.0.1:5000", "a/b", "c", None),
    ("[::1]:5000/x:1", "[::1]:5000", "x", "1", None),
    ("a.b/c:tag@" + DIGEST, "a.b", "c", "tag", DIGEST),
    ("a.b/c@" + DIGEST, "a.b", "c", None, DIGEST),
    ("debian@" + DIGEST, "docker.io", "library/debian", None, DIGEST),
    ("ghcr.io/o/r:1.2.3-rc_1", "ghcr.io", "o/r", "1.2.3-rc_1", None),
    ("Registry.Example.com/x", "Registry.Example.com", "x", None, None),
    ("a/b__c.d-e--f:_x", "docker.io", "a/b__c.d-e--f", "_x", None),
    ("x:" + "t" * 128, "docker.io", "library/x", "t" * 128, None),
]


@pytest.mark.parametrize(("text", "registry", "repository", "tag", "digest"), VALID)
def test_parse_valid(
    text: str, registry: str, repository: str, tag: str | None, digest: str | None
) -> None:
    reference = Reference.parse(text)
    assert reference.registry == registry
    assert reference.repository == repository
    assert reference.tag == tag
    assert reference.digest == digest


INVALID = [
    "",
    " debian",
    "UPPER/x",
    "debian/UPPER",
    "Debian",
    "a.b/c:",
    "a.b/c@",
    ":tag",
    "/x",
    "x/",
    "a//b",
    "a.b/c:.tag",
    "a.b/c:-tag",
    "x:" + "t" * 129,
    "x@sha256:abc",
    "x@sha256:" + "A" * 64,
    "x@md5:" + "a" * 32,
    "x@sha256:" + "a" * 63,
    "a" * 64,
    "a" * 256,
    "a.b/c..d",
    "a.b/c_-d",
    "-a.b/c",
    "a.b/-c",
    "a.b/c:tag:more",
    "a b/c",
]


@pytest.mark.parametrize("text", INVALID)
def test_parse_invalid(text: str) -> None:
    with pytest.raises(InvalidReferenceError):
        Reference.parse(text)


def test_parse_error_names_the_reference() -> None:
    with pytest.raises(InvalidReferenceError, match="'UPPER/x'"):
        Reference.parse("UPPER/x")


def test_name_length_limit_counts_the_registry() -> None:
    name = "r.io/" + "a" * 250
    assert len(name) == 255
    assert Reference.parse(name).repository == "a" * 250
    with pytest.raises(InvalidReferenceError, match="maximum is 255"):
        Reference.parse(name + "a")


@pytest.mark.parametrize(
    ("text", "canonical", "familiar"),
    [
        ("debian", "docker.io/library/debian", "debian"),
        ("debian:12", "docker.io/library/debian:12", "debian:12"),
        ("user/app:1", "docker.io/user/app:1", "user/app:1"),
        ("library/a/b", "docker.io/library/a/b", "library/a/b"),
        ("localhost:5000/x:t@" + DIGEST, "localhost:5000/x:t@" + DIGEST,
         "localhost:5000/x:t@" + DIGEST),
    ],
)
def test_str_and_familiar(text: str, canonical: str, familiar: str) -> None:
    reference = Reference.parse(text)
    assert str(reference) == canonical
    assert reference.familiar == familiar
    assert Reference.parse(str(reference)) == reference


def test_api_host_for_docker_hub() -> None:
    assert Reference.parse("debian").api_host == "registry-1.docker.io"
    assert Reference.parse("localhost:5000/x").api_host == "localhost:5000"


def test_with_tag_drops_digest() -> None:
    reference = Reference.parse("a.b/c:1@" + DIGEST).with_tag("2")
    assert reference.tag == "2"
    assert reference.digest is None


def test_with_digest_keeps_tag() -> None:
    reference = Reference.parse("a.b/c:1").with_digest(DIGEST)
    assert str(reference) == "a.b/c:1@" + DIGEST


def test_with_tag_rejects_invalid_tag() -> None:
    with pytest.raises(InvalidReferenceError):
        Reference.parse("a.b/c").with_tag("bad tag")


def test_identifier_prefers_digest() -> None:
    assert Reference.parse("a.b/c:1@" + DIGEST).identifier == DIGEST
    assert Reference.parse("a.b/c:1").identifier == "1"
    assert Reference.parse("a.b/c").identifier == "latest"
