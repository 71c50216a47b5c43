#!/usr/bin/env python3
"""Build the demo image (OCI layout `examples/demo`, tag `bookworm`) and its Trivy report.

How it is made, so anyone can check and rebuild it:
1. The Debian mirror is the one in this machine's apt sources
   (/etc/apt/sources.list.d/debian.sources or /etc/apt/sources.list); nothing is hard-coded.
2. `InRelease` of bookworm and bookworm-security is verified with gpgv against
   /usr/share/keyrings/debian-archive-keyring.gpg, and `main/binary-amd64/Packages.xz` is checked
   against the SHA256 the signed release lists. Every .deb is checked against `Packages`.
3. Of the candidate packages below, those whose bookworm-security version is newer than the
   bookworm version are the vulnerable ones. They are installed at their bookworm version,
   together with the packages they need (libc6 and its dependencies), base-files (os-release)
   and debian-archive-keyring (the archive keys, so the image trusts Debian's repositories).
4. Installing means extracting each package's data.tar, without running maintainer scripts, and
   writing the dpkg database as dpkg would: `/var/lib/dpkg/status` with `Status: install ok
   installed` stanzas, and `info/<pkg>.list`, `.md5sums` and `.conffiles`.
5. The image has no apt sources. suture then uses the host's apt sources for the image's release
   (the fallback it documents for distroless images), so the demo runs against whatever Debian
   mirror the machine running suture uses, and no mirror host name is stored in the image. The
   archive keys in the image are what the repositories are verified against.
6. The report's CVE ids come from each vulnerable package's fixed version: the fixed .deb is
   downloaded and the entries of usr/share/doc/<pkg>/changelog.Debian.gz newer than the
   installed version are searched for CVE-YYYY-NNNN ids.
7. Every timestamp is SOURCE_DATE_EPOCH (default: the bookworm Release file's Date), tar entries
   are sorted with uid/gid 0, and gzip has no name or time, so the same mirror state gives the
   same bytes.

Usage: python3 examples/make-demo.py [--out examples]
"""

from __future__ import annotations

import argparse
import email.utils
import fnmatch
import gzip
import hashlib
import io
import json
import lzma
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from debian.debian_support import version_compare

# Small libraries that often receive security fixes. Those without a pending fix are left out.
CANDIDATES = ("zlib1g", "libexpat1", "liblzma5", "libzstd1", "libpcre2-8-0")
# Installed as they are in bookworm: what the candidates depend on, os-release, archive keys.
SUPPORT = ("libc6", "libgcc-s1", "gcc-12-base", "base-files", "debian-archive-keyring")
ARCH = "amd64"
TAG = "bookworm"
MIN_VULNERABLE = 3
# dpkg path filters, as slim Debian images use them, written to /etc/dpkg/dpkg.cfg.d/excludes.
# Filtered files stay in the package's .list, as dpkg records them, but are not extracted. The
# gconv modules alone would triple the size of the demo.
PATH_EXCLUDE = ("/usr/share/doc/*", "/usr/share/man/*", "/usr/share/info/*",
                "/usr/share/locale/*", "/usr/share/lintian/*", "/usr/lib/x86_64-linux-gnu/gconv/*")
PATH_INCLUDE = ("/usr/share/doc/*/copyright",)
CVE = re.compile(r"CVE-\d{4}-\d{4,}")


@dataclass(frozen=True)
class Mirror:
    debian: str
    security: str


def read_host_mirror() -> Mirror:
    """Return the Debian and Debian security URIs from the host's apt sources."""
    texts = []
    for path in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")):
        texts.append(path.read_text())
    debian = security = ""
    for text in texts:
        for stanza in text.split("\n\n"):
            fields = dict(
                line.split(":", 1) for line in stanza.splitlines()
                if ":" in line and not line.startswith("#") and not line.startswith(" ")
            )
            uris = fields.get("URIs", "").split()
            suites = fields.get("Suites", "").split()
            if not uris:
                continue
            if any(s.endswith("-security") for s in suites):
                security = security or uris[0]
            else:
                debian = debian or uris[0]
    legacy = Path("/etc/apt/sources.list")
    if legacy.exists():
        for line in legacy.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[0] == "deb":
                uri = next(p for p in parts[1:] if not p.startswith("["))
                if "security" in line:
                    security = security or uri
                else:
                    debian = debian or uri
    if not debian or not security:
        sys.exit("make-demo: the host's apt sources name no Debian and Debian security mirror")
    return Mirror(debian.rstrip("/"), security.rstrip("/"))


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=60) as response:
        return bytes(response.read())


