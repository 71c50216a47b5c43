"""A minimal deterministic tar writer (POSIX.1-2001 pax interchange format).

suture writes tar headers itself instead of through `tarfile`, so the bytes of a patch layer do
not depend on the Python version. Every header field is set here. Owners are numeric only, with
empty user and group names, and there are no atime, ctime or fractional mtimes. A pax extended
header is added only when a value does not fit its ustar field: long or non-ASCII names, sizes of
8 GiB and more, ids of 2**21 and more. The field layout follows the ustar header of POSIX.1-2001
(pax(1), "ustar Interchange Format").
"""

from __future__ import annotations

BLOCK_SIZE = 512

REGULAR = b"0"
HARDLINK = b"1"
SYMLINK = b"2"
DIRECTORY = b"5"
_PAX_HEADER = b"x"

_MAX_OCTAL_8 = 8**7 - 1
_MAX_OCTAL_12 = 8**11 - 1


def _octal(value: int, width: int) -> bytes:
    """Format `value` as a zero-padded, NUL-terminated octal field of `width` bytes."""
    return f"{value:0{width - 1}o}".encode("ascii") + b"\x00"


def _text(value: bytes, width: int) -> bytes:
    return value[:width].ljust(width, b"\x00")


def _pax_records(records: dict[str, str]) -> bytes:
    """Encode pax records as `"<length> <key>=<value>\\n"`, where the length counts itself."""
    encoded = b""
    for key in sorted(records):
        body = f" {key}={records[key]}\n".encode("utf-8", "surrogateescape")
        length = len(body) + 1
        while len(str(length)) + len(body) != length:
            length = len(str(length)) + len(body)
        encoded += str(length).encode("ascii") + body
    return encoded


def _ustar_header(
    name: bytes, mode: int, uid: int, gid: int, size: int, mtime: int, typeflag: bytes,
    linkname: bytes,
) -> bytes:
    header = b"".join([
        _text(name, 100),
        _octal(mode, 8),
        _octal(uid, 8),
        _octal(gid, 8),
        _octal(size, 12),
        _octal(mtime, 12),
        b" " * 8,
        typeflag,
        _text(linkname, 100),
        b"ustar\x0000",
        b"\x00" * 32,
        b"\x00" * 32,
        _octal(0, 8),
        _octal(0, 8),
        b"\x00" * 155,
        b"\x00" * 12,
    ])
    checksum = f"{sum(header):06o}\x00 ".encode("ascii")
    return header[:148] + checksum + header[156:]


def header(
    name: str, *, typeflag: bytes, mode: int, uid: int, gid: int, size: int = 0,
    mtime: int, linkname: str = "",
) -> bytes:
    """Return the header blocks (a pax extended header first when needed) of one tar entry.

    `name` is the member name without a leading slash; directories should end with `/`.
    A negative mtime is written as 0 and one past the ustar range as its maximum.
    """
    name_bytes = name.encode("utf-8", "surrogateescape")
    link_bytes = linkname.encode("utf-8", "surrogateescape")
    records: dict[str, str] = {}
    if len(name_bytes) > 100 or not name.isascii():
        records["path"] = name
    if len(link_bytes) > 100 or not linkname.isascii():
        records["linkpath"] = linkname
    if size > _MAX_OCTAL_12:
        records["size"] = str(size)
    if uid > _MAX_OCTAL_8:
        records["uid"] = str(uid)
    if gid > _MAX_OCTAL_8:
        records["gid"] = str(gid)

    blocks = b""
    if records:
        payload = _pax_records(records)
        blocks += _ustar_header(b"././@PaxHeader", 0o644, 0, 0, len(payload), 0, _PAX_HEADER, b"")
        blocks += payload + padding(len(payload))
    blocks += _ustar_header(
        name_bytes, mode & 0o7777, min(uid, _MAX_OCTAL_8), min(gid, _MAX_OCTAL_8),
        min(size, _MAX_OCTAL_12), min(max(mtime, 0), _MAX_OCTAL_12), typeflag, link_bytes,
    )
    return blocks


def padding(size: int) -> bytes:
    """Return the zero bytes that pad `size` bytes of member data to a whole block."""
    return b"\x00" * (-size % BLOCK_SIZE)


END_OF_ARCHIVE = b"\x00" * (2 * BLOCK_SIZE)
"""The end-of-archive marker: two zero blocks."""
