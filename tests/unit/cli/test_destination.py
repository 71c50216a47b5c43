"""Tests for the default destination of a patched image."""

from __future__ import annotations

from pathlib import Path

import pytest

from suture.errors import TransportError, UsageError
from suture.image.transports import parse_location
from suture.patch.destination import new_tag, resolve_destination

# The daemon probe is replaced by constants so each rule is tested with and without a daemon.
NO_DAEMON = lambda: False  # noqa: E731
DAEMON = lambda: True  # noqa: E731


def resolve(image: str, **options: object) -> str:
    options.setdefault("daemon_available", NO_DAEMON)
    return str(resolve_destination(parse_location(image), **options))  # type: ignore[arg-type]


def test_oci_layout_gets_new_tag() -> None:
    assert resolve("oci:/images/demo:bookworm") == "oci:/images/demo:bookworm-patched"


def test_oci_layout_without_tag_uses_latest() -> None:
    assert resolve("oci:/images/demo") == "oci:/images/demo:latest-patched"


def test_oci_layout_custom_suffix() -> None:
    assert resolve("oci:/d:1.0", tag_suffix="fixed") == "oci:/d:1.0-fixed"


def test_oci_layout_explicit_tag() -> None:
    assert resolve("oci:/d:1.0", tag="1.0.1") == "oci:/d:1.0.1"


def test_oci_archive_named_after_source_file() -> None:
    location = resolve_destination(parse_location("oci-archive:/work/app.tar:v1"),
                                   daemon_available=NO_DAEMON)
    assert location.transport == "oci-archive"
    assert location.path == Path("/work/app-patched.tar")
    assert location.tag == "v1-patched"


def test_archive_name_takes_explicit_tag() -> None:
    location = resolve_destination(parse_location("oci-archive:/work/bookworm.tar"),
                                   tag="12.5", daemon_available=NO_DAEMON)
    assert location.path == Path("/work/bookworm-12.5.tar")
    assert location.tag == "12.5"


def test_existing_default_archive_not_replaced(tmp_path: Path) -> None:
    (tmp_path / "bookworm-patched.tar").write_bytes(b"keep")
    source = parse_location(f"docker-archive:{tmp_path}/bookworm.tar")
    with pytest.raises(TransportError, match=r"bookworm-patched\.tar already exists") as caught:
        resolve_destination(source, daemon_available=NO_DAEMON)
    assert caught.value.exit_code == 1
    assert "--dest" in str(caught.value)
    dry = resolve_destination(source, daemon_available=NO_DAEMON, dry_run=True)
    assert dry.path == tmp_path / "bookworm-patched.tar"
    explicit = resolve_destination(source, daemon_available=NO_DAEMON,
                                   dest=f"docker-archive:{tmp_path}/bookworm-patched.tar")
    assert explicit.path == tmp_path / "bookworm-patched.tar"


def test_docker_archive_keeps_repository() -> None:
    location = resolve_destination(
        parse_location("docker-archive:/work/app.tar:example.com/team/app:v1"),
        daemon_available=NO_DAEMON,
    )
    assert location.transport == "docker-archive"
    assert location.path == Path("/work/app-patched.tar")
    assert location.tag == "example.com/team/app:v1-patched"


def test_daemon_image_goes_back_to_daemon() -> None:
    assert resolve("docker-daemon:debian:12") == "docker-daemon:docker.io/library/debian:12-patched"


def test_registry_push_same_repository() -> None:
    destination = resolve("localhost:5000/team/app:1.2", push=True)
    assert destination == "docker://localhost:5000/team/app:1.2-patched"


def test_registry_full_reference_tag() -> None:
    destination = resolve("localhost:5000/team/app:1.2", push=True,
                          tag="localhost:5000/other/app:fixed")
    assert destination == "docker://localhost:5000/other/app:fixed"


def test_registry_without_push_loads_into_daemon() -> None:
    destination = resolve("localhost:5000/app:1", daemon_available=DAEMON)
    assert destination == "docker-daemon:localhost:5000/app:1-patched"


def test_registry_without_push_or_daemon_fails() -> None:
    with pytest.raises(UsageError) as caught:
        resolve("localhost:5000/app:1")
    assert "--push" in str(caught.value)
    assert "--dest" in str(caught.value)


def test_digest_only_needs_tag() -> None:
    image = "localhost:5000/app@sha256:" + "a" * 64
    with pytest.raises(UsageError, match="-t/--tag"):
        resolve(image, push=True)


def test_digest_only_with_tag() -> None:
    image = "localhost:5000/app@sha256:" + "a" * 64
    assert resolve(image, push=True, tag="fixed") == "docker://localhost:5000/app:fixed"


def test_dest_overrides_defaults() -> None:
    destination = resolve("localhost:5000/app:1", dest="oci:/out/layout")
    assert destination == "oci:/out/layout:1-patched"


def test_dest_keeps_its_tag() -> None:
    assert resolve("oci:/a:1", dest="oci:/b:mine") == "oci:/b:mine"


def test_dest_registry_without_tag_fails() -> None:
    with pytest.raises(UsageError, match="name a tag"):
        resolve("oci:/a:1", dest="docker://localhost:5000/app")


def test_push_with_local_source_fails() -> None:
    with pytest.raises(UsageError, match="--push needs a registry image"):
        resolve("oci:/a:1", push=True)


@pytest.mark.parametrize("tag", ["bad tag", "-leading", "x" * 129, "a*b"])
def test_invalid_tag_rejected(tag: str) -> None:
    with pytest.raises(UsageError):
        new_tag(parse_location("oci:/a:1"), tag, "patched")


@pytest.mark.parametrize(
    ("image", "dest"),
    [("oci:/d:1.0", None), ("oci-archive:/w/app.tar", None), ("docker://r.example/a:1", "oci:/o")],
)
def test_full_reference_tag_rejected_for_layouts(image: str, dest: str | None) -> None:
    with pytest.raises(UsageError, match="takes a tag, not a reference") as caught:
        resolve(image, tag="example.com/app:fixed", dest=dest)
    assert "-t fixed" in str(caught.value)
    assert caught.value.exit_code == 2


def test_full_reference_tag_names_docker_archive_image() -> None:
    location = resolve_destination(parse_location("docker-archive:/w/app.tar"),
                                   tag="example.com/app:fixed", daemon_available=NO_DAEMON)
    assert location.path == Path("/w/app-fixed.tar")
    assert location.tag == "example.com/app:fixed"
