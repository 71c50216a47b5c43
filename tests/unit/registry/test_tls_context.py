"""The registry client's TLS context: built once per CA file, built again when the file changes."""

from __future__ import annotations

import os
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


def _make_ca(directory: Path, common_name: str, size: int | None = None) -> Path:
    """Write a self-signed P-256 CA certificate; with `size`, retry until the PEM has that size.

    ECDSA signatures vary by a few bytes, so a handful of attempts find an equal size.
    """
    directory.mkdir(parents=True, exist_ok=True)
    certificate = directory / "ca.crt"
    for _attempt in range(50):
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec",
                        "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
                        "-subj", f"/CN={common_name}", "-keyout", str(directory / "ca.key"),
                        "-out", str(certificate)],
                       check=True, capture_output=True)
        if size is None or certificate.stat().st_size == size:
            return certificate
    raise AssertionError(f"no {size}-byte certificate in 50 attempts")


def test_changed_ca_file_loads_again(tmp_path: Path) -> None:
    ca_file = _make_ca(tmp_path / "first", "first test CA")
    before = os.stat(ca_file)
    assert "first test CA" in _context_subjects(ca_file)

    # Same inode, size and modification time: only the content differs.
    other = _make_ca(tmp_path / "second", "other test CA", size=before.st_size)
    ca_file.write_bytes(other.read_bytes())
    os.utime(ca_file, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = os.stat(ca_file)
    assert (after.st_ino, after.st_size, after.st_mtime_ns) == (
        before.st_ino, before.st_size, before.st_mtime_ns)

    subjects = _context_subjects(ca_file)
    assert "other test CA" in subjects
    assert "first test CA" not in subjects


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
