"""apt sources: one-line and deb822 parsing, mirrors, and the host fallback for distroless."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest

from suture.ecosystems.dpkg.detect import Distribution, OsRelease
from suture.ecosystems.dpkg.sources import (
    AptSource,
    apply_mirrors,
    host_sources_for,
    parse_deb822_sources,
    parse_mirror,
    parse_one_line,
    rename_suite,
    select_sources,
)
from suture.errors import RepositoryError, UsageError

ONE_LINE = """\
# the main archive
deb http://archive.example/debian bookworm main contrib
deb [arch=amd64,i386 signed-by=/usr/share/keyrings/x.gpg] http://archive.example/x stable main
# deb http://disabled.example/debian bookworm main
deb-src http://archive.example/debian bookworm main
deb [ trusted=yes ] http://local.example/repo ./
"""

DEB822 = """\
Types: deb deb-src
URIs: http://archive.example/debian http://other.example/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://disabled.example/debian
Suites: bookworm
Components: main
Enabled: no

# a comment between stanzas
Types: deb
URIs: http://inline.example/debian
Suites: bookworm
Components: main non-free
Architectures: arm64
Trusted: yes
Signed-By:
 -----BEGIN PGP PUBLIC KEY BLOCK-----
 .
 mQINBGVjZ
 -----END PGP PUBLIC KEY BLOCK-----
