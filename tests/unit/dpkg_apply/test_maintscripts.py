"""maintscripts: which skipped scripts and triggers the summary reports."""

from __future__ import annotations

from pathlib import Path

from applykit import DirectoryView, build_deb

from suture.ecosystems.dpkg.debfile import DebFile
from suture.ecosystems.dpkg.maintscripts import (
    describe_skipped_work,
    library_names,
    script_commands,
    trigger_lines,
)


def test_script_commands_trivial_script() -> None:
    assert script_commands("#!/bin/sh\nset -e\n# comment\n\nexit 0\n") == []


def test_script_commands_names_notable_commands() -> None:
    text = "#!/bin/sh\nset -e\nif [ \"$1\" = configure ]; then\n  update-ca-certificates\nfi\n"
    assert script_commands(text) == ["update-ca-certificates"]


def test_trigger_lines() -> None:
    assert trigger_lines("activate-noawait ldconfig\ninterest-noawait /usr/lib/x\n") == (
        ["ldconfig"], ["/usr/lib/x"])


def test_library_names_only_libraries() -> None:
    paths = ["/usr/lib/x86_64-linux-gnu/libz.so.1", "/usr/share/doc/zlib1g/copyright",
             "/lib/libc.so.6"]
    assert library_names(paths) == {"libz.so.1", "libc.so.6"}


def test_describe_ldconfig_valid_when_names_same(tmp_path: Path) -> None:
    deb = DebFile(build_deb(tmp_path, "libz", "2", {"/usr/lib/libz.so.1": "x"},
                            control_files={"triggers": "activate-noawait ldconfig\n"}))
    notes = describe_skipped_work(deb, ["/usr/lib/libz.so.1"], ["/usr/lib/libz.so.1"])
    assert len(notes) == 1
    assert "ld.so.cache stays valid" in notes[0]


def test_describe_library_name_change(tmp_path: Path) -> None:
    deb = DebFile(build_deb(tmp_path, "libz", "2", {"/usr/lib/libz.so.2": "x"},
                            control_files={"triggers": "activate-noawait ldconfig\n"}))
    notes = describe_skipped_work(deb, ["/usr/lib/libz.so.1"], ["/usr/lib/libz.so.2"])
    assert any("libz.so.2" in note and "not regenerated" in note for note in notes)


def test_describe_postinst(tmp_path: Path) -> None:
    deb = DebFile(build_deb(tmp_path, "p", "2", {"/usr/share/p": "x"},
                            control_files={"postinst": "#!/bin/sh\nset -e\nldconfig\n"}))
    assert describe_skipped_work(deb, [], []) == ["p: postinst not run (it calls ldconfig)"]


def test_describe_interest_trigger(tmp_path: Path) -> None:
    deb = DebFile(build_deb(tmp_path, "h", "2", {"/usr/share/h": "x"},
                            control_files={"triggers": "interest-noawait /usr/share/icons\n"}))
    notes = describe_skipped_work(deb, ["/usr/share/h"], ["/usr/share/h"])
    assert notes == ["h: handles the triggers /usr/share/icons, and its postinst did not run"]


def _root(tmp_path: Path, files: dict[str, str], links: dict[str, str]) -> DirectoryView:
    root = tmp_path / "root"
    for path, content in files.items():
        (root / path.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
        (root / path.lstrip("/")).write_text(content)
    for path, target in links.items():
        (root / path.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
        (root / path.lstrip("/")).symlink_to(target)
    return DirectoryView(root)


def test_distroless_gets_no_ld_cache_notes(tmp_path: Path) -> None:
    deb = DebFile(build_deb(tmp_path, "libz", "2", {"/usr/lib/libz.so.2": "x"},
                            control_files={"triggers": "activate-noawait ldconfig\n"}))
    fs = _root(tmp_path, {"/usr/lib/libz.so.1.2": "old"}, {"/usr/lib/libz.so.1": "libz.so.1.2"})
    notes = describe_skipped_work(deb, ["/usr/lib/libz.so.1.2"], ["/usr/lib/libz.so.2"], fs)
    assert not any("ld.so.cache" in note for note in notes)
    assert not any("shared librar" in note for note in notes)


def test_symlink_missing_from_md5sums_not_new(tmp_path: Path) -> None:
    # A distroless image's md5sums list omits the soname symlink that the image does have.
    deb = DebFile(build_deb(tmp_path, "libz", "2", {"/usr/lib/libz.so.1.2": "x"},
                            control_files={"triggers": "activate-noawait ldconfig\n"}))
    fs = _root(tmp_path, {"/usr/lib/libz.so.1.2": "old", "/etc/ld.so.cache": ""},
               {"/usr/lib/libz.so.1": "libz.so.1.2", "/lib": "usr/lib"})
    notes = describe_skipped_work(
        deb, ["/usr/lib/libz.so.1.2"], ["/lib/libz.so.1", "/usr/lib/libz.so.1.2"], fs
    )
    assert len(notes) == 1
    assert "ld.so.cache stays valid" in notes[0]
