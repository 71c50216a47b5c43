"""Packages indexes: candidate versions of binary packages, and dependency relations.

A Debian main `Packages` index has about 60,000 stanzas, and planning looks at a few hundred
packages. So one scan records where each stanza starts, grouped by its `Package:` name, and a
stanza is decoded and its fields parsed only when that name is looked up. The `Provides:` map is
built by one more scan the first time a virtual package is looked up. Measured on bookworm main
for amd64 (63,440 stanzas, one 2-core Xeon VM): python-debian's `Packages.iter_paragraphs` took
13 s, splitting the decoded text 0.6 s, and the xz decompression 2 s.

The index stays bytes, usually a read-only memory map of the decompressed file in the cache.
Decoding all of bookworm's 50 MB at once would take 200 MB, because one character outside the
Basic Multilingual Plane makes Python store every character in 4 bytes.

Relations follow deb-control(5) and the Debian Policy Manual, section 7.1:
`name[:archqual] [(op version)] [[arch ...]] [<profile>]`, `|` for alternatives, `,` between
relations.
"""

from __future__ import annotations

import mmap
import re
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property

from suture.ecosystems.dpkg.version import compare_versions

_RELATION_RE = re.compile(
    r"^\s*(?P<name>[a-z0-9][a-z0-9+.-]*)(?::(?P<archqual>[a-z0-9-]+))?\s*"
    r"(?:\(\s*(?P<op><<|<=|>=|>>|=|<|>)\s*(?P<version>[^)\s]+)\s*\))?\s*"
    r"(?:\[(?P<arches>[^\]]*)\])?\s*(?:<[^>]*>\s*)*$"
)
_PACKAGE_LINE_RE = re.compile(rb"^Package:([^\n]*)", re.MULTILINE)
# The scan drops the pages of a memory-mapped index behind it in steps of this size, so a 50 MB
# index does not stay resident. The few stanzas read later are paged in again.
_SCAN_STEP = 8 << 20
_FIELDS_NEEDED = (
    "Package",
    "Version",
    "Architecture",
    "Source",
    "Multi-Arch",
    "Depends",
    "Pre-Depends",
    "Provides",
    "Breaks",
    "Conflicts",
    "Filename",
    "Size",
    "SHA256",
    "Phased-Update-Percentage",
)


@dataclass(frozen=True)
class Relation:
    """One alternative of a dependency: a name, an optional arch qualifier and version bound."""

    name: str
    archqual: str = ""
    op: str = ""
    version: str = ""

    def __str__(self) -> str:
        text = self.name + (f":{self.archqual}" if self.archqual else "")
        return f"{text} ({self.op} {self.version})" if self.op else text

    def accepts(self, version: str) -> bool:
        """Return whether `version` meets this relation's version bound."""
        if not self.op:
            return True
        result = compare_versions(version, self.version)
        return {
            "<<": result < 0,
            "<": result <= 0,
            "<=": result <= 0,
            "=": result == 0,
            ">=": result >= 0,
            ">": result >= 0,
            ">>": result > 0,
        }[self.op]


def parse_relations(text: str) -> tuple[tuple[Relation, ...], ...]:
    """Parse a relation field into groups of alternatives; skip entries that do not parse.

    Architecture restrictions (`[amd64]`) only occur in source packages, so they are ignored.
    """
    groups: list[tuple[Relation, ...]] = []
    for group_text in text.replace("\n", " ").split(","):
        if not group_text.strip():
            continue
        alternatives: list[Relation] = []
        for alternative in group_text.split("|"):
            match = _RELATION_RE.match(alternative)
            if match is None:
                continue
            alternatives.append(
                Relation(
                    name=match["name"],
                    archqual=match["archqual"] or "",
                    op=match["op"] or "",
                    version=match["version"] or "",
                )
            )
        if alternatives:
            groups.append(tuple(alternatives))
    return tuple(groups)


def parse_fields(stanza: str) -> dict[str, str]:
    """Parse the single-line fields of a stanza that planning uses; skip continuation lines."""
    fields: dict[str, str] = {}
    for line in stanza.split("\n"):
        if not line or line[0] in " \t":
            continue
        name, _, value = line.partition(":")
        if name in _FIELDS_NEEDED:
            fields[name] = value.strip()
    return fields


@dataclass(frozen=True)
class Candidate:
    """One binary package version in a repository index.

    `base_url` is the repository URI that `filename` is relative to, and `suite` the suite that
    listed it. `not_automatic` marks suites apt does not upgrade from by default (backports).
    """

    name: str
    version: str
    architecture: str
    source: str
    source_version: str
    multi_arch: str
    depends: str
    pre_depends: str
    provides: str
    breaks: str
    conflicts: str
    filename: str
    size: int
    sha256: str
    base_url: str
    suite: str
    not_automatic: bool = False

    @property
    def url(self) -> str:
        return f"{self.base_url.rstrip('/')}/{self.filename}"

    @cached_property
    def dependencies(self) -> tuple[tuple[Relation, ...], ...]:
        """`Pre-Depends` then `Depends`, parsed."""
        return parse_relations(self.pre_depends) + parse_relations(self.depends)

    @cached_property
    def provided(self) -> tuple[Relation, ...]:
        return tuple(group[0] for group in parse_relations(self.provides))

    @cached_property
    def negative(self) -> tuple[tuple[str, Relation], ...]:
        """`Breaks` and `Conflicts` relations, each with its field name."""
        return tuple(("Breaks", g[0]) for g in parse_relations(self.breaks)) + tuple(
            ("Conflicts", g[0]) for g in parse_relations(self.conflicts)
        )


