"""DebFile: real packages parse; hostile or damaged packages raise PackageError."""

from __future__ import annotations

import tarfile
from pathlib import Path

import pytest
from applykit import build_deb, build_raw_deb, member

from suture.ecosystems.dpkg.debfile import DebFile
from suture.errors import PackageError
from suture.image.fsview import FileType


def test_debfile_reads_control_and_payload(tmp_path: Path) -> None:
    deb = DebFile(build_deb(tmp_path, "demo", "1.0-1", {"/usr/bin/a": "a\n", "/etc/x": "x\n"},
                            conffiles=("/etc/x",), symlinks={"/usr/bin/b": "/usr/bin/a"}))
    members = {m.path: m for m, _ in deb.iter_data()}
    assert deb.name == "demo"
    assert deb.version == "1.0-1"
    assert deb.conffiles() == ["/etc/x"]
    assert members["/"].type is FileType.DIRECTORY
    assert members["/usr/bin/a"].mode == 0o755
    assert members["/usr/bin/b"].linkname == "/usr/bin/a"


def test_debfile_streams_file_content(tmp_path: Path) -> None:
    deb = DebFile(build_deb(tmp_path, "demo", "1", {"/usr/share/d/f": "content\n"}))
    contents = {m.path: f.read() for m, f in deb.iter_data() if f is not None}
    assert contents == {"/usr/share/d/f": b"content\n"}


@pytest.mark.parametrize("compression", ["xz", "zstd", "none"])
def test_debfile_supports_compression(tmp_path: Path, compression: str) -> None:
    import shutil
    import subprocess

    tree = tmp_path / "tree"
    (tree / "DEBIAN").mkdir(parents=True)
    (tree / "DEBIAN/control").write_text(
        "Package: c\nVersion: 1\nArchitecture: all\nMaintainer: T <t@e.org>\nDescription: d\n")
    (tree / "usr").mkdir()
    (tree / "usr/f").write_text("f\n")
    output = tmp_path / "c.deb"
    if shutil.which("dpkg-deb") is None:
        pytest.skip("needs dpkg-deb")
    subprocess.run(["dpkg-deb", "--root-owner-group", f"-Z{compression}", "-b", str(tree),
                    str(output)], check=True, capture_output=True)
    paths = [m.path for m, _ in DebFile(output).iter_data()]
    assert "/usr/f" in paths


def test_debfile_rejects_path_traversal(tmp_path: Path) -> None:
    path = build_raw_deb(tmp_path / "t.deb", [member("./", kind=tarfile.DIRTYPE),
                                              member("./../../etc/passwd", b"x")])
    with pytest.raises(PackageError, match=r"'\.\./\.\./etc/passwd'|escape"):
        list(DebFile(path).iter_data())


def test_debfile_rejects_write_through_symlink(tmp_path: Path) -> None:
    path = build_raw_deb(tmp_path / "s.deb", [
        member("./", kind=tarfile.DIRTYPE),
        member("./usr/link", kind=tarfile.SYMTYPE, linkname="../../../../tmp"),
        member("./usr/link/evil", b"payload"),
    ])
    with pytest.raises(PackageError, match="through the symlink /usr/link"):
        list(DebFile(path).iter_data())


def test_debfile_rejects_device_node(tmp_path: Path) -> None:
    path = build_raw_deb(tmp_path / "d.deb", [member("./dev/sda", kind=tarfile.BLKTYPE)])
    with pytest.raises(PackageError, match="device node"):
        list(DebFile(path).iter_data())


def test_debfile_rejects_truncated_payload(tmp_path: Path) -> None:
    content = bytes(range(256)) * 4096
    members = [member("./", kind=tarfile.DIRTYPE), member("./usr/big", content)]
    full = build_raw_deb(tmp_path / "full.deb", members)
    assert sum(1 for _ in DebFile(full).iter_data()) == 2
    path = build_raw_deb(tmp_path / "t.deb", members, truncate_data_to=2000)
    with pytest.raises(PackageError, match="truncated or corrupt"):
        for _, fileobj in DebFile(path).iter_data():
            if fileobj is not None:
                fileobj.read()


def test_debfile_rejects_truncated_ar_member(tmp_path: Path) -> None:
    full = build_deb(tmp_path, "demo", "1", {"/usr/f": "f\n" * 1000})
    cut = tmp_path / "cut.deb"
    cut.write_bytes(full.read_bytes()[:-100])
    with pytest.raises(PackageError, match="truncated"):
        DebFile(cut)


def test_debfile_rejects_unknown_hardlink_target(tmp_path: Path) -> None:
    path = build_raw_deb(tmp_path / "h.deb", [
        member("./usr/link", kind=tarfile.LNKTYPE, linkname="./etc/shadow"),
    ])
    with pytest.raises(PackageError, match="not an earlier member"):
        list(DebFile(path).iter_data())


def test_debfile_rejects_non_deb(tmp_path: Path) -> None:
    path = tmp_path / "x.deb"
    path.write_bytes(b"not an archive")
    with pytest.raises(PackageError, match="no ar archive header"):
        DebFile(path)
