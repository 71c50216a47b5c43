"""Image location strings: transport prefixes, paths, tags and references."""

from __future__ import annotations

from pathlib import Path

import pytest

from suture.errors import UsageError
from suture.image.transports import Location, parse_location

DIGEST = "sha256:" + "b" * 64


@pytest.mark.parametrize(
    ("text", "transport", "path", "tag", "reference"),
    [
        ("debian:12", "docker", None, None, "docker.io/library/debian:12"),
        ("docker://debian", "docker", None, None, "docker.io/library/debian"),
        ("localhost:5000/x:t", "docker", None, None, "localhost:5000/x:t"),
        (f"docker://a.b/c@{DIGEST}", "docker", None, None, f"a.b/c@{DIGEST}"),
        ("oci:out", "oci", "out", None, None),
        ("oci:/tmp/out:v1", "oci", "/tmp/out", "v1", None),
        ("oci-archive:img.tar", "oci-archive", "img.tar", None, None),
        ("oci-archive:img.tar:latest", "oci-archive", "img.tar", "latest", None),
        ("docker-archive:img.tar", "docker-archive", "img.tar", None, None),
        ("docker-archive:img.tar:debian:12", "docker-archive", "img.tar", "debian:12", None),
        ("docker-archive:img.tar:@1", "docker-archive", "img.tar", "@1", None),
        ("docker-daemon:debian:12", "docker-daemon", None, None, "docker.io/library/debian:12"),
    ],
)
def test_parse_location(
    text: str, transport: str, path: str | None, tag: str | None, reference: str | None
) -> None:
    location = parse_location(text)
    assert location.transport == transport
    assert location.path == (Path(path) if path is not None else None)
    assert location.tag == tag
    assert (str(location.reference) if location.reference else None) == reference


@pytest.mark.parametrize(
    "text",
    ["oci:", "oci:dir:", "oci:dir:bad tag", "oci-archive::t", "docker-archive:f:UPPER/x",
     "docker://", "docker-daemon:", "UPPER/x"],
)
def test_parse_location_invalid(text: str) -> None:
    with pytest.raises(UsageError):
        parse_location(text)


@pytest.mark.parametrize(
    "text",
    ["docker://docker.io/library/debian:12", "oci:out:v1", "oci-archive:a.tar",
     "docker-archive:a.tar:debian:12", "docker-daemon:docker.io/library/debian:12"],
)
def test_location_str_round_trip(text: str) -> None:
    assert str(parse_location(text)) == text
    assert parse_location(str(parse_location(text))) == parse_location(text)


def test_location_is_frozen() -> None:
    location = Location("oci", path=Path("x"))
    with pytest.raises(AttributeError):
        location.tag = "t"  # type: ignore[misc]


@pytest.mark.parametrize("scheme", ["foo", "https", "oci-layout"])
def test_unknown_transport_named(scheme: str) -> None:
    with pytest.raises(UsageError, match=f"unknown transport '{scheme}'"):
        parse_location(f"{scheme}://bar")


@pytest.mark.parametrize("transport", ["oci", "oci-archive"])
def test_layout_digest_selection_explained(transport: str) -> None:
    with pytest.raises(UsageError, match="by tag") as caught:
        parse_location(f"{transport}:demo@{DIGEST}")
    assert f"{transport}:DIR:TAG" in str(caught.value)