def verified_packages(
    base: str, suite: str, keyring: Path, work: Path
) -> dict[str, dict[str, str]]:
    """Return the amd64 main Packages index of a suite, verified through the signed InRelease."""
    inrelease = work / f"{suite}.InRelease"
    inrelease.write_bytes(fetch(f"{base}/dists/{suite}/InRelease"))
    subprocess.run(["gpgv", "--keyring", str(keyring), str(inrelease)], check=True,
                   capture_output=True)
    release = inrelease.read_text()
    name = f"main/binary-{ARCH}/Packages.xz"
    match = re.search(rf"^ ([0-9a-f]{{64}}) +\d+ {re.escape(name)}$", release.split("SHA256:")[1],
                      re.MULTILINE)
    if match is None:
        sys.exit(f"make-demo: {suite} InRelease lists no {name}")
    data = fetch(f"{base}/dists/{suite}/{name}")
    if hashlib.sha256(data).hexdigest() != match.group(1):
        sys.exit(f"make-demo: {suite} {name} does not match its signed hash")
    packages: dict[str, dict[str, str]] = {}
    for stanza in lzma.decompress(data).decode().split("\n\n"):
        fields = parse_control(stanza)
        if fields:
            packages[fields["Package"]] = fields
    if suite == "bookworm":
        date = re.search(r"^Date: (.+)$", release, re.MULTILINE)
        packages["__release_date__"] = {"Date": date.group(1) if date else ""}
    return packages


def parse_control(text: str) -> dict[str, str]:
    """Parse one deb822 stanza keeping field order and continuation lines."""
    fields: dict[str, str] = {}
    key = ""
    for line in text.splitlines():
        if line.startswith((" ", "\t")) and key:
            fields[key] += "\n" + line
        elif ":" in line:
            key, value = line.split(":", 1)
            fields[key] = value.strip()
    return fields


def download_deb(base: str, fields: dict[str, str], work: Path) -> Path:
    path = work / Path(fields["Filename"]).name
    if not path.exists():
        data = fetch(f"{base}/{fields['Filename']}")
        if hashlib.sha256(data).hexdigest() != fields["SHA256"]:
            sys.exit(f"make-demo: {fields['Filename']} does not match the SHA256 in Packages")
        path.write_bytes(data)
    return path


def ar_members(path: Path) -> dict[str, bytes]:
    """Read the members of a .deb (an ar archive)."""
    data = path.read_bytes()
    if not data.startswith(b"!<arch>\n"):
        sys.exit(f"make-demo: {path} is not a .deb")
    members, offset = {}, 8
    while offset + 60 <= len(data):
        header = data[offset:offset + 60]
        name = header[:16].decode().strip().rstrip("/")
        size = int(header[48:58].decode().strip())
        members[name] = data[offset + 60:offset + 60 + size]
        offset += 60 + size + (size % 2)
    return members


def open_member_tar(members: dict[str, bytes], prefix: str) -> tarfile.TarFile:
    name = next(n for n in members if n.startswith(prefix))
    return tarfile.open(fileobj=io.BytesIO(members[name]), mode="r:*")


