"""Build, cache and return the OCI image layouts that integration tests patch.

Every image is made from real packages of the host's Debian mirror, without
suture's code: root filesystems come from mmdebstrap or from .deb payloads
extracted with dpkg-deb, and the OCI layout is written by
`tests.harness.ocilayout`. Layouts are cached in `~/.cache/suture-tests/<key>/`
(or `$SUTURE_TEST_CACHE/<key>/`), where the key changes whenever the mirror
publishes a new bookworm, bookworm-security or trixie release file, so a cache
never serves images older than the mirror. Each image is built in a temporary
directory and renamed into place under a file lock, so parallel sessions
neither collide nor see half-written layouts.
"""

from __future__ import annotations

import contextlib
import email.utils
import fcntl
import functools
import hashlib
import json
import logging
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from tests.harness import debrepo, ocilayout
from tests.harness.digests import sha256_file
from tests.harness.mirror import debian_mirror_url, release_date, security_mirror_url
from tests.harness.ocilayout import ImageSpec, Layer, LayoutWriter
from tests.harness.overlay import writable_copy
from tests.harness.paths import cache_root
from tests.harness.unpack import unpack_layout

logger = logging.getLogger(__name__)

# Bump when a recipe below changes, so caches built by an older recipe are not reused.
RECIPE_VERSION = "1"
KEY_SUITES = ("bookworm", "bookworm-security", "trixie")
IMAGE_NAMES = (
    "debian-bookworm",
    "debian-bookworm-layered",
    "distroless-bookworm",
    "debian-trixie",
    "debian-bookworm-arm64",
    "multiplatform-bookworm",
)
KEYRING_PATH = "/usr/share/keyrings/debian-archive-keyring.gpg"
SOURCE_ANNOTATION = "org.opencontainers.image.source"
CREATED_ANNOTATION = "org.opencontainers.image.created"

# Payloads of the distroless image, as distroless's base image lists them.
DISTROLESS_PACKAGES = (
    "base-files",
    "netbase",
    "tzdata",
    "media-types",
    "ca-certificates",
    "libc6",
    "libgcc-s1",
    "gcc-12-base",
    "libssl3",
    "zlib1g",
)
# Status file names that differ from the package name, as in real distroless images.
DISTROLESS_STATUS_NAMES = {"libssl3": "libssl3-openssl"}
# Packages without an md5sums file in status.d (distroless only writes some).
DISTROLESS_WITHOUT_MD5SUMS = ("tzdata",)
ARM64_ROOTS = (
    "base-files",
    "base-passwd",
    "libc6",
    "libgcc-s1",
    "libssl3",
    "zlib1g",
    "ca-certificates",
    "tzdata",
    "netbase",
    "debian-archive-keyring",
    "apt",
)

# Files apt and dpkg leave behind that official Debian images remove.
_CLEANUP_GLOBS = (
    "var/cache/apt/*.bin",
    "var/cache/apt/archives/*.deb",
    "var/cache/apt/archives/partial/*",
    "var/lib/apt/lists/*",
    "var/log/apt/*",
    "var/log/dpkg.log",
    "var/log/alternatives.log",
    "var/log/bootstrap.log",
    "var/lib/dpkg/*-old",
    "var/cache/debconf/*-old",
    "var/cache/ldconfig/aux-cache",
    "etc/resolv.conf",
    "etc/hostname",
    "etc/apt/sources.list",
)


@functools.cache
def mirror_state() -> dict[str, str]:
    """Return the mirror URLs and release dates that decide whether a cache is current."""
    state = {
        "recipe": RECIPE_VERSION,
        "debian": debian_mirror_url(),
        "security": security_mirror_url(),
    }
    for suite in KEY_SUITES:
        state[suite] = release_date(suite)
    return state


def cache_key(state: dict[str, str]) -> str:
    blob = json.dumps(state, sort_keys=True).encode("utf-8")
    return hashlib.sha256(blob).hexdigest()[:16]


def source_date_epoch(state: dict[str, str]) -> int:
    """Use the bookworm release date as the time stamp of every fixture, for reproducibility."""
    return int(email.utils.parsedate_to_datetime(state["bookworm"]).timestamp())


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _remove_tree(path: Path) -> None:
    if path.exists():
        shutil.rmtree(path)


