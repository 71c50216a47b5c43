"""Regenerate what `update-ca-certificates` derives from the ca-certificates package, offline.

The package's postinst runs `update-ca-certificates`, which the unpack engine never runs. Its
effect is pure data, so it is reproduced here from ca-certificates 20230311 / 20250419 (Debian
bookworm) `/usr/sbin/update-ca-certificates`:
- `/etc/ca-certificates.conf` lists certificates under `/usr/share/ca-certificates`, one per
  line, `!` marking a disabled one. Entries whose file no longer exists are dropped and new
  `mozilla/` certificates are appended, as the postinst does with debconf's default setting
  (trust new certificates);
- `/etc/ssl/certs/<name>.pem` symlinks point at each enabled certificate;
- `/etc/ssl/certs/ca-certificates.crt` concatenates the enabled certificates in conf order,
  then those under `/usr/local/share/ca-certificates` sorted, each ending in a newline;
- `/etc/ssl/certs/<hash>.<n>` symlinks name each `.pem` by OpenSSL's subject hash, as
  `openssl rehash` does.

OpenSSL's subject hash (`X509_NAME_hash_ex`, OpenSSL 3.0) is the first four bytes, read little
endian, of the SHA-1 of the name's canonical encoding: each RDN's SET re-encoded in DER with
every string value converted to a UTF8String, trimmed, inner whitespace collapsed and ASCII
lowercased, the RDNs concatenated without the outer SEQUENCE.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import posixpath
import re
from typing import TYPE_CHECKING

from suture.errors import PackageError
from suture.image.fsview import FileType

if TYPE_CHECKING:
    from suture.ecosystems.dpkg.mergedview import MergedView, StagingTree

logger = logging.getLogger(__name__)

PACKAGE = "ca-certificates"
CONF_PATH = "/etc/ca-certificates.conf"
CERTS_DIR = "/usr/share/ca-certificates"
LOCAL_CERTS_DIR = "/usr/local/share/ca-certificates"
ETC_CERTS_DIR = "/etc/ssl/certs"
BUNDLE_PATH = "/etc/ssl/certs/ca-certificates.crt"

_PEM_RE = re.compile(
    rb"-----BEGIN (?:TRUSTED )?CERTIFICATE-----(.+?)-----END (?:TRUSTED )?CERTIFICATE-----",
    re.S,
)
_HASH_LINK_RE = re.compile(r"^[0-9a-f]{8}\.[0-9]+$")
# ASN.1 universal tags of the string types OpenSSL canonicalises (ASN1_MASK_CANON).
_CANON_STRING_TAGS = {0x0C: "utf-8", 0x13: "latin-1", 0x14: "latin-1", 0x16: "latin-1",
                      0x1A: "latin-1", 0x1C: "utf-32-be", 0x1E: "utf-16-be"}
_ASCII_SPACE = b" \t\n\v\f\r"


def subject_hash(der: bytes) -> str:
    """Return OpenSSL's subject hash of a DER certificate as 8 lowercase hex digits."""
    certificate = _children(_tlv(der, 0)[1])
    tbs = _children(certificate[0][1])
    index = 1 if tbs[0][0] == 0xA0 else 0
    subject = tbs[index + 4]
    canonical = b"".join(_canonical_rdn(value) for _, value in _children(subject[1]))
    digest = hashlib.sha1(canonical, usedforsecurity=False).digest()
    return f"{int.from_bytes(digest[:4], 'little'):08x}"


def pem_certificates(data: bytes) -> list[bytes]:
    """Return the DER bytes of every certificate in PEM text."""
    return [base64.b64decode(b"".join(body.split())) for body in _PEM_RE.findall(data)]


