"""Benchmark suture against a rebuild and against the download floor; write bench/RESULTS.md.

Run from the repository root, as root (dockerd and the registry run locally):

    .venv/bin/python -m bench.run [--runs 3] [--batch 10] [--jobs N]

Every case runs several times in this one invocation. The fixture images, the TLS registry
and dockerd come from tests/harness. All package traffic (suture, apt in `docker build`,
`apt-get download`) goes through a byte-counting proxy on 127.0.0.1 in front of the mirror
named in /etc/apt/sources.list.d/debian.sources.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench import pyspy
from bench.measure import Measured, require_gnu_time, run_measured, spread
from bench.proxy import CountingProxy
from tests.harness.docker import DockerDaemon, DockerUnavailable, start_dockerd, stop_dockerd
from tests.harness.images import ImageCache
from tests.harness.mirror import SOURCES_FILE, debian_mirror_url, security_mirror_url
from tests.harness.registry import Registry, request_lines, start_registry, stop_registry

logger = logging.getLogger("bench")

ROOT = Path(__file__).resolve().parent.parent
SUTURE = Path(sys.executable).parent / "suture"
PY_SPY = Path(sys.executable).parent / "py-spy"
PROFILE_HZ = 100
RSS_TARGET_MB = 150.0
ANALYSIS_MARKER = "<!-- Written by hand from a run's figures; bench/run.py keeps this part. -->"


@dataclass
class Run:
    """One measured run of one case."""

    wall: float
    cpu: float | None = None
    rss_mb: float | None = None
    downloaded: int | None = None
    uploaded: int | None = None
    layer: int | None = None
    layer_raw: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Case:
    key: str
    title: str
    runs: list[Run] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    error: str | None = None
    load: list[str] = field(default_factory=list)


class Bench:
    def __init__(self, work: Path, runs: int, batch: int, jobs: int) -> None:
        self.work = work
        self.runs = runs
        self.batch = batch
        self.jobs = jobs
        self.cache = ImageCache()
        self.proxy = CountingProxy([debian_mirror_url(), security_mirror_url()]).start()
        self.cases: dict[str, Case] = {}
        self.plan: list[dict[str, str]] = []
        self.payload: dict[str, int] = {}
        self.profiles: dict[str, str] = {}
        self._count = 0
        self.warm_cache: Path | None = None
        self.t0 = time.monotonic()

    # --- helpers -----------------------------------------------------------------------

    def fresh(self, name: str) -> Path:
        self._count += 1
        path = self.work / f"{self._count:03d}-{name}"
        path.mkdir(parents=True)
        return path

    def suture(self, *args: str) -> list[str]:
        return [str(SUTURE), "patch", *args, "--progress", "none", *self.proxy.mirror_options()]

    def measure_suture(self, command: Sequence[str], cache: Path, log: Path,
                       env_extra: dict[str, str] | None = None) -> tuple[Measured, int]:
        env = {**os.environ, "XDG_CACHE_HOME": str(cache), **(env_extra or {})}
        self.proxy.counter.take()
        measured = run_measured(command, log, env=env)
        downloaded, _requests, _urls = self.proxy.counter.take()
        if measured.returncode != 0:
            tail = log.read_text(errors="replace")[-1500:]
            raise RuntimeError(f"{shlex.join(command)} exited {measured.returncode}:\n{tail}")
        return measured, downloaded

    def case(self, key: str, title: str, body: Callable[[Case], None]) -> None:
        case = Case(key, title)
        self.cases[key] = case
        started = time.monotonic()
        logger.info("case %s: %s", key, title)
        case.load.append(load_now())
        try:
            body(case)
        except Exception as error:  # a failed case is reported, the others still run
            logger.exception("case %s failed", key)
            case.error = f"{type(error).__name__}: {str(error)[-800:]}"
        case.load.append(load_now())
        logger.info("case %s done in %.0fs", key, time.monotonic() - started)

    # --- case 1 and 5: OCI layout to OCI layout ---------------------------------------

    def suture_oci(self, case: Case) -> None:
        source = self.cache.layout("debian-bookworm")
        for index in range(self.runs):
            run_dir = self.fresh("oci-cold")
            summary = run_dir / "summary.json"
            dest = run_dir / "out"
            command = self.suture("-i", f"oci:{source}:latest", "--dest", f"oci:{dest}:patched",
                                  "--summary", str(summary))
            measured, downloaded = self.measure_suture(command, run_dir / "cache",
                                                       run_dir / "suture.log")
            run = suture_run(measured, downloaded, dest, "patched")
            document = json.loads(summary.read_text())
            run.extra["suture_bytes_downloaded"] = document["bytes_downloaded"]
            run.extra["digest"] = document["result"]["digest"]
            case.runs.append(run)
            if index == 0:
                self.plan = updated_packages(document)
            self.warm_cache = run_dir / "cache"
        digests = {run.extra["digest"] for run in case.runs}
        layers = {run.extra["layer_digest"] for run in case.runs}
        case.notes.append(f"{len(self.plan)} packages updated; {len(digests)} distinct result "
                          f"digest(s) and {len(layers)} distinct patch layer digest(s) over "
                          f"{len(case.runs)} runs.")
        case.notes.append("downloaded = all bytes through the mirror proxy (signed indexes and "
                          ".debs); suture's own bytes_downloaded (.debs only) = "
                          f"{case.runs[-1].extra['suture_bytes_downloaded'] / 1e6:.2f} MB.")

    def suture_warm(self, case: Case, compression: str = "gzip") -> None:
        source = self.cache.layout("debian-bookworm")
        cache = self.warm_cache
        if cache is None:
            raise RuntimeError("no warm cache: the cold suture case did not run")
        for _ in range(self.runs):
            run_dir = self.fresh(f"oci-warm-{compression}")
            dest = run_dir / "out"
            command = self.suture("-i", f"oci:{source}:latest", "--dest", f"oci:{dest}:patched",
                                  "--summary", str(run_dir / "summary.json"),
                                  "--compression", compression)
            measured, downloaded = self.measure_suture(command, cache, run_dir / "suture.log")
            case.runs.append(suture_run(measured, downloaded, dest, "patched"))
        case.notes.append("The cache of the last cold run is reused. Downloaded bytes are the "
                          "proxy's count, which includes the index freshness checks.")

    # --- case 2: registry to registry ---------------------------------------------------

    def suture_registry(self, case: Case) -> None:
        source = self.cache.layout("debian-bookworm")
        original = set(layer_digests(source, "latest"))
        for _ in range(self.runs):
            run_dir = self.fresh("registry")
            registry = start_registry(run_dir / "registry", tls=True)
            try:
                run = self.one_registry_run(case, registry, source, run_dir, original)
            finally:
                stop_registry(registry)
            case.runs.append(run)
        reuploaded = sorted({d for run in case.runs for d in run.extra["reuploaded"]})
        case.notes.append(
            "Original layers re-uploaded: "
            + (", ".join(reuploaded) if reuploaded else "none (no PUT/POST for any original "
               "layer digest in the registry log, and no new blob with an original digest)")
            + ".")
        last = case.runs[-1].extra
        case.notes.append(
            f"Upload requests per run: {last['upload_requests']}; new blobs in the registry: "
            f"{last['new_blobs']} ({', '.join(last['new_blob_kinds'])}). uploaded = the sizes of "
            "the blobs that were not in the registry storage before the run. Bytes pulled from "
            f"the registry: {last['registry_pulled'] / 1e6:.1f} MB in {last['blob_gets']} "
            f"blob GETs, {last['base_gets']} of them for the original layer (from its access "
            "log).")

    def one_registry_run(self, case: Case, registry: Registry, source: Path, run_dir: Path,
                         original: set[str]) -> Run:
        assert registry.ca_file is not None
        reference = f"{registry.host}/bench/bookworm"
        subprocess.run(
            ["skopeo", "copy", "--quiet", "--dest-cert-dir", str(registry.ca_file.parent),
             f"oci:{source}:latest", f"docker://{reference}:latest"],
            check=True, capture_output=True, timeout=300,
        )
        before = registry_blobs(registry)
        log_start = len(request_lines(registry.log_path))
        summary = run_dir / "summary.json"
        command = self.suture("-i", f"docker://{reference}:latest", "--push",
                              "--registry-ca", str(registry.ca_file), "--summary", str(summary))
        measured, downloaded = self.measure_suture(
            command, run_dir / "cache", run_dir / "suture.log",
            {"DOCKER_CONFIG": str(registry.docker_config)})
        after = registry_blobs(registry)
        new = {digest: size for digest, size in after.items() if digest not in before}
        lines = request_lines(registry.log_path)[log_start:]
        uploads = [line for line in lines if re.search(r'"(PUT|POST|PATCH) ', line)]
        reuploaded = sorted(d for d in original if any(d in line for line in uploads) or d in new)
        blob_gets = [(path, size) for method, path, _status, size in parse_access(lines)
                     if method == "GET" and "/blobs/" in path]
        pulled = sum(size for _path, size in blob_gets)
        base_gets = sum(1 for path, _size in blob_gets if any(d in path for d in original))
        document = json.loads(summary.read_text())
        result_digest = document["result"]["digest"]
        layer = registry_patch_layer(registry, result_digest)
        run = Run(wall=measured.wall, cpu=measured.cpu, rss_mb=measured.max_rss_kb / 1024,
                  downloaded=downloaded, uploaded=sum(new.values()), layer=layer)
        kinds = []
        for size in sorted(new.values(), reverse=True):
            kinds.append(f"{'patch layer' if size == layer else 'json'} {size} B")
        run.extra.update(reuploaded=reuploaded, upload_requests=len(uploads),
                         new_blobs=len(new), new_blob_kinds=kinds, registry_pulled=pulled,
                         blob_gets=len(blob_gets), base_gets=base_gets)
        return run

    # --- case 3: the rebuild ------------------------------------------------------------

    def rebuild(self, case: Case) -> None:
        directory = Path(tempfile.mkdtemp(prefix="bench-dockerd-", dir="/tmp"))
        try:
            daemon = start_dockerd(directory)
        except DockerUnavailable as error:
            shutil.rmtree(directory, ignore_errors=True)
            raise RuntimeError(f"dockerd cannot start here: {error}") from error
        try:
            self.rebuild_with(case, daemon, directory)
        finally:
            stop_dockerd(daemon)
            shutil.rmtree(directory, ignore_errors=True)

    def rebuild_with(self, case: Case, daemon: DockerDaemon, directory: Path) -> None:
        source = self.cache.layout("debian-bookworm")
        started = time.monotonic()
        subprocess.run(
            ["skopeo", "copy", "--quiet", "--dest-daemon-host", daemon.host,
             f"oci:{source}:latest", "docker-daemon:bench/bookworm:latest"],
            check=True, capture_output=True, timeout=300,
        )
        case.notes.append(f"Loading the image into dockerd took {time.monotonic() - started:.1f}s "
                          "(not counted).")
        context = directory / "context"
        context.mkdir()
        (context / "Dockerfile").write_text(
            "FROM bench/bookworm:latest\nRUN apt-get update && apt-get upgrade -y\n")
        env = {**daemon.env, "DOCKER_BUILDKIT": "0"}
        for index in range(self.runs):
            tag = f"bench/rebuilt:{index}"
            command = ["docker", "build", "--no-cache", "--network", "host",
                       "--build-arg", f"http_proxy={self.proxy.url}", "-t", tag, str(context)]
            self.proxy.counter.take()
            measured = run_measured(command, self.fresh("rebuild") / "build.log", env=env)
            downloaded, _requests, _urls = self.proxy.counter.take()
            if measured.returncode != 0:
                raise RuntimeError(f"docker build exited {measured.returncode}: "
                                   f"{measured.log.read_text(errors='replace')[-1500:]}")
            run = Run(wall=measured.wall, downloaded=downloaded)
            run.layer_raw = int(daemon.run("image", "inspect", "--format", "{{.Size}}", tag)
                                .stdout) - int(daemon.run("image", "inspect", "--format",
                                                          "{{.Size}}", "bench/bookworm:latest")
                                               .stdout)
            if index == self.runs - 1:
                run.layer_raw, run.layer, leftovers = saved_top_layer(daemon, tag,
                                                                      self.fresh("save"))
                case.notes.append(
                    f"Of the last RUN layer's {run.layer_raw / 1e6:.1f} MB, "
                    f"{leftovers / 1e6:.1f} MB are apt lists and caches (/var/lib/apt/lists, "
                    "/var/cache/apt, including the downloaded .debs) that a Dockerfile could "
                    "delete in the same RUN.")
            case.runs.append(run)
        case.notes.append("Builder: dockerd from the harness, legacy builder (DOCKER_BUILDKIT=0), "
                          "`--network host`, apt through the counting proxy (`http_proxy` "
                          "build argument), `--no-cache` every run.")
        case.notes.append("CPU and RSS are spent in dockerd and the build container, not in the "
                          "measured docker CLI, so they are not reported. Layer: the RUN layer "
                          "from `docker save` (uncompressed tar), gzip -6 for the compressed "
                          "size (last run); earlier runs show the image size difference.")

    # --- case 4: the download floor -----------------------------------------------------

    def download_floor(self, case: Case) -> None:
        if not self.plan:
            raise RuntimeError("no plan: the cold suture case did not run")
        wanted = [f"{p['name']}:{p['architecture']}={p['target']}" for p in self.plan]
        for _ in range(self.runs):
            run_dir = self.fresh("floor")
            options = apt_options(run_dir, self.proxy.url)
            self.proxy.counter.take()
            update = run_measured(["apt-get", *options, "update"], run_dir / "update.log")
            update_bytes, _r, _u = self.proxy.counter.take()
            if update.returncode != 0:
                raise RuntimeError(f"apt-get update failed: {update.log.read_text()[-1500:]}")
            debs = run_dir / "debs"
            debs.mkdir()
            fetch = run_measured(["apt-get", *options, "download", *wanted],
                                 run_dir / "download.log", cwd=debs)
            fetch_bytes, _r, _u = self.proxy.counter.take()
            if fetch.returncode != 0:
                raise RuntimeError(f"apt-get download failed: {fetch.log.read_text()[-1500:]}")
            run = Run(wall=fetch.wall, cpu=fetch.cpu, rss_mb=fetch.max_rss_kb / 1024,
                      downloaded=fetch_bytes)
            run.extra.update(update_wall=update.wall, update_bytes=update_bytes,
                             total_wall=update.wall + fetch.wall)
            case.runs.append(run)
        self.payload = payload_sizes(sorted(debs.glob("*.deb")))
        case.notes.append(
            "Host apt with private lists, cache and sources (a copy of the host's sources file), "
            "through the proxy. Timed: `apt-get download` of exactly the planned name:arch=version "
            f"list ({len(wanted)} packages). `apt-get update` before it, cold, took "
            f"{spread([r.extra['update_wall'] for r in case.runs]).format(' s')} and "
            f"{case.runs[-1].extra['update_bytes'] / 1e6:.1f} MB; update + download = "
            f"{spread([r.extra['total_wall'] for r in case.runs]).format(' s')}.")

    # --- case 6: scale --------------------------------------------------------------------

    def multiplatform(self, case: Case) -> None:
        source = self.cache.layout("multiplatform-bookworm")
        for _ in range(max(1, self.runs // 2)):
            run_dir = self.fresh("multi")
            dest = run_dir / "out"
            command = self.suture("-i", f"oci:{source}:latest", "--dest", f"oci:{dest}:patched",
                                  "--summary", str(run_dir / "summary.json"))
            measured, downloaded = self.measure_suture(command, run_dir / "cache",
                                                       run_dir / "suture.log")
            document = json.loads((run_dir / "summary.json").read_text())
            run = Run(wall=measured.wall, cpu=measured.cpu, rss_mb=measured.max_rss_kb / 1024,
                      downloaded=downloaded)
            run.extra["platforms"] = [
                f"{p['platform']}: {p['status']}, "
                f"{sum(1 for k in p['packages'] if k['status'] == 'updated')} updated"
                for p in document["platforms"]]
            case.runs.append(run)
        case.notes.append("Cold cache. Platforms: " + "; ".join(case.runs[-1].extra["platforms"])
                          + ". suture patches the platforms of one index concurrently (threads).")

    def batch_run(self, case: Case, jobs: int) -> None:
        source = self.cache.layout("debian-bookworm")
        run_dir = self.fresh(f"batch-j{jobs}")
        cache = run_dir / "cache"
        env = {**os.environ, "XDG_CACHE_HOME": str(cache)}
        results: list[Measured] = []
        lock = threading.Lock()
        queue = list(range(self.batch))

        def worker() -> None:
            while True:
                with lock:
                    if not queue:
                        return
                    item = queue.pop(0)
                dest = run_dir / f"out-{item}"
                command = self.suture("-i", f"oci:{source}:latest", "--dest",
                                      f"oci:{dest}:patched-{item}", "-q")
                measured = run_measured(command, run_dir / f"suture-{item}.log", env=env)
                with lock:
                    results.append(measured)

        self.proxy.counter.take()
        started = time.monotonic()
        threads = [threading.Thread(target=worker) for _ in range(jobs)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        wall = time.monotonic() - started
        downloaded, _r, _u = self.proxy.counter.take()
        failed = [m for m in results if m.returncode != 0]
        if failed:
            raise RuntimeError(f"{len(failed)} of {self.batch} batch runs failed; first log: "
                               f"{failed[0].log.read_text(errors='replace')[-1000:]}")
        run = Run(wall=wall, cpu=sum(m.cpu for m in results),
                  rss_mb=max(m.max_rss_kb for m in results) / 1024, downloaded=downloaded)
        run.extra["per_image"] = [round(m.wall, 2) for m in results]
        case.runs.append(run)
        case.notes.append(
            f"{self.batch} patches of the bookworm image into {self.batch} layouts, {jobs} "
            f"process(es) at a time, one shared cache that starts cold. suture has no batch "
            f"mode of its own: one invocation patches one image (the platforms of an index run "
            f"in threads), so batch concurrency here is separate processes. Per-image wall "
            f"times: {', '.join(f'{w:.1f}' for w in run.extra['per_image'])} s. CPU is the sum "
            f"over the processes; RSS the largest single process.")

    # --- profiles -------------------------------------------------------------------------

    def profile_runs(self) -> None:
        if not PY_SPY.exists():
            self.profiles["note"] = "py-spy is not installed in the venv; no profile taken."
            return
        source = self.cache.layout("debian-bookworm")
        cold_cache = self.fresh("profile-cache") / "cache"
        for label, cache in (("cold", cold_cache), ("warm", cold_cache)):
            run_dir = self.fresh(f"profile-{label}")
            folded = run_dir / "profile.folded"
            command = [str(PY_SPY), "record", "--idle", "--rate", str(PROFILE_HZ), "--format",
                       "raw", "--output", str(folded), "--", sys.executable, str(SUTURE),
                       *self.suture("-i", f"oci:{source}:latest", "--dest",
                                    f"oci:{run_dir / 'out'}:patched", "-q")[1:]]
            measured, _downloaded = self.measure_suture(command, cache, run_dir / "py-spy.log")
            summary = pyspy.summarize(folded)
            self.profiles[label] = (f"Wall under py-spy: {measured.wall:.1f} s.\n\n"
                                    + pyspy.markdown(summary, PROFILE_HZ))
            shutil.copyfile(folded, ROOT / "bench" / f"profile-{label}.folded")


def load_now() -> str:
    """Return the load average and CPU pressure: other work on the machine skews wall times."""
    load = Path("/proc/loadavg").read_text().split()[0]
    pressure = "n/a"
    psi = Path("/proc/pressure/cpu")
    if psi.exists():
        pressure = psi.read_text().split()[1].split("=")[1] + "%"
    return f"load {load}, CPU pressure {pressure}"


# --- measurement helpers -----------------------------------------------------------------


def suture_run(measured: Measured, downloaded: int, layout: Path, ref: str) -> Run:
    descriptor = patch_layer(layout, ref)
    raw = uncompressed_size(layout / "blobs" / "sha256" / descriptor["digest"].split(":")[1],
                            descriptor["mediaType"])
    run = Run(wall=measured.wall, cpu=measured.cpu, rss_mb=measured.max_rss_kb / 1024,
              downloaded=downloaded, layer=int(descriptor["size"]), layer_raw=raw)
    run.extra["layer_digest"] = descriptor["digest"]
    return run


def read_json_blob(layout: Path, digest: str) -> Any:
    return json.loads((layout / "blobs" / "sha256" / digest.split(":")[1]).read_bytes())


def manifest_of(layout: Path, ref: str) -> Any:
    index = json.loads((layout / "index.json").read_text())
    for entry in index["manifests"]:
        if entry.get("annotations", {}).get("org.opencontainers.image.ref.name") == ref:
            return read_json_blob(layout, entry["digest"])
    raise RuntimeError(f"{layout}: no ref {ref}")


def patch_layer(layout: Path, ref: str) -> Any:
    manifest = manifest_of(layout, ref)
    if "layers" not in manifest:
        manifest = read_json_blob(layout, manifest["manifests"][0]["digest"])
    return manifest["layers"][-1]


def layer_digests(layout: Path, ref: str) -> list[str]:
    manifest = manifest_of(layout, ref)
    manifests = [manifest] if "layers" in manifest else [
        read_json_blob(layout, m["digest"]) for m in manifest["manifests"]]
    return [layer["digest"] for m in manifests for layer in m["layers"]]


def uncompressed_size(path: Path, media_type: str) -> int:
    """Return the size of a layer blob's tar stream (gzip, zstd or uncompressed)."""
    if media_type.endswith("+zstd"):
        with subprocess.Popen(["zstd", "-dc", str(path)], stdout=subprocess.PIPE) as process:
            assert process.stdout is not None
            total = 0
            while chunk := process.stdout.read(1 << 20):
                total += len(chunk)
        return total
    if not media_type.endswith("+gzip"):
        return path.stat().st_size
    decompressor = zlib.decompressobj(wbits=31)
    total = 0
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            total += len(decompressor.decompress(chunk))
    return total + len(decompressor.flush())


