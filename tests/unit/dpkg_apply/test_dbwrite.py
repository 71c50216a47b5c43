"""dbwrite: stanzas in dpkg's field order, status edits that keep every other byte."""

from __future__ import annotations

from pathlib import Path

import pytest

from suture.ecosystems.dpkg.database import split_stanzas
from suture.ecosystems.dpkg.dbwrite import (
    ConffileRecord,
    build_status_stanza,
    info_name,
    parse_fields,
    replace_stanzas,
)

HOST_STATUS = Path("/var/lib/dpkg/status")


def _as_control(stanza: str) -> tuple[str, list[ConffileRecord], str]:
    fields = parse_fields(stanza)
    records = []
    for name, value in fields:
        if name == "Conffiles":
            for line in value.splitlines():
                parts = line.split()
                if parts:
                    records.append(ConffileRecord(parts[0], parts[1], "obsolete" in parts[2:],
                                                  "remove-on-upgrade" in parts[2:]))
    # Shuffle known fields to the end so the order must come from the writer, not the input.
    shuffled = [f for f in fields if f[0] not in ("Package", "Status")] + [
        f for f in fields if f[0] == "Package"]
    control = "".join(f"{n}:{v}\n" if v.startswith("\n") else f"{n}: {v}\n" for n, v in shuffled)
    return control, records, dict(fields)["Status"]


@pytest.mark.skipif(not HOST_STATUS.exists(), reason="needs a dpkg status written by dpkg")
def test_stanza_matches_host_dpkg_status() -> None:
    stanzas = split_stanzas(HOST_STATUS.read_text())
    assert stanzas
    mismatched = []
    for stanza in stanzas:
        control, records, status = _as_control(stanza)
        if build_status_stanza(control, records, status) != stanza:
            mismatched.append(stanza.splitlines()[0])
    assert mismatched == []


def test_stanza_drops_essential_no() -> None:
    control = "Package: p\nEssential: no\nVersion: 1\nArchitecture: all\nDescription: d\n"
    assert "Essential" not in build_status_stanza(control, [])


def test_stanza_writes_obsolete_conffiles() -> None:
    control = "Package: p\nVersion: 1\nArchitecture: all\nDescription: d\n"
    stanza = build_status_stanza(control, [ConffileRecord("/etc/a", "1" * 32),
                                           ConffileRecord("/etc/b", "2" * 32, obsolete=True)])
    assert f"Conffiles:\n /etc/a {'1' * 32}\n /etc/b {'2' * 32} obsolete\n" in stanza


def test_replace_keeps_other_stanzas_bytes() -> None:
    text = "Package: a\nArchitecture: all\nX:  odd  \n\n\nPackage: b\nArchitecture: all\n\n"
    result = replace_stanzas(text, {("b", "all"): "Package: b\nArchitecture: all\nNew: 1\n"})
    assert result == "Package: a\nArchitecture: all\nX:  odd  \n\n\nPackage: b\n" \
        "Architecture: all\nNew: 1\n\n"


def test_replace_inserts_additions_sorted() -> None:
    text = "Package: a\nArchitecture: all\n\nPackage: c\nArchitecture: all\n\n"
    result = replace_stanzas(text, {}, ["Package: b\nArchitecture: all\n"])
    names = [line for line in result.splitlines() if line.startswith("Package:")]
    assert names == ["Package: a", "Package: b", "Package: c"]
    assert result.endswith("Architecture: all\n\n")


def test_replace_appends_to_empty_status() -> None:
    assert replace_stanzas("", {}, ["Package: b\nArchitecture: all\n"]) == \
        "Package: b\nArchitecture: all\n\n"


def test_info_name_multi_arch_same() -> None:
    assert info_name("libz", "arm64", "same") == "libz:arm64"
    assert info_name("bash", "amd64", "foreign") == "bash"