def regenerate(view: MergedView, staging: StagingTree) -> list[str]:
    """Stage the refreshed conf, bundle, `.pem` links and hash links; return summary notes.

    An image without `/etc/ca-certificates.conf` never ran update-ca-certificates (distroless
    builds its bundle itself), so only the bundle is rewritten there, from every certificate
    the package ships, and no links are added.
    """
    available = _certificate_files(view, CERTS_DIR)
    conf_data = view.read(CONF_PATH)
    local = sorted(_certificate_files(view, LOCAL_CERTS_DIR, prefix=LOCAL_CERTS_DIR))
    if conf_data is None:
        certificates = [f"{CERTS_DIR}/{name}" for name in available] + local
        _stage_text(view, staging, BUNDLE_PATH, _bundle(view, certificates))
        return [f"{PACKAGE}: regenerated {BUNDLE_PATH} offline from {len(certificates)} "
                "certificates; the image has no ca-certificates.conf, so no hash links"]

    conf_text = conf_data.decode("utf-8", errors="replace")
    new_conf, enabled = _refresh_conf(conf_text.splitlines(), available)
    if "\n".join(new_conf) + "\n" != conf_text:
        _stage_text(view, staging, CONF_PATH, ("\n".join(new_conf) + "\n").encode())

    certificates = [f"{CERTS_DIR}/{name}" for name in enabled] + local
    _stage_text(view, staging, BUNDLE_PATH, _bundle(view, certificates))
    pem_links: dict[str, str] = {}
    for path in certificates:
        name = posixpath.basename(path).removesuffix(".crt")
        name = re.sub(r"[ ,]", "_", name).replace("(", "=").replace(")", "=")
        pem_links[f"{name}.pem"] = path

    for name in view.listdir(ETC_CERTS_DIR):
        node = view.lstat(f"{ETC_CERTS_DIR}/{name}")
        if node is None or node.type is not FileType.SYMLINK:
            continue
        stale_pem = name.endswith(".pem") and name not in pem_links and node.linkname.startswith(
            (CERTS_DIR, LOCAL_CERTS_DIR))
        if stale_pem:
            staging.add_whiteout(f"{ETC_CERTS_DIR}/{name}")
    for name, target in pem_links.items():
        node = view.lstat(f"{ETC_CERTS_DIR}/{name}")
        if node is None or node.linkname != target:
            staging.add_symlink(f"{ETC_CERTS_DIR}/{name}", target)

    _rehash(view, staging)
    return [f"{PACKAGE}: regenerated {BUNDLE_PATH} and its hash links offline "
            f"({len(certificates)} certificates), as update-ca-certificates would"]


def _bundle(view: MergedView, certificates: list[str]) -> bytes:
    bundle = bytearray()
    for path in certificates:
        data = view.read(path) or b""
        bundle += data if data.endswith(b"\n") or not data else data + b"\n"
    return bytes(bundle)


def _refresh_conf(lines: list[str], available: list[str]) -> tuple[list[str], list[str]]:
    known = set(available)
    mentioned: set[str] = set()
    kept: list[str] = []
    enabled: list[str] = []
    for line in lines:
        if not line or line.startswith("#"):
            kept.append(line)
            continue
        name = line[1:] if line.startswith("!") else line
        mentioned.add(name)
        if name not in known:
            continue
        kept.append(line)
        if not line.startswith("!"):
            enabled.append(name)
    for name in available:
        if name not in mentioned and name.startswith("mozilla/"):
            kept.append(name)
            enabled.append(name)
    return kept, enabled


def _certificate_files(view: MergedView, root: str, prefix: str = "") -> list[str]:
    found: list[str] = []
    pending = [root]
    while pending:
        directory = pending.pop()
        for name in view.listdir(directory):
            path = f"{directory}/{name}"
            node = view.lstat(view.resolve(path))
            if node is None:
                continue
            if node.type is FileType.DIRECTORY:
                pending.append(path)
            elif name.endswith(".crt"):
                found.append(path if prefix else path[len(root) + 1:])
    return sorted(found)