def write_debian_sources(root: Path, suite: str) -> None:
    """Give the image the deb822 sources the official Debian image ships, on the host's mirror."""
    text = (
        "Types: deb\n"
        f"URIs: {debian_mirror_url()}\n"
        f"Suites: {suite} {suite}-updates\n"
        "Components: main\n"
        f"Signed-By: {KEYRING_PATH}\n"
        "\n"
        "Types: deb\n"
        f"URIs: {security_mirror_url()}\n"
        f"Suites: {suite}-security\n"
        "Components: main\n"
        f"Signed-By: {KEYRING_PATH}\n"
    )
    target = root / "etc/apt/sources.list.d/debian.sources"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text, encoding="utf-8")


def clean_rootfs(root: Path) -> None:
    for pattern in _CLEANUP_GLOBS:
        for path in root.glob(pattern):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()


def mmdebstrap(suite: str, dest: Path, epoch: int, include: tuple[str, ...] = ()) -> None:
    """Run `mmdebstrap --variant=minbase` from the suite's main component only."""
    command = [
        "mmdebstrap",
        "--variant=minbase",
        "--mode=root",
        "--format=directory",
        "--architectures=amd64",
        "--quiet",
    ]
    if include:
        command.append("--include=" + ",".join(include))
    command += [suite, str(dest), f"deb {debian_mirror_url()} {suite} main"]
    env = {**os.environ, "SOURCE_DATE_EPOCH": str(epoch)}
    started = time.monotonic()
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"mmdebstrap {suite} failed: {result.stderr[-2000:]}")
    logger.info("mmdebstrap %s took %.1fs", suite, time.monotonic() - started)


def _debian_root(suite: str, dest: Path, epoch: int, include: tuple[str, ...] = ()) -> None:
    mmdebstrap(suite, dest, epoch, include)
    if not (dest / KEYRING_PATH.lstrip("/")).exists():
        raise RuntimeError(f"{suite} minbase has no {KEYRING_PATH}; the image could not verify apt")
    write_debian_sources(dest, suite)
    clean_rootfs(dest)


def _labels(suite: str) -> dict[str, str]:
    return {"org.opencontainers.image.title": f"suture test fixture ({suite})"}


_IMAGE_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
_REF_NAME = "org.opencontainers.image.ref.name"


@functools.cache
def _umoci_version() -> str:
    return subprocess.run(["umoci", "--version"], capture_output=True, text=True,
                          check=True).stdout.strip()


def _layers_key(layout: Path, tag: str) -> str | None:
    """Return a key for what `umoci raw unpack` makes of `layout:tag`, or None if unsure.

    The key covers umoci's version, whether it runs rootless, and the image's layer
    descriptors in order. None means the tag names no single image manifest, or a manifest
    or layer blob does not match its digest, so umoci must see the image itself.
    """
    try:
        index = json.loads((layout / "index.json").read_bytes())
        entries = [entry for entry in index.get("manifests", [])
                   if entry.get("annotations", {}).get(_REF_NAME) == tag]
        if len(entries) != 1 or entries[0].get("mediaType") != _IMAGE_MANIFEST:
            return None
        algorithm, _, digest = str(entries[0]["digest"]).partition(":")
        raw = (layout / "blobs" / algorithm / digest).read_bytes()
        if algorithm != "sha256" or hashlib.sha256(raw).hexdigest() != digest:
            return None
        layers = [[layer["mediaType"], layer["digest"], layer["size"]]
                  for layer in json.loads(raw)["layers"]]
        for _media_type, layer_digest, size in layers:
            algorithm, _, digest = str(layer_digest).partition(":")
            blob_path = layout / "blobs" / algorithm / digest
            if (algorithm != "sha256" or blob_path.stat().st_size != size
                    or sha256_file(blob_path) != digest):
                return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    blob = json.dumps([_umoci_version(), os.geteuid() == 0, layers]).encode()
    return hashlib.sha256(blob).hexdigest()[:32]


