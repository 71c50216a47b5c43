"""Shared pytest setup: the integration switch and session fixtures for real components.

Plain `pytest` runs unit tests only. Tests marked `integration` run with
`--integration` or `SUTURE_INTEGRATION=1`; `.ci/run` passes the flag.

Integration runs as root put pytest's temporary directories and `TMPDIR` on a
tmpfs that is unmounted when the session ends. Tests copy and unpack whole root filesystems,
and deleting the hundreds of thousands of files an earlier session left on disk
took longer than some test files. Set `SUTURE_TEST_KEEP_TMP=1`, or pass
`--basetemp`, to keep them on disk for a look after a failure.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness import overlay
from tests.harness.docker import DockerDaemon, DockerUnavailable, start_dockerd, stop_dockerd
from tests.harness.images import ImageCache
from tests.harness.oracle import mounted_paths
from tests.harness.registry import Registry, start_registry, stop_registry


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--integration",
        action="store_true",
        default=False,
        help="also run tests marked integration (real images, registry, dockerd, mirror)",
    )


def _integration_enabled(config: pytest.Config) -> bool:
    return bool(config.getoption("--integration")) or os.environ.get("SUTURE_INTEGRATION") == "1"


_SCRATCH_MOUNT = pytest.StashKey[Path]()
_SCRATCH_PREFIX = "suture-pytest-"
_OWNER_FILE = "owner.pid"


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    # xdist workers inherit the controller's base directory, so only the controller mounts.
    if (hasattr(config, "workerinput") or config.option.basetemp or os.geteuid() != 0
            or not _integration_enabled(config) or os.environ.get("SUTURE_TEST_KEEP_TMP") == "1"):
        return
    _remove_stale_scratch()
    scratch = Path(tempfile.mkdtemp(prefix=_SCRATCH_PREFIX))
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=755", "tmpfs", str(scratch)],
                             capture_output=True, text=True, check=False)
    if mounted.returncode != 0:
        scratch.rmdir()
        return
    (scratch / _OWNER_FILE).write_text(str(os.getpid()))
    config.option.basetemp = str(scratch / "basetemp")
    config.stash[_SCRATCH_MOUNT] = scratch
    # SIGTERM, as sent by `timeout`, would end the process without pytest_unconfigure.
    # Raised as an interrupt, it lets pytest finish the session and unmount.
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _interrupt)
    # suture's staging files and the temporary files of skopeo, umoci and apt go there too.
    # Mode 1777 as /tmp has, because apt's download and gpgv methods run as the _apt user.
    (scratch / "tmp").mkdir()
    (scratch / "tmp").chmod(0o1777)
    os.environ["TMPDIR"] = str(scratch / "tmp")
    tempfile.tempdir = None


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def _remove_stale_scratch() -> None:
    """Unmount the scratch tmpfs of earlier sessions whose process no longer runs (killed)."""
    prefix = str(Path(tempfile.gettempdir()) / _SCRATCH_PREFIX)
    for point in sorted(Path(p) for p in mounted_paths() if p.startswith(prefix)):
        try:
            if _process_running(int((point / _OWNER_FILE).read_text())):
                continue
        except (OSError, ValueError):
            continue
        _unmount_scratch(point)


def _unmount_scratch(scratch: Path) -> None:
    # Lazily, so that a mount a failed test left inside cannot keep the tmpfs busy.
    subprocess.run(["umount", "--lazy", str(scratch)], capture_output=True, check=False)
    with contextlib.suppress(OSError):
        scratch.rmdir()


def _process_running(pid: int) -> bool:
    """Return whether `pid` runs. A killed process that is not reaped yet (a zombie) does not."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    # The state letter follows the command name, which is in parentheses and may hold spaces.
    return stat.rpartition(")")[2].split()[0] != "Z"


_FAILED = pytest.StashKey[bool]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Iterator[None]:
    report = yield
    # pytest keeps tmp_path only after a failed call phase; after a failed setup it deletes it.
    if report.when == "call" and report.failed:
        item.stash[_FAILED] = True
    return report