def changelog_cves(deb: Path, package: str, installed: str) -> list[str]:
    """Return the CVE ids of changelog entries newer than `installed`, in order of appearance."""
    with open_member_tar(ar_members(deb), "data.tar") as data:
        member = None
        for candidate in data.getmembers():
            if candidate.name.endswith(f"usr/share/doc/{package}/changelog.Debian.gz"):
                member = candidate
        if member is None or not member.isfile():
            return []
        extracted = data.extractfile(member)
        assert extracted is not None
        text = gzip.decompress(extracted.read()).decode(errors="replace")
    found: list[str] = []
    for entry in re.split(r"\n(?=\S+ \([^)]+\) )", text):
        header = re.match(r"\S+ \(([^)]+)\)", entry)
        if header is None or version_compare(header.group(1), installed) <= 0:
            continue
        for cve in CVE.findall(entry):
            if cve not in found:
                found.append(cve)
    return found


class LayerBuilder:
    """Collect the image's files, then write them as one deterministic tar."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch
        self.entries: dict[str, tuple[tarfile.TarInfo, bytes | None]] = {}

    def add_directory(self, path: str, mode: int = 0o755) -> None:
        path = path.strip("/")
        if not path or path in self.entries:
            return
        self.add_directory(os.path.dirname(path))
        info = tarfile.TarInfo(path)
        info.type, info.mode = tarfile.DIRTYPE, mode
        self._store(info, None)

    def add_file(self, path: str, data: bytes, mode: int = 0o644) -> None:
        path = path.strip("/")
        self.add_directory(os.path.dirname(path))
        info = tarfile.TarInfo(path)
        info.size, info.mode = len(data), mode
        self._store(info, data)

    def add_member(self, member: tarfile.TarInfo, data: bytes | None) -> str:
        path = os.path.normpath(member.name.lstrip("./") or ".").strip("/")
        if path in (".", "") or path.startswith(".."):
            return ""
        self.add_directory(os.path.dirname(path))
        info = tarfile.TarInfo(path)
        info.mode = member.mode
        if member.isdir():
            info.type = tarfile.DIRTYPE
            if path in self.entries:
                return "/" + path
        elif member.issym():
            info.type, info.linkname = tarfile.SYMTYPE, member.linkname
        elif member.islnk():
            info.type = tarfile.LNKTYPE
            info.linkname = os.path.normpath(member.linkname.lstrip("./")).strip("/")
        elif member.isfile():
            info.size = len(data or b"")
        else:
            return ""
        self._store(info, data if member.isfile() else None)
        return "/" + path

    def _store(self, info: tarfile.TarInfo, data: bytes | None) -> None:
        info.mtime, info.uid, info.gid, info.uname, info.gname = self.epoch, 0, 0, "root", "root"
        self.entries[info.name] = (info, data)

    def build(self) -> tuple[bytes, bytes]:
        """Return (uncompressed tar, gzip-compressed tar)."""
        raw = io.BytesIO()
        with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for name in sorted(self.entries):
                info, data = self.entries[name]
                tar.addfile(info, io.BytesIO(data) if data is not None else None)
        tar_bytes = raw.getvalue()
        compressed = io.BytesIO()
        with gzip.GzipFile(filename="", mode="wb", fileobj=compressed, mtime=0,
                           compresslevel=9) as stream:
            stream.write(tar_bytes)
        return tar_bytes, compressed.getvalue()


def is_filtered(path: str) -> bool:
    """Return whether the dpkg path filters above keep `path` out of the image."""
    excluded = any(fnmatch.fnmatch(path, pattern) for pattern in PATH_EXCLUDE)
    return excluded and not any(fnmatch.fnmatch(path, pattern) for pattern in PATH_INCLUDE)


def install(layer: LayerBuilder, deb: Path) -> tuple[str, dict[str, str]]:
    """Extract a .deb into the layer and return its dpkg status stanza and control fields."""
    members = ar_members(deb)
    with open_member_tar(members, "control.tar") as control_tar:
        control_files = {}
        for member in control_tar.getmembers():
            if member.isfile():
                extracted = control_tar.extractfile(member)
                assert extracted is not None
                control_files[os.path.basename(member.name)] = extracted.read()
    fields = parse_control(control_files["control"].decode())
    name = fields["Package"]
    multi_arch = fields.get("Multi-Arch") == "same"
    info_name = f"{name}:{fields['Architecture']}" if multi_arch else name

    paths = []
    with open_member_tar(members, "data.tar") as data_tar:
        for member in data_tar.getmembers():
            path = "/" + os.path.normpath(member.name.lstrip("./") or ".").strip("/")
            if not member.isdir() and is_filtered(path):
                paths.append(path)
                continue
            content = None
            if member.isfile():
                extracted = data_tar.extractfile(member)
                assert extracted is not None
                content = extracted.read()
            path = layer.add_member(member, content)
            if path:
                paths.append(path)
    listed = ["/.", *paths]
    layer.add_file(f"/var/lib/dpkg/info/{info_name}.list", ("\n".join(listed) + "\n").encode())
    for control_name in ("md5sums", "conffiles", "shlibs", "triggers", "symbols"):
        if control_name in control_files:
            layer.add_file(f"/var/lib/dpkg/info/{info_name}.{control_name}",
                           control_files[control_name])

    status_fields = {"Package": name, "Status": "install ok installed"}
    status_fields.update((k, v) for k, v in fields.items() if k != "Package")
    conffiles = control_files.get("conffiles", b"").decode().split()
    if conffiles:
        lines = []
        for path in conffiles:
            _info, content = layer.entries[path.strip("/")]
            lines.append(f" {path} {hashlib.md5(content or b'').hexdigest()}")
        description = status_fields.pop("Description", "")
        status_fields["Conffiles"] = "\n" + "\n".join(lines)
        status_fields["Description"] = description
    stanza = "".join(f"{k}:{'' if v.startswith(chr(10)) else ' '}{v}\n"
                     for k, v in status_fields.items())
    return stanza, fields


def write_blob(layout: Path, data: bytes) -> dict[str, object]:
    digest = hashlib.sha256(data).hexdigest()
    path = layout / "blobs" / "sha256" / digest
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


def canonical(document: object) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    args = parser.parse_args()

    mirror = read_host_mirror()
    keyring = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
    work = Path(tempfile.mkdtemp(prefix="suture-demo-"))
    try:
        main_index = verified_packages(mirror.debian, "bookworm", keyring, work)
        security_index = verified_packages(mirror.security, "bookworm-security", keyring, work)
        release_date = main_index.pop("__release_date__")["Date"]
        epoch = int(os.environ.get("SOURCE_DATE_EPOCH") or
                    email.utils.parsedate_to_datetime(release_date).timestamp())

        vulnerable = [
            name for name in CANDIDATES
            if name in security_index and version_compare(
                security_index[name]["Version"], main_index[name]["Version"]) > 0
        ]
        if len(vulnerable) < MIN_VULNERABLE:
            sys.exit(f"make-demo: only {vulnerable} have fixes in bookworm-security; "
                     "add candidates to CANDIDATES")

        layer = LayerBuilder(epoch)
        stanzas = []
        installed: dict[str, dict[str, str]] = {}
        for name in sorted((*vulnerable, *SUPPORT)):
            deb = download_deb(mirror.debian, main_index[name], work)
            stanza, fields = install(layer, deb)
            stanzas.append(stanza)
            installed[name] = fields
        layer.add_file("/var/lib/dpkg/status", "\n".join(stanzas).encode())
        layer.add_file("/var/lib/dpkg/arch", f"{ARCH}\n".encode())
        # Format 1 tells dpkg that info files of Multi-Arch: same packages carry ":<arch>".
        layer.add_file("/var/lib/dpkg/info/format", b"1\n")
        filters = [f"path-exclude={p}" for p in PATH_EXCLUDE]
        filters += [f"path-include={p}" for p in PATH_INCLUDE]
        layer.add_file("/etc/dpkg/dpkg.cfg.d/excludes", ("\n".join(filters) + "\n").encode())
        layer.add_directory("/var/lib/dpkg/updates")
        layer.add_directory("/tmp", 0o1777)
        tar_bytes, layer_gz = layer.build()

        vulnerabilities = []
        for name in vulnerable:
            fixed = security_index[name]
            deb = download_deb(mirror.security, fixed, work)
            cves = changelog_cves(deb, name, installed[name]["Version"])
            if not cves:
                print(f"make-demo: no CVE ids in {name}'s changelog since "
                      f"{installed[name]['Version']}", file=sys.stderr)
            for cve in cves:
                vulnerabilities.append((name, installed[name], fixed["Version"], cve))

        write_layout(args.out / "demo", tar_bytes, layer_gz, epoch, installed)
        debian_version = layer.entries["etc/debian_version"][1] or b""
        write_report(args.out / "demo-report.json", args.out / "demo", vulnerabilities,
                     debian_version.decode().strip(), epoch)
        print(f"make-demo: {len(installed)} packages, {len(vulnerable)} vulnerable "
              f"({', '.join(vulnerable)}), {len(vulnerabilities)} findings")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def write_layout(layout: Path, tar_bytes: bytes, layer_gz: bytes, epoch: int,
                 installed: dict[str, dict[str, str]]) -> None:
    if layout.exists():
        shutil.rmtree(layout)
    layout.mkdir(parents=True)
    created = _iso(epoch)
    config = {
        "architecture": ARCH,
        "os": "linux",
        "created": created,
        "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]},
        "rootfs": {"type": "layers",
                   "diff_ids": [f"sha256:{hashlib.sha256(tar_bytes).hexdigest()}"]},
        "history": [{"created": created,
                     "created_by": "examples/make-demo.py: " + " ".join(sorted(installed))}],
    }
    config_descriptor = write_blob(layout, canonical(config))
    layer_descriptor = write_blob(layout, layer_gz)
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **config_descriptor},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    **layer_descriptor}],
    }
    manifest_descriptor = write_blob(layout, canonical(manifest))
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                       **manifest_descriptor,
                       "annotations": {"org.opencontainers.image.ref.name": TAG}}],
    }
    (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    (layout / "index.json").write_bytes(canonical(index))


Finding = tuple[str, dict[str, str], str, str]


def write_report(path: Path, layout: Path, vulnerabilities: list[Finding],
                 debian_version: str, epoch: int) -> None:
    index = json.loads((layout / "index.json").read_text())
    manifest_digest = index["manifests"][0]["digest"]
    manifest = json.loads((layout / "blobs" / "sha256" / manifest_digest[7:]).read_text())
    config_path = layout / "blobs" / "sha256" / manifest["config"]["digest"][7:]
    config = json.loads(config_path.read_text())
    target = f"examples/demo:{TAG} (debian {debian_version})"
    report = {
        "SchemaVersion": 2,
        "CreatedAt": _iso(epoch),
        "ArtifactName": f"examples/demo:{TAG}",
        "ArtifactType": "container_image",
        "Metadata": {
            "OS": {"Family": "debian", "Name": debian_version},
            "ImageID": manifest["config"]["digest"],
            "DiffIDs": config["rootfs"]["diff_ids"],
            "RepoDigests": [],
            "ImageConfig": {"architecture": ARCH, "os": "linux"},
        },
        "Results": [{
            "Target": target,
            "Class": "os-pkgs",
            "Type": "debian",
            "Vulnerabilities": [
                {
                    "VulnerabilityID": cve,
                    "PkgID": f"{name}@{fields['Version']}",
                    "PkgName": name,
                    "PkgIdentifier": {
                        "PURL": f"pkg:deb/debian/{name}@{fields['Version'].replace(':', '%3A')}"
                                f"?arch={fields['Architecture']}&distro=debian-{debian_version}",
                    },
                    "InstalledVersion": fields["Version"],
                    "FixedVersion": fixed,
                    "Status": "fixed",
                    "SeveritySource": "debian",
                    "Severity": "UNKNOWN",
                    "DataSource": {"ID": "debian", "Name": "Debian Security Tracker",
                                   "URL": "https://salsa.debian.org/security-tracker-team/"
                                          "security-tracker"},
                }
                for name, fields, fixed, cve in vulnerabilities
            ],
        }],
    }
    path.write_text(json.dumps(report, indent=2) + "\n")


def _iso(epoch: int) -> str:
    import datetime

    return datetime.datetime.fromtimestamp(epoch, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


if __name__ == "__main__":
    main()