"""


def test_parse_one_line_options_and_comments() -> None:
    sources = parse_one_line(ONE_LINE, "/etc/apt/sources.list")
    assert [s.uri for s in sources] == [
        "http://archive.example/debian",
        "http://archive.example/x",
        "http://local.example/repo",
    ]
    assert sources[0].components == ("main", "contrib")
    assert sources[1].architectures == ("amd64", "i386")
    assert sources[1].signed_by == ("/usr/share/keyrings/x.gpg",)
    assert sources[2].trusted
    assert sources[2].is_flat
    assert sources[2].dist_url == "http://local.example/repo/."


def test_parse_one_line_rejects_short_line() -> None:
    with pytest.raises(RepositoryError, match=r"sources\.list:1"):
        parse_one_line("deb http://x\n", "/etc/apt/sources.list")


def test_parse_deb822_expands_and_skips_disabled() -> None:
    sources = parse_deb822_sources(DEB822, "/etc/apt/sources.list.d/debian.sources")
    assert len(sources) == 5
    assert sources[0].dist_url == "http://archive.example/debian/dists/bookworm"
    assert all("disabled" not in s.uri for s in sources)
    inline = sources[-1]
    assert inline.signed_by == ()
    assert inline.signed_by_key.startswith("-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nmQINBGVjZ\n")
    assert inline.trusted
    assert inline.architectures == ("arm64",)
    assert inline.components == ("main", "non-free")


def test_mirror_rewrites_prefix_only() -> None:
    sources = [
        AptSource("http://deb.example/debian", "bookworm", ("main",)),
        AptSource("http://deb.example/debian-security", "bookworm-security", ("main",)),
    ]
    mirrors = [parse_mirror("http://deb.example/debian=https://mirror.local/d/")]
    rewritten = apply_mirrors(sources, mirrors)
    assert rewritten[0].uri == "https://mirror.local/d"
    assert rewritten[1].uri == "http://deb.example/debian-security"


def test_unused_mirror_rule_warns(caplog: pytest.LogCaptureFixture) -> None:
    sources = [AptSource("http://deb.example/debian", "bookworm", ("main",))]
    mirrors = [
        parse_mirror("http://deb.example/debian=https://mirror.local/d"),
        parse_mirror("http://typo.example/debian=https://mirror.local/t"),
    ]
    with caplog.at_level(logging.WARNING, logger="suture.ecosystems.dpkg.sources"):
        apply_mirrors(sources, mirrors)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "--mirror http://typo.example/debian=https://mirror.local/t" in warnings[0]
    assert "matches no repository" in warnings[0]


def test_parse_mirror_requires_equals() -> None:
    with pytest.raises(UsageError, match="FROM=TO"):
        parse_mirror("http://x")


def test_rename_suite() -> None:
    assert rename_suite("trixie-updates", "bookworm") == "bookworm-updates"
    assert rename_suite("trixie", "bookworm") == "bookworm"
    assert rename_suite("bookworm-security", "buster") == "buster/updates"
    assert rename_suite("buster/updates", "bullseye") == "bullseye-security"


def _distribution(family: str, codename: str) -> Distribution:
    return Distribution(family=family, codename=codename, os_release=OsRelease(id=family))


def test_host_sources_filtered_and_renamed() -> None:
    host = [
        AptSource("http://h.example/debian", "trixie", ("main",), signed_by=("/k.gpg",)),
        AptSource("http://h.example/debian", "trixie-updates", ("main",)),
        AptSource("http://h.example/debian-security", "trixie-security", ("main",)),
        AptSource("http://h.example/ubuntu", "noble", ("main",)),
        AptSource("https://packages.example/sdk", "cloud-sdk", ("main",)),
    ]
    selected = host_sources_for(host, _distribution("debian", "bookworm"))
    assert [(s.uri, s.suite) for s in selected] == [
        ("http://h.example/debian", "bookworm"),
        ("http://h.example/debian", "bookworm-updates"),
        ("http://h.example/debian-security", "bookworm-security"),
    ]
    assert all(s.signed_by == () and s.origin == "host" for s in selected)


def test_select_sources_distroless_uses_host(memory_fs: type[Any], tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list.d" / "debian.sources").write_text(
        "Types: deb\nURIs: http://h.example/debian\nSuites: trixie trixie-updates\n"
        "Components: main\n"
    )
    fs = memory_fs({"/var/lib/dpkg/status.d/x": "Package: x\nVersion: 1\n"})
    selected = select_sources(fs, _distribution("debian", "bookworm"), host_apt_dir=tmp_path)
    assert [s.suite for s in selected] == ["bookworm", "bookworm-updates"]


def test_select_sources_user_file_wins(memory_fs: type[Any], tmp_path: Path) -> None:
    extra = tmp_path / "extra.sources"
    extra.write_text(
        "Types: deb\nURIs: http://u.example/debian\nSuites: bookworm\nComponents: main\n"
    )
    fs = memory_fs({})
    selected = select_sources(
        fs, _distribution("debian", "bookworm"), extra_sources=[str(extra)], host_apt_dir=tmp_path
    )
    assert [s.origin for s in selected] == ["user"]


def test_select_sources_none_names_the_fix(memory_fs: type[Any], tmp_path: Path) -> None:
    with pytest.raises(RepositoryError, match="--mirror"):
        select_sources(memory_fs({}), _distribution("debian", "bookworm"), host_apt_dir=tmp_path)


def test_select_sources_reads_image(memory_fs: type[Any], tmp_path: Path) -> None:
    fs = memory_fs(
        {
            "/etc/apt/sources.list": ONE_LINE,
            "/etc/apt/sources.list.d/debian.sources": DEB822,
            "/etc/apt/sources.list.d/ignored.txt": "deb http://no.example/ x main\n",
        }
    )
    selected = select_sources(fs, _distribution("debian", "bookworm"), host_apt_dir=tmp_path)
    assert len(selected) == 8
    assert all(s.origin == "image" for s in selected)


def test_host_sources_for_ubuntu_image() -> None:
    host = [
        AptSource("http://h.example/debian", "bookworm", ("main",)),
        AptSource("http://h.example/ubuntu", "noble", ("main", "universe")),
        AptSource("http://h.example/ubuntu", "noble-security", ("main",)),
    ]
    selected = host_sources_for(host, _distribution("ubuntu", "jammy"))
    assert [(s.uri, s.suite) for s in selected] == [
        ("http://h.example/ubuntu", "jammy"),
        ("http://h.example/ubuntu", "jammy-security"),
    ]
