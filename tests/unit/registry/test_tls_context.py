"""The registry client's TLS context: built once per CA file, built again when the file changes."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from suture.errors import RegistryError
from suture.image.registry.client import RegistryClient, RegistrySettings
from tests.harness.registry import make_ca_and_server_cert


def _context_subjects(ca_file: Path) -> set[str]:
    client = RegistryClient("127.0.0.1:5000", RegistrySettings(ca_file=ca_file))
    context = client._ssl_context()
    subjects = set()
    for certificate in context.get_ca_certs():
        for field in certificate["subject"]:
            for key, value in field:
                if key == "commonName":
                    subjects.add(value)
    return subjects


def test_same_ca_file_shares_context(tmp_path: Path) -> None:
    ca_file, _cert, _key = make_ca_and_server_cert(tmp_path / "a")
    first = RegistryClient("127.0.0.1:5000", RegistrySettings(ca_file=ca_file))._ssl_context()
    second = RegistryClient("127.0.0.1:5001", RegistrySettings(ca_file=ca_file))._ssl_context()
    assert first is second


def test_changed_ca_file_loads_again(tmp_path: Path) -> None:
    ca_file, _cert, _key = make_ca_and_server_cert(tmp_path / "a")
    assert "suture test CA" in _context_subjects(ca_file)
    before = _context_subjects(ca_file)

    other = tmp_path / "other.crt"
    other_key = tmp_path / "other.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec",
                    "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
                    "-subj", "/CN=second test CA", "-keyout", str(other_key), "-out", str(other)],
                   check=True, capture_output=True)
    ca_file.write_bytes(other.read_bytes())

    after = _context_subjects(ca_file)
    assert "second test CA" in after
    assert "suture test CA" not in after
    assert after != before


def test_unloadable_ca_file_raises_each_time(tmp_path: Path) -> None:
    bad = tmp_path / "bad.crt"
    bad.write_text("not a certificate\n")
    settings = RegistrySettings(ca_file=bad)
    for _attempt in range(2):
        with pytest.raises(RegistryError, match="cannot load CA file"):
            RegistryClient("127.0.0.1:5000", settings)._ssl_context()


def test_missing_ca_file_names_it(tmp_path: Path) -> None:
    missing = tmp_path / "missing.crt"
    settings = RegistrySettings(ca_file=missing)
    with pytest.raises(RegistryError, match=str(missing)):
        RegistryClient("127.0.0.1:5000", settings)._ssl_context()