def _rehash(view: MergedView, staging: StagingTree) -> None:
    buckets: dict[str, list[tuple[str, bytes]]] = {}
    old_links: dict[str, str] = {}
    for name in view.listdir(ETC_CERTS_DIR):
        path = f"{ETC_CERTS_DIR}/{name}"
        node = view.lstat(path)
        if node is not None and node.type is FileType.SYMLINK and _HASH_LINK_RE.match(name):
            old_links[name] = node.linkname
            continue
        if not name.endswith((".pem", ".crt", ".cer")) or name == posixpath.basename(BUNDLE_PATH):
            continue
        certificates = pem_certificates(view.read(path) or b"")
        if len(certificates) != 1:
            continue  # openssl rehash skips files that hold no certificate or several
        der = certificates[0]
        try:
            digest = subject_hash(der)
        except (IndexError, ValueError) as error:
            raise PackageError(f"{path}: certificate cannot be parsed ({error})") from error
        fingerprint = hashlib.sha256(der).digest()
        bucket = buckets.setdefault(digest, [])
        if all(fingerprint != seen for _, seen in bucket):
            bucket.append((name, fingerprint))

    new_links: dict[str, str] = {}
    for digest, entries in buckets.items():
        for number, (name, _) in enumerate(sorted(entries)):
            new_links[f"{digest}.{number}"] = name
    for name in old_links:
        if name not in new_links:
            staging.add_whiteout(f"{ETC_CERTS_DIR}/{name}")
    for name, target in new_links.items():
        if old_links.get(name) != target:
            staging.add_symlink(f"{ETC_CERTS_DIR}/{name}", target)


def _stage_text(view: MergedView, staging: StagingTree, path: str, data: bytes) -> None:
    node = view.lstat(path)
    mode, uid, gid = (node.mode, node.uid, node.gid) if node is not None else (0o644, 0, 0)
    staging.add_file(path, data=data, mode=mode, uid=uid, gid=gid, mtime=None)


def _tlv(data: bytes, offset: int) -> tuple[int, bytes, int]:
    """Parse one DER element at `offset`; return (tag, value, offset after it)."""
    tag = data[offset]
    length = data[offset + 1]
    offset += 2
    if length & 0x80:
        count = length & 0x7F
        if count == 0 or count > 4:
            raise ValueError("unsupported DER length")
        length = int.from_bytes(data[offset:offset + count], "big")
        offset += count
    end = offset + length
    if end > len(data):
        raise ValueError("truncated DER element")
    return tag, data[offset:end], end


def _children(data: bytes) -> list[tuple[int, bytes]]:
    items: list[tuple[int, bytes]] = []
    offset = 0
    while offset < len(data):
        tag, value, offset = _tlv(data, offset)
        items.append((tag, value))
    return items


def _encode(tag: int, value: bytes) -> bytes:
    length = len(value)
    if length < 0x80:
        return bytes([tag, length]) + value
    size = (length.bit_length() + 7) // 8
    return bytes([tag, 0x80 | size]) + length.to_bytes(size, "big") + value


def _canonical_rdn(rdn: bytes) -> bytes:
    attributes = []
    for _, attribute in _children(rdn):
        (oid_tag, oid), (value_tag, value) = _children(attribute)[:2]
        encoding = _CANON_STRING_TAGS.get(value_tag)
        if encoding is not None:
            value_tag, value = 0x0C, _canonical_text(value.decode(encoding).encode("utf-8"))
        attributes.append(_encode(0x30, _encode(oid_tag, oid) + _encode(value_tag, value)))
    # DER orders the members of a SET by their encodings.
    return _encode(0x31, b"".join(sorted(attributes)))


def _canonical_text(value: bytes) -> bytes:
    words = [word for word in _split_ascii_space(value) if word]
    return b" ".join(words).lower() if words else b""


def _split_ascii_space(value: bytes) -> list[bytes]:
    words: list[bytes] = []
    current = bytearray()
    for byte in value:
        if byte in _ASCII_SPACE:
            words.append(bytes(current))
            current = bytearray()
        else:
            current.append(byte)
    words.append(bytes(current))
    return words