def updated_packages(document: Any) -> list[dict[str, str]]:
    return [
        {"name": p["name"], "architecture": p["architecture"], "target": p["target"]}
        for platform_result in document["platforms"]
        for p in platform_result["packages"]
        if p["status"] == "updated"
    ]


def registry_blobs(registry: Registry) -> dict[str, int]:
    base = registry.storage / "docker" / "registry" / "v2" / "blobs" / "sha256"
    if not base.exists():
        return {}
    return {f"sha256:{data.parent.name}": data.stat().st_size for data in base.glob("*/*/data")}


def parse_access(lines: Sequence[str]) -> list[tuple[str, str, int, int]]:
    parsed = []
    for line in lines:
        match = re.search(r'"([A-Z]+) (\S+) HTTP/[\d.]+" (\d{3}) (\d+|-)', line)
        if match:
            size = 0 if match.group(4) == "-" else int(match.group(4))
            parsed.append((match.group(1), match.group(2), int(match.group(3)), size))
    return parsed


def registry_patch_layer(registry: Registry, manifest_digest: str) -> int:
    base = registry.storage / "docker" / "registry" / "v2" / "blobs" / "sha256"

    def blob(digest: str) -> Any:
        hexdigest = digest.split(":")[1]
        return json.loads((base / hexdigest[:2] / hexdigest / "data").read_bytes())

    manifest = blob(manifest_digest)
    if "layers" not in manifest:
        manifest = blob(manifest["manifests"][0]["digest"])
    return int(manifest["layers"][-1]["size"])


