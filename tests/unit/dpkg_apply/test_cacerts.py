"""cacerts: OpenSSL subject hashes computed in Python agree with `openssl x509 -hash`."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from suture.ecosystems.dpkg.cacerts import pem_certificates, subject_hash

CERT_DIR = Path("/usr/share/ca-certificates/mozilla")


def _host_certificates() -> list[Path]:
    return sorted(CERT_DIR.glob("*.crt")) if CERT_DIR.is_dir() else []


@pytest.mark.skipif(shutil.which("openssl") is None or not _host_certificates(),
                    reason="needs openssl and the host's ca-certificates")
def test_subject_hash_matches_openssl() -> None:
    mismatched = []
    for path in _host_certificates():
        expected = subprocess.run(["openssl", "x509", "-hash", "-noout", "-in", str(path)],
                                  check=True, capture_output=True, text=True).stdout.strip()
        der = pem_certificates(path.read_bytes())[0]
        if subject_hash(der) != expected:
            mismatched.append(path.name)
    assert mismatched == []


def test_pem_certificates_reads_every_block() -> None:
    block = b"-----BEGIN CERTIFICATE-----\nAAEC\n-----END CERTIFICATE-----\n"
    assert pem_certificates(block * 2) == [b"\x00\x01\x02", b"\x00\x01\x02"]