class PackagesIndex:
    """One `Packages` index of one suite, component and architecture."""

    def __init__(
        self,
        text: str | bytes | mmap.mmap,
        *,
        base_url: str,
        suite: str,
        not_automatic: bool = False,
        offsets: Mapping[str, list[int]] | None = None,
    ) -> None:
        """Index the stanzas of `text`, the decompressed `Packages` file, without decoding it.

        A memory map must stay open as long as the index is used. `offsets` is the `offsets`
        of an earlier index of the same data, which saves the scan.
        """
        self.base_url = base_url
        self.suite = suite
        self.not_automatic = not_automatic
        self._data: bytes | mmap.mmap = text.encode("utf-8") if isinstance(text, str) else text
        self._starts: dict[str, list[int]] = defaultdict(list)
        self._provides: dict[str, list[str]] | None = None
        self._parsed: dict[str, list[Candidate]] = {}
        if offsets is None:
            self._scan()
        else:
            self._starts.update(offsets)

    @property
    def offsets(self) -> Mapping[str, list[int]]:
        """The offset of each stanza in the data, by package name, in the order of the data."""
        return self._starts

    def _scan(self) -> None:
        # A stanza starts with its `Package:` line, after the start of the data or a blank line.
        data = self._data
        size = len(data)
        position = 0
        released = 0
        while position < size:
            newline = data.find(b"\n", min(position + _SCAN_STEP, size))
            end = size if newline == -1 else newline + 1
            for match in _PACKAGE_LINE_RE.finditer(data, position, end):
                start = match.start()
                if start >= 2 and data[start - 2 : start] != b"\n\n":
                    continue
                if start < 2 and data[:start].strip(b"\n"):
                    continue
                name = match[1].strip().decode("utf-8", errors="replace")
                self._starts[name].append(start)
            position = end
            released = _release_pages(data, released, position)

    def _stanza(self, start: int) -> str:
        end = self._data.find(b"\n\n", start)
        chunk = self._data[start : end if end != -1 else len(self._data)]
        return bytes(chunk).decode("utf-8", errors="replace")

    def __len__(self) -> int:
        return sum(len(starts) for starts in self._starts.values())

    def candidates(self, name: str) -> list[Candidate]:
        """Return every version of `name` in this index."""
        parsed = self._parsed.get(name)
        if parsed is None:
            parsed = [self._candidate(self._stanza(start)) for start in self._starts.get(name, [])]
            self._parsed[name] = parsed
        return list(parsed)

    def providers(self, name: str) -> list[str]:
        """Return the names of packages whose `Provides:` names `name`."""
        if self._provides is None:
            provides: dict[str, list[str]] = defaultdict(list)
            data = self._data
            for package, starts in self._starts.items():
                for start in starts:
                    stop = data.find(b"\n\n", start)
                    stop = len(data) if stop == -1 else stop
                    found = data.find(b"\nProvides:", start, stop)
                    if found == -1:
                        continue
                    end = data.find(b"\n", found + 1, stop)
                    value = bytes(data[found + 10 : end if end != -1 else stop])
                    for group in parse_relations(value.decode("utf-8", errors="replace")):
                        provides[group[0].name].append(package)
            _release_pages(data, 0, len(data))
            self._provides = provides
        return self._provides.get(name, [])

    def _candidate(self, stanza: str) -> Candidate:
        fields = parse_fields(stanza)
        name = fields.get("Package", "")
        version = fields.get("Version", "")
        source_field = fields.get("Source", "")
        source, _, source_version = source_field.partition(" ")
        source_version = source_version.strip().strip("()") or version
        return Candidate(
            name=name,
            version=version,
            architecture=fields.get("Architecture", ""),
            source=source or name,
            source_version=source_version,
            multi_arch=fields.get("Multi-Arch", "no") or "no",
            depends=fields.get("Depends", ""),
            pre_depends=fields.get("Pre-Depends", ""),
            provides=fields.get("Provides", ""),
            breaks=fields.get("Breaks", ""),
            conflicts=fields.get("Conflicts", ""),
            filename=fields.get("Filename", ""),
            size=int(fields.get("Size", "0") or 0),
            sha256=fields.get("SHA256", "").lower(),
            base_url=self.base_url,
            suite=self.suite,
            not_automatic=self.not_automatic,
        )


def _release_pages(data: bytes | mmap.mmap, start: int, end: int) -> int:
    """Drop the resident pages of a memory map from `start` to `end`; return the new start.

    The map is read-only and backed by a file, so the pages are read again when needed.
    """
    if not isinstance(data, mmap.mmap):
        return end
    aligned = end - end % mmap.PAGESIZE
    if aligned > start:
        data.madvise(mmap.MADV_DONTNEED, start, aligned - start)
        return aligned
    return start
