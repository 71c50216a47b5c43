"""Tests for layer decompression, diff_ids and member safety checks."""

from __future__ import annotations

import hashlib
import io
import tarfile

import pytest
from tarbuild import directory, file, gzip_bytes, hardlink, make_tar, symlink, zstd_bytes

from suture.errors import ImageError, UnsafePathError
from suture.image.fsview import FileType
from suture.image.layers import (
    LayerLimits,
    LayerReader,
    compute_diff_id,
    iter_layer,
    normalise_member_path,
    open_layer,
)
from suture.image.model import OCI_LAYER, OCI_LAYER_GZIP, OCI_LAYER_ZSTD

SAMPLE = [directory("./usr/"), directory("./usr/bin/"), file("./usr/bin/tool", b"#!tool\n", 0o755),
          symlink("./usr/bin/alias", "tool"), hardlink("./usr/bin/same", "./usr/bin/tool")]


def _sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize(
    ("compress", "media_type"),
    [(lambda d: d, OCI_LAYER), (gzip_bytes, OCI_LAYER_GZIP), (zstd_bytes, OCI_LAYER_ZSTD)],
    ids=["plain", "gzip", "zstd"],
)
def test_layer_reader_diff_id_per_compression(compress, media_type) -> None:  # type: ignore[no-untyped-def]
    tar = make_tar(SAMPLE)
    reader = LayerReader(io.BytesIO(compress(tar)), media_type)
    paths = [member.path for member in reader]
    assert paths == ["/usr", "/usr/bin", "/usr/bin/tool", "/usr/bin/alias", "/usr/bin/same"]
    assert reader.diff_id == _sha256(tar)


def test_open_layer_detects_gzip_under_plain_media_type() -> None:
    tar = make_tar(SAMPLE)
    assert open_layer(io.BytesIO(gzip_bytes(tar)), OCI_LAYER).read() == tar


def test_open_layer_reads_multi_member_gzip() -> None:
    data = gzip_bytes(b"first ") + gzip_bytes(b"second")
    assert open_layer(io.BytesIO(data), OCI_LAYER_GZIP).read() == b"first second"


def test_compute_diff_id_matches_uncompressed_hash() -> None:
    tar = make_tar(SAMPLE)
    assert compute_diff_id(io.BytesIO(zstd_bytes(tar)), OCI_LAYER_ZSTD) == _sha256(tar)


def test_member_metadata_and_content() -> None:
    members = {m.path: m for m in iter_layer(io.BytesIO(make_tar(SAMPLE)), OCI_LAYER)}
    tool = members["/usr/bin/tool"]
    assert tool.type is FileType.FILE
    assert tool.mode == 0o755
    assert tool.size == 7
    assert members["/usr/bin/alias"].linkname == "tool"
    assert members["/usr/bin/same"].type is FileType.HARDLINK
    assert members["/usr/bin/same"].linkname == "/usr/bin/tool"


def test_member_fileobj_reads_content() -> None:
    for member in iter_layer(io.BytesIO(make_tar(SAMPLE)), OCI_LAYER):
        if member.path == "/usr/bin/tool":
            assert member.fileobj is not None
            assert member.fileobj.read() == b"#!tool\n"


@pytest.mark.parametrize("name", ["../etc/passwd", "./a/../../b", "usr/../../x"])
def test_dotdot_member_rejected(name: str) -> None:
    tar = make_tar([file(name, b"x")])
    with pytest.raises(UnsafePathError, match=r"'\.\.'"):
        list(iter_layer(io.BytesIO(tar), OCI_LAYER, what="layer 1"))


def test_hardlink_escaping_root_rejected() -> None:
    tar = make_tar([hardlink("./etc/shadow", "../../etc/shadow")])
    with pytest.raises(UnsafePathError, match="hardlink target"):
        list(iter_layer(io.BytesIO(tar), OCI_LAYER))


def test_absolute_member_kept_inside_root() -> None:
    assert normalise_member_path("/etc//passwd/", "layer") == "/etc/passwd"


def test_symlink_escaping_target_kept_as_stored() -> None:
    # Symlink targets are resolved inside the root by the merged view, so they are not rejected.
    tar = make_tar([symlink("./etc/link", "../../../etc/passwd")])
    (member,) = iter_layer(io.BytesIO(tar), OCI_LAYER)
    assert member.linkname == "../../../etc/passwd"


def test_truncated_gzip_names_layer() -> None:
    data = gzip_bytes(make_tar([file("big", bytes(range(256)) * 4000)]))
    with pytest.raises(ImageError, match="layer 3 of app") as caught:
        list(iter_layer(io.BytesIO(data[: len(data) // 2]), OCI_LAYER_GZIP, what="layer 3 of app"))
    assert "\n" not in str(caught.value)


def test_truncated_gzip_trailer_detected() -> None:
    data = gzip_bytes(make_tar([file("a", b"x")]))
    with pytest.raises(ImageError, match="truncated"):
        open_layer(io.BytesIO(data[:-4]), OCI_LAYER_GZIP).read()


def test_truncated_zstd_detected() -> None:
    data = zstd_bytes(make_tar([file("big", bytes(range(256)) * 4000)]))
    with pytest.raises(ImageError, match="truncated"):
        open_layer(io.BytesIO(data[: len(data) // 2]), OCI_LAYER_ZSTD).read()


def test_corrupt_gzip_rejected() -> None:
    data = bytearray(gzip_bytes(make_tar([file("a", b"x" * 1000)])))
    data[20] ^= 0xFF
    with pytest.raises(ImageError, match="gzip"):
        open_layer(io.BytesIO(bytes(data)), OCI_LAYER_GZIP).read()


def test_truncated_plain_tar_rejected() -> None:
    data = make_tar([file("big", b"y" * 100_000)])
    with pytest.raises(ImageError, match="layer 2"):
        for member in iter_layer(io.BytesIO(data[:50_000]), OCI_LAYER, what="layer 2"):
            assert member.fileobj is not None
            member.fileobj.read()


def test_member_size_limit() -> None:
    tar = make_tar([file("big", b"z" * 2048)])
    limits = LayerLimits(max_member_size=1024)
    with pytest.raises(ImageError, match="limit"):
        list(iter_layer(io.BytesIO(tar), OCI_LAYER, limits=limits))


def test_uncompressed_size_limit() -> None:
    tar = make_tar([file("big", b"z" * 100_000)])
    limits = LayerLimits(max_uncompressed_size=10_000)
    with pytest.raises(ImageError, match="larger than the limit"):
        list(iter_layer(io.BytesIO(gzip_bytes(tar)), OCI_LAYER_GZIP, limits=limits))


def test_member_count_limit() -> None:
    tar = make_tar([file(f"f{n}") for n in range(5)])
    with pytest.raises(ImageError, match="more than 3 members"):
        list(iter_layer(io.BytesIO(tar), OCI_LAYER, limits=LayerLimits(max_members=3)))


def test_not_a_tar_rejected() -> None:
    with pytest.raises(ImageError):
        list(iter_layer(io.BytesIO(b"garbage" * 100), OCI_LAYER))


def test_unsupported_member_type_skipped() -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        info = tarfile.TarInfo("odd")
        info.type = b"X"
        archive.addfile(info)
        archive.addfile(tarfile.TarInfo("plain"), io.BytesIO(b""))
    paths = [m.path for m in iter_layer(io.BytesIO(buffer.getvalue()), OCI_LAYER)]
    assert paths == ["/plain"]