APT_LEFTOVERS = ("var/lib/apt/lists/", "var/cache/apt/")


def saved_top_layer(daemon: DockerDaemon, tag: str, scratch: Path) -> tuple[int, int, int]:
    """Return the uncompressed size, gzip -6 size and apt list and cache bytes of the top layer.

    The layer comes from `docker save`. The apt bytes are the file sizes under
    /var/lib/apt/lists and /var/cache/apt, which a Dockerfile could delete in the same RUN.
    """
    archive = scratch / "image.tar"
    daemon.run("save", "-o", str(archive), tag, timeout=600)
    subprocess.run(["tar", "-xf", str(archive), "-C", str(scratch)], check=True)
    manifest = json.loads((scratch / "manifest.json").read_text())
    top = scratch / manifest[0]["Layers"][-1]
    with top.open("rb") as source:
        gzip = subprocess.run(["gzip", "-6", "-c"], stdin=source, capture_output=True, check=True)
    leftovers = 0
    with tarfile.open(top) as layer:
        for member in layer:
            if member.isfile() and member.name.lstrip("./").startswith(APT_LEFTOVERS):
                leftovers += member.size
    size = top.stat().st_size
    shutil.rmtree(scratch, ignore_errors=True)
    return size, len(gzip.stdout), leftovers


