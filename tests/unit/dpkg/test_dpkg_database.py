"""Reading the dpkg database: status, status.d, Status, Source, Conffiles, chisel images."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from suture.ecosystems.dpkg.database import (
    DatabaseForm,
    read_database,
    split_stanzas,
)
from suture.ecosystems.dpkg.ecosystem import DpkgEcosystem
from suture.errors import UnsupportedImageError

Fs = type[Any]
Fixture = Callable[[str], str]


def test_read_status_debian11_all_packages(memory_fs: Fs, pkgdb_fixture: Fixture) -> None:
    text = pkgdb_fixture("dpkg-status-debian11-nginx-1.23.2.txt")
    database = read_database(memory_fs({"/var/lib/dpkg/status": text}))
    assert database.form is DatabaseForm.STATUS
    assert len(database.packages) == text.count("\nPackage: ") + text.startswith("Package: ")
    assert database.native_architecture == "amd64"
    assert all(p.installed for p in database.packages)


def test_stanza_raw_text_round_trips(memory_fs: Fs, pkgdb_fixture: Fixture) -> None:
    text = pkgdb_fixture("dpkg-status-debian11-nginx-1.23.2.txt")
    database = read_database(memory_fs({"/var/lib/dpkg/status": text}))
    assert "\n".join(p.raw for p in database.packages) == "\n".join(split_stanzas(text))
    for package in database.packages:
        assert package.raw.startswith(f"Package: {package.name}\n")


def test_fields_keep_order_and_values(memory_fs: Fs, pkgdb_fixture: Fixture) -> None:
    text = pkgdb_fixture("dpkg-status-debian11-nginx-1.23.2.txt")
    database = read_database(memory_fs({"/var/lib/dpkg/status": text}))
    apt = database.find("apt")
    assert apt is not None
    names = [line.split(":", 1)[0] for line in apt.raw.splitlines() if not line.startswith(" ")]
    assert list(apt.fields) == names
    assert apt.conffiles["/etc/logrotate.d/apt"] == "179f2ed4f85cbaca12fa3d69c2a4a1c3"
    assert apt.key == "apt:amd64"


def test_source_with_version_is_split(memory_fs: Fs, pkgdb_fixture: Fixture) -> None:
    text = pkgdb_fixture("dpkg-status-debian11-nginx-1.23.2.txt")
    database = read_database(memory_fs({"/var/lib/dpkg/status": text}))
    with_version = [p for p in database.packages if "(" in p.fields.get("Source", "")]
    assert with_version, "the fixture has a Source field with a version"
    for package in with_version:
        assert "(" not in package.source
        assert package.source_version in package.fields["Source"]
    plain = database.find("adduser")
    assert plain is not None
    assert plain.source == "adduser"
    assert plain.source_version == plain.version


def test_config_files_status_is_not_installed(memory_fs: Fs, pkgdb_fixture: Fixture) -> None:
    text = pkgdb_fixture("dpkg-status-ubuntu18.04-trivy-testdata.txt")
    database = read_database(memory_fs({"/var/lib/dpkg/status": text}))
    removed = [p for p in database.packages if p.status == "deinstall ok config-files"]
    assert len(removed) == 1
    assert not removed[0].installed
    assert removed[0] not in database.installed


STATUS = """\
Package: libc6
Status: install ok installed
Architecture: amd64
Version: 2.36-9
Multi-Arch: same

Package: libc6
Status: install ok installed
Architecture: i386
Version: 2.36-9
Multi-Arch: same

Package: vim
Status: hold ok installed
Architecture: amd64
Version: 2:9.0.1378-2
Source: vim (2:9.0.1378-2)
Conffiles:
 /etc/vim/vimrc a1b2c3
 /etc/vim/old 0123 obsolete

Package: dpkg
Status: install ok installed
Architecture: amd64
Version: 1.21.22

Package: gone
Status: deinstall ok config-files
Architecture: amd64
Version: 1.0
"""


def test_held_foreign_and_obsolete(memory_fs: Fs, pkgdb_fixture: Fixture) -> None:
    database = read_database(memory_fs({"/var/lib/dpkg/status": STATUS}))
    assert database.native_architecture == "amd64"
    assert database.foreign_architectures == ("i386",)
    i386 = database.find("libc6", "i386")
    assert i386 is not None
    assert i386.key == "libc6:i386"
    native = database.find("libc6")
    assert native is not None
    assert native.architecture == "amd64"
    vim = database.find("vim")
    assert vim is not None
    assert vim.held
    assert vim.installed
    assert vim.source_version == "2:9.0.1378-2"
    assert vim.obsolete_conffiles == frozenset({"/etc/vim/old"})
    gone = database.find("gone")
    assert gone is not None
    assert not gone.installed


def test_status_d_matched_by_package_field(memory_fs: Fs, pkgdb_fixture: Fixture) -> None:
    stanza = pkgdb_fixture("distroless-dpkg-status.d-libsqlite3-0.txt")
    fs = memory_fs(
        {
            "/var/lib/dpkg/status.d/sqlite": stanza,
            "/var/lib/dpkg/status.d/sqlite.md5sums": "0123  usr/lib/x\n",
        }
    )
    database = read_database(fs)
    assert database.form is DatabaseForm.STATUS_D
    assert len(database.packages) == 1
    package = database.packages[0]
    assert package.name == "libsqlite3-0"
    assert package.file == "/var/lib/dpkg/status.d/sqlite"
    assert package.installed
    assert package.source == "sqlite3"
    assert database.native_architecture == "arm64"


def test_both_forms(memory_fs: Fs, pkgdb_fixture: Fixture) -> None:
    stanza = pkgdb_fixture("distroless-dpkg-status.d-libsqlite3-0.txt")
    fs = memory_fs(
        {"/var/lib/dpkg/status": STATUS, "/var/lib/dpkg/status.d/libsqlite3-0": stanza}
    )
    assert read_database(fs).form is DatabaseForm.BOTH


def test_chisel_manifest_only_is_unsupported(memory_fs: Fs, pkgdb_fixture: Fixture) -> None:
    fs = memory_fs({"/var/lib/chisel/manifest.wall": b"\x28\xb5\x2f\xfd"})
    with pytest.raises(UnsupportedImageError, match="not supported yet"):
        read_database(fs)


def test_no_database_is_unsupported(memory_fs: Fs, pkgdb_fixture: Fixture) -> None:
    with pytest.raises(UnsupportedImageError, match="no dpkg database"):
        read_database(memory_fs({"/etc/os-release": "ID=alpine\n"}))


def test_chiseled_image_with_status_is_read(memory_fs: Fs, pkgdb_fixture: Fixture) -> None:
    fs = memory_fs(
        {
            "/var/lib/chisel/manifest.wall": b"\x28\xb5\x2f\xfd",
            "/var/lib/dpkg/status": STATUS,
        }
    )
    database = read_database(fs)
    assert database.form is DatabaseForm.STATUS
    assert database.find("dpkg") is not None


def test_ecosystem_detects_dpkg_forms(memory_fs: Fs, pkgdb_fixture: Fixture) -> None:
    ecosystem = DpkgEcosystem()
    assert ecosystem.detect(memory_fs({"/var/lib/dpkg/status": STATUS}))
    assert ecosystem.detect(memory_fs({"/var/lib/dpkg/status.d/x": "Package: x\n"}))
    assert ecosystem.detect(memory_fs({"/var/lib/chisel/manifest.wall": b""}))
    assert not ecosystem.detect(memory_fs({"/lib/apk/db/installed": "P:musl\n"}))