@pytest.fixture
def tmp_path(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path]:
    """pytest's `tmp_path`, with the overlay mounts made in it unmounted when the test ends.

    pytest deletes the tmp_path of a test whose call phase did not fail, after this fixture
    ends, and the deletion would descend into overlay mounts there. A failed test's overlays
    stay mounted until the session ends.
    """
    yield tmp_path
    if not request.node.stash.get(_FAILED, False):
        overlay.release_under(tmp_path)


def pytest_unconfigure(config: pytest.Config) -> None:
    # Every process, xdist workers too, unmounts the overlays it made.
    overlay.release_all()
    scratch = config.stash.get(_SCRATCH_MOUNT, None)
    if scratch is None:
        return
    _unmount_scratch(scratch)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _integration_enabled(config):
        return
    skip = pytest.mark.skip(
        reason="integration test: run with --integration or SUTURE_INTEGRATION=1"
    )
    for item in items:
        if "integration" in item.keywords:
            item.add_marker(skip)


class Images:
    """Session access to the fixture images: OCI layouts and unpacked root filesystems."""

    def __init__(self, cache: ImageCache, scratch: Path) -> None:
        self.cache = cache
        self.scratch = scratch
        self._rootfs: dict[str, Path] = {}

    def layout(self, name: str) -> Path:
        """Return the cached OCI layout of `name`; its index.json has the single ref `latest`."""
        return self.cache.layout(name)

    def layout_copy(self, name: str, dest: Path) -> Path:
        """Give `dest` a writable copy of the cached OCI layout of `name`; return `dest`."""
        return self.cache.layout_copy(name, dest)

    def unpack_layout(self, layout: Path, tag: str, dest: Path) -> Path:
        """Unpack `layout:tag` with umoci into `dest`, reusing an earlier unpack of its layers."""
        return self.cache.unpack_layout(layout, tag, dest)

    def rootfs(self, name: str) -> Path:
        """Return the root filesystem of `name`, unpacked by umoci.

        The directory is shared by every test of the session: get a private copy with
        `fresh_rootfs` before changing it.
        """
        if name not in self._rootfs:
            self._rootfs[name] = self.cache.unpack(name, self.scratch / name)
        return self._rootfs[name]

    def fresh_rootfs(self, name: str, dest: Path) -> Path:
        """Give `dest` a private, writable copy of the root filesystem of `name`."""
        return self.cache.unpack(name, dest)


@pytest.fixture(scope="session")
def images(tmp_path_factory: pytest.TempPathFactory) -> Images:
    # mmdebstrap --mode=root, chroot and mount need root; .ci/run runs as root.
    if os.geteuid() != 0:
        pytest.skip("fixture images need root: mmdebstrap --mode=root, chroot and mount")
    return Images(ImageCache(), tmp_path_factory.mktemp("rootfs"))


def _registry(
    tmp_path_factory: pytest.TempPathFactory, name: str, **options: bool
) -> Iterator[Registry]:
    registry = start_registry(tmp_path_factory.mktemp(name), **options)
    try:
        yield registry
    finally:
        stop_registry(registry)


@pytest.fixture(scope="session")
def registry_plain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    yield from _registry(tmp_path_factory, "registry-plain")


@pytest.fixture(scope="session")
def registry_tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    yield from _registry(tmp_path_factory, "registry-tls", tls=True)


@pytest.fixture(scope="session")
def registry_auth(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    yield from _registry(tmp_path_factory, "registry-auth", tls=True, auth=True)


@pytest.fixture(scope="session")
def docker_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DockerDaemon]:
    # Socket paths are limited to about 100 bytes, so use a short directory in /tmp. Images
    # go in pytest's base directory, which is on the scratch tmpfs when the session has one.
    directory = Path(tempfile.mkdtemp(prefix="suture-dockerd-", dir="/tmp"))
    try:
        daemon = start_dockerd(directory, tmp_path_factory.mktemp("dockerd-data"))
    except DockerUnavailable as error:
        shutil.rmtree(directory, ignore_errors=True)
        pytest.skip(f"dockerd cannot start on this machine: {error}")
    try:
        yield daemon
    finally:
        stop_dockerd(daemon)
        shutil.rmtree(directory, ignore_errors=True)