def apt_options(directory: Path, proxy: str) -> list[str]:
    lists, cache, parts = directory / "lists", directory / "cache", directory / "sources.d"
    (lists / "partial").mkdir(parents=True)
    (cache / "archives" / "partial").mkdir(parents=True)
    parts.mkdir()
    shutil.copyfile(SOURCES_FILE, parts / SOURCES_FILE.name)
    return [
        "-q", "-o", f"Dir::State::Lists={lists}", "-o", f"Dir::Cache={cache}",
        "-o", "Dir::Etc::SourceList=/dev/null", "-o", f"Dir::Etc::SourceParts={parts}",
        "-o", f"Acquire::http::Proxy={proxy}", "-o", "Debug::NoLocking=1",
        "-o", "APT::Sandbox::User=root",
    ]


def payload_sizes(debs: Sequence[Path]) -> dict[str, int]:
    """Sum the .deb sizes, their Installed-Size (KiB) and their uncompressed data.tar sizes."""
    deb_bytes = installed = data_tar = 0
    for deb in debs:
        deb_bytes += deb.stat().st_size
        field_text = subprocess.run(["dpkg-deb", "-f", str(deb), "Installed-Size"],
                                    capture_output=True, text=True, check=True).stdout
        installed += int(field_text.strip() or 0) * 1024
        with subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)],
                              stdout=subprocess.PIPE) as process:
            assert process.stdout is not None
            while chunk := process.stdout.read(1 << 20):
                data_tar += len(chunk)
    return {"debs": len(debs), "deb_bytes": deb_bytes, "installed_size": installed,
            "data_tar": data_tar}


