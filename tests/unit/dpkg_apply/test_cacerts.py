"""cacerts: OpenSSL subject hashes computed in Python agree with `openssl x509 -hash` and with
the links `openssl rehash` made in the host's /etc/ssl/certs."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from suture.ecosystems.dpkg.cacerts import pem_certificates, subject_hash

CERT_DIR = Path("/usr/share/ca-certificates/mozilla")
LINK_DIR = Path("/etc/ssl/certs")


def _host_certificates() -> list[Path]:
    return sorted(CERT_DIR.glob("*.crt")) if CERT_DIR.is_dir() else []


@pytest.mark.skipif(shutil.which("openssl") is None or not _host_certificates(),
                    reason="needs openssl and the host's ca-certificates")
def test_subject_hash_matches_openssl() -> None:
    # One openssl process per certificate takes seconds, so openssl runs on a spread sample.
    # The rehash links in the next test cover every certificate.
    certificates = _host_certificates()
    mismatched = []
    for path in certificates[:: max(1, len(certificates) // 12)]:
        expected = subprocess.run(["openssl", "x509", "-hash", "-noout", "-in", str(path)],
                                  check=True, capture_output=True, text=True).stdout.strip()
        der = pem_certificates(path.read_bytes())[0]
        if subject_hash(der) != expected:
            mismatched.append(path.name)
    assert mismatched == []


@pytest.mark.skipif(not _host_certificates() or not any(LINK_DIR.glob("*.0")),
                    reason="needs the host's ca-certificates and the links openssl rehash made")
def test_subject_hash_matches_openssl_rehash_links() -> None:
    # update-ca-certificates runs `openssl rehash`, which names a link `HASH.N` after each
    # certificate's subject hash. Every host certificate must get the name openssl gave it.
    linked: dict[str, set[str]] = {}
    for link in LINK_DIR.iterdir():
        if link.is_symlink() and link.suffix[1:].isdigit():
            linked.setdefault(str(link.resolve()), set()).add(link.stem)
    mismatched = []
    for path in _host_certificates():
        names = linked.get(str(path.resolve()), set())
        der = pem_certificates(path.read_bytes())[0]
        if subject_hash(der) not in names:
            mismatched.append(path.name)
    assert mismatched == []


def test_pem_certificates_reads_every_block() -> None:
    block = b"-----BEGIN CERTIFICATE-----\nAAEC\n-----END CERTIFICATE-----\n"
    assert pem_certificates(block * 2) == [b"\x00\x01\x02", b"\x00\x01\x02"]