class ImageCache:
    """Return OCI layouts of the fixture images, building missing ones on first use."""

    def __init__(self, root: Path | None = None, state: dict[str, str] | None = None) -> None:
        self.state = state if state is not None else mirror_state()
        self.key = cache_key(self.state)
        self.dir = (root or cache_root()) / self.key
        self.epoch = source_date_epoch(self.state)
        self.builders: dict[str, Callable[[Path, Path], None]] = {
            "debian-bookworm": lambda out, work: self._build_debian(out, work, "bookworm"),
            "debian-trixie": lambda out, work: self._build_debian(out, work, "trixie"),
            "debian-bookworm-layered": self._build_layered,
            "distroless-bookworm": self._build_distroless,
            "debian-bookworm-arm64": self._build_arm64,
            "multiplatform-bookworm": self._build_multiplatform,
        }

    def layout(self, name: str) -> Path:
        """Return the path of the named image's OCI layout (ref `latest`), building it if needed."""
        if name not in self.builders:
            raise KeyError(f"unknown fixture image {name!r}; known: {', '.join(IMAGE_NAMES)}")
        target = self.dir / name
        if (target / "index.json").exists():
            return target
        with _locked(self.dir / f".{name}.lock"):
            if (target / "index.json").exists():
                return target
            self.dir.mkdir(parents=True, exist_ok=True)
            (self.dir / "state.json").write_text(json.dumps(self.state, indent=2), encoding="utf-8")
            started = time.monotonic()
            with tempfile.TemporaryDirectory(dir=self.dir, prefix=f".build-{name}-") as tmp:
                out = Path(tmp) / "layout"
                work = Path(tmp) / "work"
                work.mkdir()
                self.builders[name](out, work)
                # Another process may have put a copy there without the lock; keep that one.
                if not (target / "index.json").exists():
                    out.rename(target)
            logger.info("built fixture %s in %.1fs", name, time.monotonic() - started)
        return target

    def unpack(self, name: str, dest: Path) -> Path:
        """Give `dest` a writable copy of the named image's root filesystem; return `dest`.

        umoci unpacks each image once per mirror state into the cache. Every call gets a
        `writable_copy` of that tree.
        """
        # Without root, umoci unpacks rootless: owners differ, so that tree is kept apart.
        variant = f"rootfs-{name}" if os.geteuid() == 0 else f"rootfs-{name}-rootless"
        tree = self.derived(
            variant, lambda out: unpack_layout(self.layout(name), "latest", out / "rootfs")
        ) / "rootfs"
        return writable_copy(tree, dest)

    def unpack_layout(self, layout: Path, tag: str, dest: Path) -> Path:
        """Unpack the image `layout:tag` with umoci into `dest`, through a cache; return `dest`.

        umoci's tree depends only on the image's layers, which their digests name, and on
        umoci itself. So it is cached under those, and an image whose layers were unpacked
        before, such as a patched image that suture writes again byte for byte, gets a
        `writable_copy` of that tree. An index, or an image umoci cannot read, is unpacked
        directly.
        """
        key = _layers_key(layout, tag)
        if key is None:
            return unpack_layout(layout, tag, dest)
        tree = self.derived(f"umoci-{key}",
                            lambda out: unpack_layout(layout, tag, out / "rootfs")) / "rootfs"
        return writable_copy(tree, dest)

    def layout_copy(self, name: str, dest: Path) -> Path:
        """Give `dest` a writable copy of the named image's cached layout; return `dest`."""
        return writable_copy(self.layout(name), dest)

    def derived(self, name: str, build: Callable[[Path], None]) -> Path:
        """Return a directory that `build` fills once per mirror state, such as an apt reference.

        Derived results depend only on the fixture images and the mirror, so they share the
        images' cache key. `build(out)` fills an empty directory, which is renamed into place
        when it returns.
        """
        target = self.dir / "derived" / name
        if target.is_dir():
            return target
        with _locked(self.dir / "derived" / f".{name}.lock"):
            if target.is_dir():
                return target
            started = time.monotonic()
            with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".build-{name}-") as tmp:
                out = Path(tmp) / "out"
                out.mkdir()
                build(out)
                out.rename(target)
            logger.info("built derived fixture %s in %.1fs", name, time.monotonic() - started)
        return target

    # Builders write a complete layout into `out`; `work` is scratch space.

    def _write(self, out: Path, layers: list[Layer], spec: ImageSpec) -> None:
        writer = LayoutWriter(out)
        descriptor = ocilayout.write_image(writer, layers, spec)
        ref = ocilayout.Descriptor(
            descriptor.media_type,
            descriptor.digest,
            descriptor.size,
            platform=descriptor.platform,
            annotations={ocilayout.REF_ANNOTATION: "latest"},
        )
        writer.write_index([ref], {})

    def _build_debian(self, out: Path, work: Path, suite: str) -> None:
        root = work / "rootfs"
        _debian_root(suite, root, self.epoch)
        layer = ocilayout.full_layer(root, f"mmdebstrap --variant=minbase {suite}")
        self._write(out, [layer], ImageSpec("amd64", self.epoch, labels=_labels(suite)))

    def _build_layered(self, out: Path, work: Path) -> None:
        # Two bootstraps, one with openssl, give the base and the tree after "apt-get install".
        base = work / "base"
        _debian_root("bookworm", base, self.epoch)
        before = ocilayout.snapshot(base)
        layers = [ocilayout.full_layer(base, "mmdebstrap --variant=minbase bookworm")]

        root = work / "rootfs"
        _debian_root("bookworm", root, self.epoch, include=("openssl",))
        # User edits of two conffiles: openssl's own, and one of a minbase package.
        with (root / "etc/ssl/openssl.cnf").open("a", encoding="utf-8") as handle:
            handle.write("\n# Edited by the suture test harness: a local conffile change.\n")
        with (root / "etc/security/limits.conf").open("a", encoding="utf-8") as handle:
            handle.write("*               soft    nofile          4096\n")
        layers.append(ocilayout.diff_layer(before, root, "apt-get install openssl; edit conffiles"))

        # Third layer: delete one file (whiteout) and replace a directory (opaque marker).
        # Layers are tarred later, so the third one works on a hard-linked copy.
        final = work / "final"
        subprocess.run(["cp", "-al", str(root), str(final)], check=True)
        root = final
        deleted = "usr/share/doc/openssl/changelog.Debian.gz"
        (root / deleted).unlink()
        replaced = "usr/share/doc/libssl3"
        for child in (root / replaced).iterdir():
            if child.name != "copyright":
                child.unlink()
        layers.append(
            Layer(
                root=root,
                paths=(
                    "usr",
                    "usr/share",
                    "usr/share/doc",
                    replaced,
                    f"{replaced}/copyright",
                    "usr/share/doc/openssl",
                ),
                whiteouts=(deleted,),
                opaque_dirs=(replaced,),
                comment="rm changelog; replace libssl3 docs",
            )
        )
        self._write(out, layers, ImageSpec("amd64", self.epoch, labels=_labels("bookworm")))

    def _build_distroless(self, out: Path, work: Path) -> None:
        root = work / "rootfs"
        root.mkdir()
        debs = debrepo.download_debs(DISTROLESS_PACKAGES, "bookworm", "amd64", work / "debs")
        status_d = root / "var/lib/dpkg/status.d"
        status_d.mkdir(parents=True)
        for name, (deb, stanza) in sorted(debs.items()):
            _files, control = debrepo.extract_deb(deb, root)
            file_name = DISTROLESS_STATUS_NAMES.get(name, name)
            (status_d / file_name).write_text(debrepo.status_stanza(stanza), encoding="utf-8")
            md5sums = control / "md5sums"
            if md5sums.exists() and name not in DISTROLESS_WITHOUT_MD5SUMS:
                shutil.copyfile(md5sums, status_d / f"{file_name}.md5sums")
            shutil.rmtree(control)
        _write_distroless_etc(root)
        layer = ocilayout.full_layer(root, "distroless-style payloads of bookworm packages")
        spec = ImageSpec(
            "amd64",
            self.epoch,
            cmd=None,
            env=(
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt",
            ),
            labels=_labels("bookworm distroless"),
        )
        self._write(out, [layer], spec)

    def _build_arm64(self, out: Path, work: Path) -> None:
        root = work / "rootfs"
        build_dpkg_root(root, work / "debs", "bookworm", "arm64", ARM64_ROOTS)
        write_debian_sources(root, "bookworm")
        layer = ocilayout.full_layer(root, "bookworm arm64 packages, extracted without emulation")
        spec = ImageSpec("arm64", self.epoch, variant="v8", labels=_labels("bookworm arm64"))
        self._write(out, [layer], spec)

    def _build_multiplatform(self, out: Path, work: Path) -> None:
        del work
        writer = LayoutWriter(out)
        members: list[ocilayout.Descriptor] = []
        for name in ("debian-bookworm", "debian-bookworm-arm64"):
            layout = self.layout(name)
            (entry,) = ocilayout.read_index(layout)["manifests"]
            ocilayout.copy_image_blobs(writer, layout, entry["digest"])
            members.append(
                ocilayout.Descriptor(
                    entry["mediaType"], entry["digest"], entry["size"], platform=entry["platform"]
                )
            )
        annotations = {
            SOURCE_ANNOTATION: "https://example.invalid/suture/tests/harness",
            CREATED_ANNOTATION: ocilayout.iso_time(self.epoch),
        }
        index = {
            "schemaVersion": 2,
            "mediaType": ocilayout.MEDIA_INDEX,
            "manifests": [m.to_json() for m in members],
            "annotations": annotations,
        }
        nested = writer.add_json(index, ocilayout.MEDIA_INDEX)
        ref = ocilayout.Descriptor(
            nested.media_type,
            nested.digest,
            nested.size,
            annotations={ocilayout.REF_ANNOTATION: "latest"},
        )
        writer.write_index([ref], {})


