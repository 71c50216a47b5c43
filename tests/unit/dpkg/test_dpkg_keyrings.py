"""The archive keys shipped with suture, and the provenance record that describes them."""

from __future__ import annotations

import hashlib
import re
from importlib import resources
from typing import Any

from suture.ecosystems.dpkg.release import image_certificates, shipped_certificates

KEYRINGS = resources.files("suture").joinpath("data", "keyrings")


def test_provenance_hashes_match_shipped_files() -> None:
    provenance = KEYRINGS.joinpath("PROVENANCE.md").read_text()
    listed = dict(re.findall(r"^- `([\w.-]+\.gpg)`: `([0-9a-f]{64})`$", provenance, re.M))
    assert set(listed) == {"debian-archive-keyring.gpg", "ubuntu-archive-keyring.gpg"}
    for name, sha256 in listed.items():
        assert hashlib.sha256(KEYRINGS.joinpath(name).read_bytes()).hexdigest() == sha256


def test_shipped_keys_cover_debian_and_ubuntu() -> None:
    fingerprints = {cert.fingerprint.lower() for cert in shipped_certificates()}
    # Debian 12 archive and security archive keys, from debian-archive-keyring.
    assert "b8b80b5b623eab6ad8775c45b7c5d7d6350947f8" in fingerprints
    assert "05ab90340c0c5e797f44a8c8254cf3b5aec0a8f0" in fingerprints
    # Ubuntu Archive Automatic Signing Key (2018), from ubuntu-keyring.
    assert "f6ecb3762474eda9d21b7022871920d1991bc93c" in fingerprints


def test_removed_keys_are_not_trusted(memory_fs: type[Any]) -> None:
    shipped = KEYRINGS.joinpath("debian-archive-keyring.gpg").read_bytes()
    fs = memory_fs(
        {
            "/usr/share/keyrings/debian-archive-removed-keys.gpg": shipped,
            "/usr/share/keyrings/notes.txt": b"not a key",
        }
    )
    assert image_certificates(fs) == []
    fs.files["/etc/apt/trusted.gpg.d/debian.gpg"] = shipped
    assert len(image_certificates(fs)) == 9