# --- report ------------------------------------------------------------------------------


def machine() -> dict[str, str]:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    memory = "unknown"
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            memory = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "src"],
                           capture_output=True, text=True).stdout.strip()
    os_name = "unknown"
    for line in Path("/etc/os-release").read_text().splitlines():
        if line.startswith("PRETTY_NAME="):
            os_name = line.split("=", 1)[1].strip('"')
    return {
        "cpus": str(os.cpu_count()),
        "cpu": cpu,
        "memory": memory,
        "kernel": platform.release(),
        "os": os_name,
        "python": platform.python_version(),
        "commit": commit + (" (src/ has uncommitted changes)" if dirty else ""),
    }


def mb(value: float | None) -> str:
    return "n/a" if value is None else f"{value / 1e6:.2f} MB"


def column(runs: Sequence[Run], name: str, unit: str, scale: float = 1.0, digits: int = 1) -> str:
    values = [getattr(run, name) for run in runs if getattr(run, name) is not None]
    return spread(values).format(unit, scale, digits)


def median(case: Case | None, name: str) -> float | None:
    if case is None or case.error:
        return None
    values = [getattr(run, name) for run in case.runs if getattr(run, name) is not None]
    return spread(values).median if values else None


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("met" if ok else "**missed**")


def write_report(bench: Bench, path: Path, command: str, started: float) -> None:
    info = machine()
    cases = bench.cases
    lines = [
        "# suture benchmark results",
        "",
        f"Produced by `{command}` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(started))} "
        f"in {(time.monotonic() - bench.t0) / 60:.1f} minutes.",
        "",
        f"- Machine: {info['cpus']} CPUs ({info['cpu']}), {info['memory']} memory, "
        f"{info['os']}, kernel {info['kernel']}, Python {info['python']}",
        f"- Commit: {info['commit']}",
        f"- Runs per case: {bench.runs} (scale cases: see notes). Figures are `median "
        "(min-max)`.",
        "- Package traffic of every case goes through one counting HTTP proxy on 127.0.0.1 in "
        "front of the host's Debian mirror, so downloaded bytes are measured the same way for "
        "suture and apt.",
        "- Each measured command runs under GNU time: peak RSS is its `%M` (MiB, shown as MB), "
        "the largest peak of one process in the command's tree. CPU is user + system time of "
        "that tree.",
        "",
        "| case | runs | wall | CPU (user+sys) | peak RSS | downloaded | uploaded "
        "| patch / RUN layer (gzip) | layer (uncompressed) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for case in cases.values():
        if case.error:
            lines.append(f"| {case.title} | failed | | | | | | | |")
            continue
        lines.append(
            f"| {case.title} | {len(case.runs)} | {column(case.runs, 'wall', ' s')} "
            f"| {column(case.runs, 'cpu', ' s')} | {column(case.runs, 'rss_mb', ' MB', digits=0)} "
            f"| {column(case.runs, 'downloaded', ' MB', 1e6, 2)} "
            f"| {column(case.runs, 'uploaded', ' MB', 1e6, 2)} "
            f"| {column(case.runs, 'layer', ' MB', 1e6, 2)} "
            f"| {column(case.runs, 'layer_raw', ' MB', 1e6, 1)} |")
    lines.append("")

    cold, warm = cases.get("cold"), cases.get("warm")
    rebuild, floor = cases.get("rebuild"), cases.get("floor")
    suture_wall = median(cold, "wall")
    rebuild_wall = median(rebuild, "wall")
    floor_wall = median(floor, "wall")
    warm_wall = median(warm, "wall")
    rss = max((median(c, "rss_mb") or 0) for c in (cold, warm, cases.get("registry")))
    layer = median(cold, "layer")
    layer_raw = median(cold, "layer_raw")
    rebuild_layer = rebuild.runs[-1].layer if rebuild and not rebuild.error else None
    rebuild_raw = rebuild.runs[-1].layer_raw if rebuild and not rebuild.error else None
    payload = bench.payload

    def ratio(a: float | None, b: float | None) -> str:
        return "n/a" if a is None or not b else f"{a / b:.2f}"

    def row(measure: str, value: str, target: str, ok: bool | None) -> None:
        lines.append(f"| {measure} | {value} | {target} | {verdict(ok)} |")

    def known(*values: float | None) -> bool:
        return all(value is not None and value > 0 for value in values)

    suture_cpu, warm_cpu = median(cold, "cpu"), median(warm, "cpu")
    lines += ["## Ratios and targets", "",
              "| measure | value | target | verdict |", "| --- | ---: | --- | --- |"]
    row("suture cold / rebuild (wall)", ratio(suture_wall, rebuild_wall), "<= 0.5",
        suture_wall <= 0.5 * rebuild_wall if suture_wall and rebuild_wall else None)
    if suture_wall and floor_wall:
        bound = 1.5 * floor_wall + 2
        row("suture cold vs download floor (wall)",
            f"{ratio(suture_wall, floor_wall)} x ({suture_wall:.1f} s; bound 1.5 x "
            f"{floor_wall:.1f} s + 2 s = {bound:.1f} s)", "<= 1.5 x floor + 2 s",
            suture_wall <= bound)
        if suture_cpu:
            row("suture cold CPU time vs the same bound (wall can not beat CPU on one core)",
                f"{suture_cpu:.1f} s", f"<= {bound:.1f} s", suture_cpu <= bound)
    if floor and not floor.error and suture_wall:
        total = spread([r.extra["total_wall"] for r in floor.runs]).median
        row("suture cold / (apt-get update + apt-get download)", ratio(suture_wall, total),
            "(context)", None)
    if warm_wall:
        row("warm-cache run (wall)", f"{warm_wall:.1f} s", "<= 2 s", warm_wall <= 2.0)
    if warm_cpu:
        row("warm-cache run (CPU)", f"{warm_cpu:.1f} s", "<= 2 s", warm_cpu <= 2.0)
    row("peak RSS (largest median of cases 1, 2, 5)", f"{rss:.0f} MB",
        f"<= {RSS_TARGET_MB:.0f} MB", rss <= RSS_TARGET_MB if rss else None)
    row("patch layer / rebuild RUN layer (gzip)",
        f"{ratio(layer, rebuild_layer)} ({mb(layer)} vs {mb(rebuild_layer)})", "far below 1",
        layer < 0.5 * rebuild_layer if layer and rebuild_layer else None)
    row("patch layer / rebuild RUN layer (uncompressed)",
        f"{ratio(layer_raw, rebuild_raw)} ({mb(layer_raw)} vs {mb(rebuild_raw)})", "(context)",
        None)
    if payload and known(layer, layer_raw):
        assert layer is not None and layer_raw is not None
        for label, value, size in (
            ("patch layer (gzip) / the updated .deb files", layer, payload["deb_bytes"]),
            ("patch layer (uncompressed) / their data.tar", layer_raw, payload["data_tar"]),
            ("patch layer (uncompressed) / their Installed-Size", layer_raw,
             payload["installed_size"]),
        ):
            row(label, f"{ratio(value, size)} ({mb(value)} vs {mb(size)})", "<= 1.2",
                value <= 1.2 * size)
    lines.append("")

    lines += ["## Notes per case", ""]
    for case in cases.values():
        text = f"failed: `{case.error}`" if case.error else " ".join(case.notes)
        lines.append(f"- **{case.title}**: {text} Machine load at start / end: "
                     f"{' / '.join(case.load)}.")
    if bench.plan:
        lines += ["", "Packages in the plan: " + ", ".join(
            f"{p['name']}:{p['architecture']} {p['target']}" for p in bench.plan) + "."]
    lines.append("")
    lines += ["## Profiles (py-spy, one extra run each, not in the table)", ""]
    for label in ("cold", "warm"):
        if label in bench.profiles:
            lines += [f"### {label} cache", "", bench.profiles[label], ""]
    if "note" in bench.profiles:
        lines += [bench.profiles["note"], ""]
    # The analysis below the marker is written by hand from an earlier run, so keep it.
    kept = ""
    if path.exists():
        previous = path.read_text(encoding="utf-8")
        if ANALYSIS_MARKER in previous:
            kept = previous.split(ANALYSIS_MARKER, 1)[1]
    lines.append(ANALYSIS_MARKER)
    path.write_text("\n".join(lines) + (kept or "\n"), encoding="utf-8")
    data = {"machine": info, "command": command, "plan": bench.plan, "payload": payload,
            "cases": {k: {**asdict(c)} for k, c in cases.items()}}
    path.with_name("results.json").write_text(json.dumps(data, indent=2, default=str))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="runs per case (default 3)")
    parser.add_argument("--batch", type=int, default=10, help="images in the batch case")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 2,
                        help="concurrent suture processes in the batch case (default: CPUs)")
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "RESULTS.md")
    parser.add_argument("--keep", action="store_true", help="keep the scratch directory")
    parser.add_argument("--only", default="", help="comma-separated case keys to run")
    args = parser.parse_args(argv)
    require_gnu_time()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    started = time.time()
    work = Path(tempfile.mkdtemp(prefix="suture-bench-"))
    bench = Bench(work, args.runs, args.batch, args.jobs)
    only = set(filter(None, args.only.split(",")))
    plan = [
        ("cold", "1. suture, OCI layout → OCI layout, cold", bench.suture_oci),
        ("registry", "2. suture, registry → registry (TLS, --push), cold", bench.suture_registry),
        ("rebuild", "3. rebuild: docker build, apt-get update && upgrade", bench.rebuild),
        ("floor", "4. download floor: apt-get download of the planned .debs",
         bench.download_floor),
        ("warm", "5. suture, OCI → OCI, warm caches", bench.suture_warm),
        ("warm-zstd", "5b. the same with --compression zstd",
         lambda case: bench.suture_warm(case, "zstd")),
        ("multi", "6a. suture, 2-platform index, cold", bench.multiplatform),
        ("batch-seq", f"6b. batch of {args.batch}, sequential",
         lambda case: bench.batch_run(case, 1)),
        ("batch-par", f"6c. batch of {args.batch}, {args.jobs} processes at a time",
         lambda case: bench.batch_run(case, args.jobs)),
    ]
    try:
        for key, title, body in plan:
            if not only or key in only:
                bench.case(key, title, body)
        if not only or "profile" in only:
            logger.info("profiling one cold and one warm run")
            bench.profile_runs()
        command = "python -m bench.run " + shlex.join(argv if argv is not None else sys.argv[1:])
        write_report(bench, args.output, command.strip(), started)
        logger.info("wrote %s", args.output)
    finally:
        bench.proxy.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