def _write_distroless_etc(root: Path) -> None:
    """Add what distroless writes itself: users, groups and the CA bundle."""
    etc = root / "etc"
    (etc / "passwd").write_text(
        "root:x:0:0:root:/root:/sbin/nologin\n"
        "nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n"
        "nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n",
        encoding="utf-8",
    )
    (etc / "group").write_text(
        "root:x:0:\nnobody:x:65534:\ntty:x:5:\nstaff:x:50:\nnonroot:x:65532:\n", encoding="utf-8"
    )
    for home in ("root", "home/nonroot", "tmp"):
        (root / home).mkdir(parents=True, exist_ok=True)
    (root / "tmp").chmod(0o1777)
    (root / "home/nonroot").chmod(0o700)
    os.chown(root / "home/nonroot", 65532, 65532)
    certs = sorted((root / "usr/share/ca-certificates").rglob("*.crt"))
    bundle = etc / "ssl/certs/ca-certificates.crt"
    bundle.parent.mkdir(parents=True, exist_ok=True)
    bundle.write_bytes(b"".join(cert.read_bytes() for cert in certs))


def build_dpkg_root(
    root: Path, debs_dir: Path, suite: str, arch: str, roots: tuple[str, ...]
) -> list[str]:
    """Extract `roots` and their dependencies into a merged-/usr tree with a full dpkg database.

    No maintainer script runs, so this works for any architecture; the status
    file marks every package `install ok installed`, with conffile hashes, and
    `info/` contains each package's file list and control files as dpkg keeps them.
    """
    index = debrepo.load_packages(suite, arch)
    names = debrepo.dependency_closure(roots, index)
    debs = debrepo.download_debs(names, suite, arch, debs_dir)

    root.mkdir(parents=True)
    (root / "usr").mkdir()
    for link in ("bin", "sbin", "lib"):
        (root / "usr" / link).mkdir()
        (root / link).symlink_to(f"usr/{link}")
    dpkg_dir = root / "var/lib/dpkg"
    info = dpkg_dir / "info"
    for state_dir in (info, dpkg_dir / "updates", dpkg_dir / "triggers", dpkg_dir / "alternatives"):
        state_dir.mkdir(parents=True, exist_ok=True)

    stanzas: list[str] = []
    for name in names:
        deb, stanza = debs[name]
        files, control = debrepo.extract_deb(deb, root)
        stem = f"{name}:{arch}" if stanza.get("Multi-Arch") == "same" else name
        (info / f"{stem}.list").write_text("\n".join(files) + "\n", encoding="utf-8")
        conffile_lines: list[str] = []
        for item in sorted(control.iterdir()):
            if item.name == "control":
                continue
            shutil.copyfile(item, info / f"{stem}.{item.name}")
            shutil.copymode(item, info / f"{stem}.{item.name}")
            if item.name == "conffiles":
                for conffile in item.read_text(encoding="utf-8").split():
                    if not conffile.startswith("/"):
                        continue
                    data = (root / conffile.lstrip("/")).read_bytes()
                    conffile_lines.append(f" {conffile} {hashlib.md5(data).hexdigest()}")
        shutil.rmtree(control)
        text = debrepo.status_stanza(stanza).rstrip("\n")
        if conffile_lines:
            # dpkg writes Conffiles right before Description.
            text += "\nConffiles:\n" + "\n".join(conffile_lines)
        stanzas.append(text + "\n")
    (dpkg_dir / "status").write_text("\n".join(stanzas), encoding="utf-8")
    (dpkg_dir / "available").touch()
    # Database format 1 names the files of Multi-Arch: same packages `<name>:<arch>.*`.
    (info / "format").write_text("1\n", encoding="utf-8")

    passwd_dir = root / "usr/share/base-passwd"
    if passwd_dir.exists():
        shutil.copyfile(passwd_dir / "passwd.master", root / "etc/passwd")
        shutil.copyfile(passwd_dir / "group.master", root / "etc/group")
    for directory in ("tmp", "root", "proc", "sys", "dev", "run"):
        (root / directory).mkdir(exist_ok=True)
    (root / "tmp").chmod(0o1777)
    clean_rootfs(root)
    return names
