"""apt repository configuration: the image's sources, user overrides, and host fallbacks.

Formats read (see sources.list(5)):
- one-line style, `/etc/apt/sources.list` and `sources.list.d/*.list`:
  `deb [arch=amd64 signed-by=/path trusted=yes] URI SUITE [COMPONENT...]`; `#` starts a comment;
- deb822 style, `sources.list.d/*.sources`: `Types`, `URIs`, `Suites`, `Components`,
  `Architectures`, `Signed-By` (key file paths or an inline ASCII-armoured key block),
  `Trusted`, `Enabled: no`.

User settings (`PlanOptions`):
- `mirrors`: `(FROM, TO)` URL prefix rewrites applied to every source (`--mirror FROM=TO`);
- `extra_sources`: paths of repository files on the host that add to the image's sources. A
  file ending in `.list` is read in one-line style; anything else in deb822 style, such as

      Types: deb
      URIs: http://mirror.example/debian
      Suites: bookworm bookworm-updates
      Components: main
      Signed-By: /etc/apt/keyrings/debian.gpg

An image without any sources (distroless) uses the user's extra sources, or else the host's apt
sources for the same distribution with their suites renamed to the image's release
(`trixie-updates` becomes `bookworm-updates` for a bookworm image). No mirror host is built in.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from debian.deb822 import Deb822

from suture.ecosystems.dpkg.detect import DEBIAN_CODENAMES, Distribution
from suture.errors import RepositoryError, UsageError
from suture.image.fsview import FileSystemView

logger = logging.getLogger(__name__)

APT_DIR = "/etc/apt"

_DEBIAN_SUITE_ALIASES = frozenset({"stable", "oldstable", "oldoldstable", "testing", "unstable"})
_DEBIAN_NAMES = (
    frozenset(DEBIAN_CODENAMES.values()) | _DEBIAN_SUITE_ALIASES | {"sid", "experimental"}
)


@dataclass(frozen=True)
class AptSource:
    """One repository: a URI and a suite, with its components and trust settings.

    A flat repository (`deb URI path/`) has no components and `suite` is its path. `signed_by`
    holds key file paths or fingerprints; `signed_by_key` an inline key block. `origin` is where
    the entry came from: `image`, `user` or `host`; `file` names that file.
    """

    uri: str
    suite: str
    components: tuple[str, ...]
    type: str = "deb"
    architectures: tuple[str, ...] = ()
    signed_by: tuple[str, ...] = ()
    signed_by_key: str = ""
    trusted: bool = False
    origin: str = "image"
    file: str = ""

    @property
    def is_flat(self) -> bool:
        return not self.components

    @property
    def dist_url(self) -> str:
        """The URL of the directory holding InRelease for this suite."""
        base = self.uri.rstrip("/")
        if self.is_flat:
            return f"{base}/{self.suite.strip('/')}".rstrip("/")
        return f"{base}/dists/{self.suite}"

    def __str__(self) -> str:
        return f"{self.uri} {self.suite} {' '.join(self.components)}".strip()


def parse_one_line(text: str, file: str, origin: str = "image") -> list[AptSource]:
    """Parse one-line-style sources; skip comments, disabled lines and `deb-src` entries."""
    sources: list[AptSource] = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        options: dict[str, str] = {}
        option_match = re.match(r"^(\S+)\s+\[([^\]]*)\]\s*(.*)$", line)
        if option_match:
            kind, option_text, rest = option_match.groups()
            for option in option_text.split():
                key, _, value = option.partition("=")
                options[key.strip()] = value.strip()
            words = [kind, *rest.split()]
        else:
            words = line.split()
        if len(words) < 3:
            raise RepositoryError(
                f"{file}:{number}: invalid sources line {line!r}; "
                "expected 'deb URI SUITE [COMPONENT...]'"
            )
        if words[0] != "deb":
            continue
        sources.append(
            AptSource(
                uri=words[1],
                suite=words[2],
                components=tuple(words[3:]),
                architectures=_split_list(options.get("arch", "")),
                signed_by=_split_list(options.get("signed-by", "")),
                trusted=options.get("trusted", "").lower() == "yes",
                origin=origin,
                file=file,
            )
        )
    return sources


def parse_deb822_sources(text: str, file: str, origin: str = "image") -> list[AptSource]:
    """Parse deb822-style sources; skip stanzas with `Enabled: no` and non-`deb` types."""
    sources: list[AptSource] = []
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    for paragraph in Deb822.iter_paragraphs("\n".join(lines)):
        fields = {key.lower(): str(value) for key, value in paragraph.items()}
        if fields.get("enabled", "yes").strip().lower() == "no":
            continue
        types = fields.get("types", "").split()
        uris = fields.get("uris", "").split()
        suites = fields.get("suites", "").split()
        if not uris or not suites:
            raise RepositoryError(f"{file}: a stanza lacks URIs or Suites; fix or remove it")
        signed_by_paths, signed_by_key = _parse_signed_by(fields.get("signed-by", ""))
        for uri in uris:
            for suite in suites:
                if "deb" not in types:
                    continue
                sources.append(
                    AptSource(
                        uri=uri,
                        suite=suite,
                        components=tuple(fields.get("components", "").split()),
                        architectures=tuple(fields.get("architectures", "").split()),
                        signed_by=signed_by_paths,
                        signed_by_key=signed_by_key,
                        trusted=fields.get("trusted", "").strip().lower() == "yes",
                        origin=origin,
                        file=file,
                    )
                )
    return sources


def _split_list(value: str) -> tuple[str, ...]:
    return tuple(part for part in value.split(",") if part)


def _parse_signed_by(value: str) -> tuple[tuple[str, ...], str]:
    if "BEGIN PGP PUBLIC KEY BLOCK" in value:
        # deb822 folds the key block: continuation lines start with a space and `.` is an
        # empty line.
        lines = []
        for line in value.splitlines():
            stripped = line.strip()
            lines.append("" if stripped == "." else stripped)
        return ((), "\n".join(lines).strip() + "\n")
    return (tuple(value.replace(",", " ").split()), "")


def parse_sources_file(text: str, file: str, origin: str) -> list[AptSource]:
    """Parse a sources file in the style its name implies (`.list` one-line, else deb822)."""
    if file.endswith(".list"):
        return parse_one_line(text, file, origin)
    return parse_deb822_sources(text, file, origin)


def read_image_sources(fs: FileSystemView) -> list[AptSource]:
    """Read every enabled `deb` source configured in the image."""
    sources: list[AptSource] = []
    for path in _source_paths(fs.listdir(f"{APT_DIR}/sources.list.d"), f"{APT_DIR}"):
        data = fs.read(path)
        if data is not None:
            text = data.decode("utf-8", errors="replace")
            sources.extend(parse_sources_file(text, path, "image"))
    return sources


def read_host_sources(apt_dir: Path) -> list[AptSource]:
    """Read every enabled `deb` source configured on this machine under `apt_dir`."""
    directory = apt_dir / "sources.list.d"
    names = sorted(p.name for p in directory.iterdir()) if directory.is_dir() else []
    sources: list[AptSource] = []
    for path in _source_paths(names, str(apt_dir)):
        file = Path(path)
        if file.is_file():
            sources.extend(parse_sources_file(file.read_text(errors="replace"), path, "host"))
    return sources


def _source_paths(names: Iterable[str], apt_dir: str) -> list[str]:
    paths = [f"{apt_dir}/sources.list"]
    paths += [
        f"{apt_dir}/sources.list.d/{name}"
        for name in sorted(names)
        if name.endswith((".list", ".sources"))
    ]
    return paths


def read_user_sources(paths: Sequence[str]) -> list[AptSource]:
    """Read the repository files the user named; raise UsageError for one that is missing."""
    sources: list[AptSource] = []
    for path in paths:
        file = Path(path)
        try:
            text = file.read_text()
        except OSError as error:
            raise UsageError(f"cannot read the repository file {path}: {error.strerror}") from error
        sources.extend(parse_sources_file(text, path, "user"))
    return sources


def parse_mirror(text: str) -> tuple[str, str]:
    """Parse a `FROM=TO` mirror rewrite; raise UsageError when it has no `=`."""
    source, separator, target = text.partition("=")
    if not separator or not source or not target:
        raise UsageError(f"invalid mirror {text!r}; expected FROM=TO, both URL prefixes")
    return (source, target)


def apply_mirrors(
    sources: Sequence[AptSource], mirrors: Sequence[tuple[str, str]]
) -> list[AptSource]:
    """Rewrite each source URI whose start matches a mirror's FROM prefix (first match wins).

    Logs a warning naming each rule that matches no source, since a mistyped FROM would
    otherwise leave the original repositories in use without a word.
    """
    rewritten: list[AptSource] = []
    used: set[int] = set()
    for source in sources:
        uri = source.uri
        for number, (prefix, target) in enumerate(mirrors):
            if _prefix_matches(uri, prefix):
                uri = target.rstrip("/") + uri[len(prefix.rstrip("/")) :]
                used.add(number)
                break
        rewritten.append(replace(source, uri=uri))
    for number, (prefix, target) in enumerate(mirrors):
        if number not in used:
            logger.warning(
                "--mirror %s=%s matches no repository of the image (repositories: %s)",
                prefix, target, ", ".join(sorted({s.uri for s in sources})) or "none",
            )
    return rewritten


def _prefix_matches(uri: str, prefix: str) -> bool:
    # `http://deb.debian.org/debian` must not match `http://deb.debian.org/debian-security`.
    base = prefix.rstrip("/")
    return uri.rstrip("/") == base or uri.startswith(base + "/")


def source_family(source: AptSource) -> str:
    """Guess whether a source serves Debian or Ubuntu from its URI and suite; "" if unknown."""
    suite_base = source.suite.split("-", 1)[0].split("/", 1)[0]
    if "ubuntu" in source.uri.lower():
        return "ubuntu"
    if "debian" in source.uri.lower() or suite_base in _DEBIAN_NAMES:
        return "debian"
    return ""


def rename_suite(suite: str, codename: str) -> str:
    """Rename a suite to another release, keeping its pocket (`-updates`, `-security`).

    Debian 9 and 10 published security updates as `<codename>/updates`, so a `-security` suite
    renamed to those releases takes that form.
    """
    match = re.match(r"^([a-z]+)((?:-|/)[a-z-]+)?$", suite)
    if match is None:
        return suite
    pocket = match.group(2) or ""
    if pocket in ("-security", "/updates") and codename in ("stretch", "buster"):
        pocket = "/updates"
    elif pocket == "/updates":
        pocket = "-security"
    return codename + pocket


def host_sources_for(
    host_sources: Sequence[AptSource], distribution: Distribution
) -> list[AptSource]:
    """Pick the host sources of the image's distribution, renamed to the image's release.

    Host `Signed-By` settings are dropped because the host's keys are not the image's trust;
    those sources are verified with the archive keys suture ships.
    """
    selected: list[AptSource] = []
    seen: set[tuple[str, str]] = set()
    for source in host_sources:
        if source.is_flat or source_family(source) != distribution.family:
            continue
        suite = rename_suite(source.suite, distribution.codename)
        if (source.uri, suite) in seen:
            continue
        seen.add((source.uri, suite))
        selected.append(replace(source, suite=suite, signed_by=(), signed_by_key="", origin="host"))
    return selected


def select_sources(
    fs: FileSystemView,
    distribution: Distribution,
    *,
    mirrors: Sequence[tuple[str, str]] = (),
    extra_sources: Sequence[str] = (),
    host_apt_dir: Path = Path("/etc/apt"),
) -> list[AptSource]:
    """Return the repositories to plan against, after user additions and mirror rewrites.

    Raises RepositoryError when neither the image, the user nor the host names a repository.
    """
    sources = read_image_sources(fs) + read_user_sources(extra_sources)
    if not sources and distribution.codename:
        host = host_sources_for(read_host_sources(host_apt_dir), distribution)
        if host:
            logger.info(
                "the image has no apt sources; using %d from %s for %s",
                len(host),
                host_apt_dir,
                distribution,
            )
        sources = host
    if not sources:
        raise RepositoryError(
            f"the image ({distribution or 'unknown distribution'}) has no apt sources and none "
            f"were found for it in {host_apt_dir}; name a repository with a sources file "
            "(deb822 format) or rewrite URLs with --mirror FROM=TO"
        )
    return apply_mirrors(sources, mirrors)
