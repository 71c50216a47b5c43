"""The default destination of a patched image, used when the user gives no `--dest`.

The rules, decided before any work is done:
- `oci:DIR[:TAG]` gets the new tag in the same layout.
- `docker-daemon:REF` is loaded back into the daemon under the new tag.
- `oci-archive:FILE` and `docker-archive:FILE` get a new archive file next to the source, named
  after the source file: `bookworm.tar` gives `bookworm-<suffix>.tar`, or `bookworm-<tag>.tar`
  with `-t`. An existing file of that name is never replaced; `--dest` names a file to replace.
- A registry image is pushed to the same repository with `--push`. Without it, the image is
  loaded into a reachable Docker daemon (as copa does), and with no daemon the command fails,
  asking for `--push` or `--dest`.

The new tag is `-t` when given, else `<source tag>-<suffix>`. A `-t` value without `:` or `/` is
a tag on the source repository. With them it is a full reference, which `oci:` and
`oci-archive:` destinations reject because they store tags only. A digest-only source has no
tag to derive one from, so it needs `-t`.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import tarfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from suture.errors import TransportError, UsageError
from suture.image.reference import Reference
from suture.image.transports import Location, parse_location

log = logging.getLogger(__name__)

DEFAULT_TAG_SUFFIX = "patched"
DEFAULT_LOCAL_TAG = "latest"
_DAEMON_PROBE_SECONDS = 10.0
_MAX_MANIFEST_BYTES = 1 << 20


def is_full_reference(tag: str) -> bool:
    """Return whether a `-t` value names a full reference rather than a tag."""
    return ":" in tag or "/" in tag


def source_tag(source: Location) -> str | None:
    """Return the tag of the source image, or None when it is named only by digest."""
    if source.transport in ("oci", "oci-archive"):
        return source.tag or DEFAULT_LOCAL_TAG
    if source.transport == "docker-archive":
        named = source.tag or _archive_repo_tag(source)
        if not named or named.startswith("@"):
            return DEFAULT_LOCAL_TAG
        return Reference.parse(named).tag or DEFAULT_LOCAL_TAG
    if source.reference is None:
        return None
    return source.reference.tag


def _archive_repo_tag(source: Location) -> str | None:
    """Return the only RepoTag of a docker-archive with one image, or None.

    `docker save` records the image's tags in manifest.json, so the patched archive can keep
    the repository when the user names no reference.
    """
    if source.path is None:
        return None
    try:
        with tarfile.open(source.path) as archive:
            member = archive.getmember("manifest.json")
            if member.size > _MAX_MANIFEST_BYTES:
                return None
            stream = archive.extractfile(member)
            entries = json.loads(stream.read()) if stream is not None else None
    except (OSError, KeyError, tarfile.TarError, ValueError):
        # Reading the image later reports what is wrong with the archive.
        return None
    if not isinstance(entries, list) or len(entries) != 1 or not isinstance(entries[0], dict):
        return None
    tags = entries[0].get("RepoTags") or []
    return str(tags[0]) if tags else None


def new_tag(source: Location, tag: str | None, suffix: str) -> str:
    """Return the tag (or full reference, when `tag` is one) the patched image gets."""
    if tag:
        _check_tag(tag)
        return tag
    if not suffix:
        raise UsageError("invalid --tag-suffix '': pass a non-empty suffix or -t/--tag")
    base = source_tag(source)
    if base is None:
        raise UsageError(
            f"image {source} is named by digest only: pass -t/--tag to name the patched image"
        )
    result = f"{base}-{suffix}"
    _check_tag(result)
    return result


def _check_tag(tag: str) -> None:
    if is_full_reference(tag):
        Reference.parse(tag)
        return
    # Tag grammar from the distribution reference spec: [\w][\w.-]{0,127}.
    if not tag or len(tag) > 128 or not (tag[0].isalnum() or tag[0] == "_") or not all(
        c.isalnum() or c in "_.-" for c in tag
    ):
        raise UsageError(f"invalid tag {tag!r}: use letters, digits, '_', '.' and '-' only")


def _target_reference(source: Location, tag: str) -> Reference:
    if is_full_reference(tag):
        return Reference.parse(tag)
    if source.reference is None:
        raise UsageError(f"image {source} has no repository to tag: pass a full reference to -t")
    return Reference.parse(f"{source.reference.registry}/{source.reference.repository}:{tag}")


def _plain_tag(tag: str) -> str:
    """Return the tag part of a `-t` value for local layouts, which hold tags, not references."""
    if not is_full_reference(tag):
        return tag
    parsed = Reference.parse(tag)
    return parsed.tag or DEFAULT_LOCAL_TAG


def daemon_reachable() -> bool:
    """Return whether a Docker daemon responds through the docker CLI (honouring DOCKER_HOST)."""
    docker = shutil.which("docker")
    if docker is None:
        return False
    try:
        completed = subprocess.run(
            [docker, "version", "--format", "{{.Server.Version}}"],
            capture_output=True,
            timeout=_DAEMON_PROBE_SECONDS,
            env=os.environ.copy(),
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        log.debug("docker daemon probe failed: %s", error)
        return False
    return completed.returncode == 0 and bool(completed.stdout.strip())


def resolve_destination(
    source: Location,
    *,
    tag: str | None = None,
    tag_suffix: str = DEFAULT_TAG_SUFFIX,
    push: bool = False,
    dest: str | None = None,
    daemon_available: Callable[[], bool] = daemon_reachable,
    dry_run: bool = False,
) -> Location:
    """Return where the patched image is written, or raise UsageError before any work.

    `dest` (any transport) overrides the defaults; an `oci:` or `oci-archive:` destination
    without a tag gets the new tag. Raises TransportError when a default archive name is taken
    by an existing file, unless this is a dry run.
    """
    if push and dest is not None:
        raise UsageError(
            "--push and --dest cannot be used together: --push writes to the source image's "
            "repository; to push elsewhere pass only --dest docker://REF"
        )
    if push and source.transport != "docker":
        raise UsageError(
            f"--push needs a registry image, but {source} is a local {source.transport} image: "
            "pass --dest docker://REF to push it"
        )
    if tag and is_full_reference(tag):
        transport = parse_location(dest).transport if dest is not None else source.transport
        if transport in ("oci", "oci-archive"):
            raise UsageError(
                f"invalid -t {tag!r}: an {transport}: destination takes a tag, not a "
                f"reference; pass a tag such as -t {_plain_tag(tag)}, or --dest REF to "
                "write elsewhere"
            )
    if dest is not None:
        return _explicit_destination(source, dest, tag, tag_suffix)

    target = new_tag(source, tag, tag_suffix)
    if source.transport == "oci":
        return replace(source, tag=_plain_tag(target))
    if source.transport in ("oci-archive", "docker-archive"):
        return _archive_destination(source, target, tag or tag_suffix, dry_run)
    if source.transport == "docker-daemon":
        return replace(source, reference=_target_reference(source, target))

    reference = _target_reference(source, target)
    if push:
        return replace(source, reference=reference)
    if daemon_available():
        return parse_location(f"docker-daemon:{reference}")
    raise UsageError(
        f"no destination for registry image {source}: pass --push to push {reference}, "
        "or --dest to write it elsewhere (no Docker daemon answers to load it into)"
    )


def _explicit_destination(
    source: Location, dest: str, tag: str | None, tag_suffix: str
) -> Location:
    location = parse_location(dest)
    if location.transport in ("oci", "oci-archive") and not location.tag:
        return replace(location, tag=_plain_tag(new_tag(source, tag, tag_suffix)))
    if location.transport == "docker-archive" and not location.tag and source.reference:
        reference = _target_reference(source, new_tag(source, tag, tag_suffix))
        return replace(location, tag=str(reference))
    named = location.reference
    if (
        location.transport in ("docker", "docker-daemon")
        and named is not None
        and named.tag is None
        and named.digest is None
    ):
        raise UsageError(f"invalid --dest {dest!r}: name a tag, as in {dest}:patched")
    return location


def _archive_destination(
    source: Location, target: str, name_suffix: str, dry_run: bool
) -> Location:
    assert source.path is not None
    plain = _plain_tag(target)
    source_path = Path(source.path)
    stem = source_path.name.split(".tar", 1)[0] or source_path.name
    path = source_path.parent / f"{stem}-{_plain_tag(name_suffix)}.tar"
    if path.resolve() == source_path.resolve():
        raise UsageError(
            f"the patched archive would overwrite the source {source.path}: pass --dest"
        )
    if path.exists() and not dry_run:
        raise TransportError(
            f"the patched archive {path} already exists: remove it, or pass "
            f"--dest {source.transport}:{path} to replace it"
        )
    if source.transport == "oci-archive":
        return replace(source, path=path, tag=plain)
    named = source.tag or _archive_repo_tag(source)
    if is_full_reference(target):
        reference = target
    elif named and not named.startswith("@") and is_full_reference(named):
        base = Reference.parse(named)
        reference = f"{base.registry}/{base.repository}:{target}"
    else:
        reference = target
    return replace(source, path=path, tag=reference)


SINGLE_IMAGE_TRANSPORTS = ("docker-archive", "docker-daemon")


def check_output_file(path: Path, option: str) -> None:
    """Reject an output file (`--summary`, `-o`) that cannot be written, before any work.

    Checked: the parent directory exists and is writable, and the path is not a directory.
    """
    if path.is_dir():
        raise UsageError(f"invalid {option} {path}: it is a directory; name a file")
    parent = path.parent
    if not parent.is_dir():
        raise UsageError(f"invalid {option} {path}: directory {parent} does not exist; "
                         "create it first")
    if not os.access(parent, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise UsageError(f"invalid {option} {path}: not writable; pass a writable path")


def check_single_image_destination(
    destination: Location, platform_count: int, is_index: bool
) -> None:
    """Reject writing an index with several platforms to a transport that stores one image."""
    if destination.transport not in SINGLE_IMAGE_TRANSPORTS or not is_index:
        return
    if platform_count > 1:
        raise UsageError(
            f"{destination} stores a single image, but the source is a multi-platform index "
            f"with {platform_count} platforms to patch: pass --platform with one platform, "
            "as in --platform linux/amd64, or write the index elsewhere with --push or "
            "--dest (docker://, oci: or oci-archive:)"
        )
