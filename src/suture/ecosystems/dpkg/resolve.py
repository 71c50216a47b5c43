"""Planning: target versions for findings or update-all, then the dependency closure.

The rules mirror apt without running it:
- the candidate of a package is the newest version for its architecture in the image's suites.
  `Architecture: all` versions come from the same `binary-<arch>` index. Suites marked
  `NotAutomatic` (backports) count only for packages installed from them;
- every upgraded package's `Pre-Depends` and `Depends` must be met by the final set of
  installed and upgraded packages. An installed dependency that is too old is upgraded
  ("required by X"), and for findings a missing one is added ("new dependency of X");
- installed packages that the upgrades would break, such as binaries of one source that depend
  on each other with `(= version)`, move together, as do `Multi-Arch: same` instances;
- `Breaks` and `Conflicts` are checked between changed packages and the final set;
- update-all behaves like `apt-get upgrade`: a package whose upgrade would need a new package,
  or would break one that cannot move, is kept back.

A package that cannot be planned is dropped from the set and the closure is computed again
without it, so the result never depends on the order of the requests.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from suture.ecosystems.base import Finding, PackageStatus, PlannedPackage
from suture.ecosystems.dpkg.database import DpkgDatabase, InstalledPackage
from suture.ecosystems.dpkg.index import Candidate, PackagesIndex, Relation, parse_relations
from suture.ecosystems.dpkg.version import compare_versions, is_valid_version, version_key

logger = logging.getLogger(__name__)


class CandidatePool:
    """The package versions available to an image, by architecture."""

    def __init__(self, indexes: Mapping[str, Sequence[PackagesIndex]], native: str) -> None:
        self.indexes = indexes
        self.native = native

    def _arch(self, architecture: str) -> str:
        return self.native if architecture in ("all", "") else architecture

    def versions(self, name: str, architecture: str) -> list[Candidate]:
        """Every version of `name` usable on `architecture`, newest first."""
        found = [
            candidate
            for index in self.indexes.get(self._arch(architecture), ())
            for candidate in index.candidates(name)
            if candidate.architecture in (self._arch(architecture), "all")
        ]
        return sorted(found, key=lambda c: version_key(c.version), reverse=True)

    def candidate(self, name: str, architecture: str, installed: str = "") -> Candidate | None:
        """The version apt would pick for `name`: the newest from automatic suites.

        NOTE: apt pin priorities from /etc/apt/preferences are not read, and Ubuntu's
        `Phased-Update-Percentage` is not applied, so the plan may include an update that apt
        2.1.16 or later would defer on a machine outside the rollout phase.
        """
        versions = self.versions(name, architecture)
        automatic = [c for c in versions if not c.not_automatic]
        from_installed_suite = installed and any(
            c.not_automatic and c.version == installed for c in versions
        )
        if from_installed_suite or not automatic:
            upgrades = [c for c in versions if not c.not_automatic or from_installed_suite]
            return upgrades[0] if upgrades else None
        return automatic[0]

    def providers(self, name: str, architecture: str) -> list[Candidate]:
        names = {
            provider
            for index in self.indexes.get(self._arch(architecture), ())
            for provider in index.providers(name)
        }
        found: list[Candidate] = []
        for provider in sorted(names):
            candidate = self.candidate(provider, architecture)
            if candidate is not None:
                found.append(candidate)
        return found


@dataclass(frozen=True)
class Node:
    """A package in the final set, installed or planned."""

    name: str
    architecture: str
    version: str
    multi_arch: str
    source: str
    dependencies: tuple[tuple[Relation, ...], ...]
    provided: tuple[Relation, ...]
    negative: tuple[tuple[str, Relation], ...]
    candidate: Candidate | None = None

    @property
    def key(self) -> str:
        return f"{self.name}:{self.architecture}"


def node_from_installed(package: InstalledPackage) -> Node:
    fields = package.fields
    return Node(
        name=package.name,
        architecture=package.architecture,
        version=package.version,
        multi_arch=package.multi_arch,
        source=package.source,
        dependencies=parse_relations(fields.get("Pre-Depends", ""))
        + parse_relations(fields.get("Depends", "")),
        provided=tuple(g[0] for g in parse_relations(fields.get("Provides", ""))),
        negative=tuple(("Breaks", g[0]) for g in parse_relations(fields.get("Breaks", "")))
        + tuple(("Conflicts", g[0]) for g in parse_relations(fields.get("Conflicts", ""))),
    )


def node_from_candidate(candidate: Candidate, architecture: str) -> Node:
    return Node(
        name=candidate.name,
        architecture=architecture,
        version=candidate.version,
        multi_arch=candidate.multi_arch,
        source=candidate.source,
        dependencies=candidate.dependencies,
        provided=candidate.provided,
        negative=candidate.negative,
        candidate=candidate,
    )


@dataclass
class _Change:
    candidate: Candidate
    reason: str
    new: bool = False


@dataclass
class _State:
    """The final set of one closure attempt: installed nodes replaced by planned ones."""

    native: str
    nodes: dict[str, Node] = field(default_factory=dict)
    by_name: dict[str, list[Node]] = field(default_factory=lambda: defaultdict(list))
    by_provided: dict[str, list[tuple[Node, Relation]]] = field(
        default_factory=lambda: defaultdict(list)
    )

    def put(self, node: Node) -> None:
        old = self.nodes.get(node.key)
        if old is not None:
            self.by_name[old.name].remove(old)
            for relation in old.provided:
                self.by_provided[relation.name].remove((old, relation))
        self.nodes[node.key] = node
        self.by_name[node.name].append(node)
        for relation in node.provided:
            self.by_provided[relation.name].append((node, relation))

    def satisfies(self, relation: Relation, dependent: Node) -> Node | None:
        """Return a node meeting `relation` for `dependent`, or None."""
        wanted = self.native if dependent.architecture == "all" else dependent.architecture
        for node in self.by_name.get(relation.name, ()):
            if _arch_matches(relation, node, wanted, self.native) and relation.accepts(
                node.version
            ):
                return node
        for node, provided in self.by_provided.get(relation.name, ()):
            if not _arch_matches(relation, node, wanted, self.native):
                continue
            if not relation.op:
                return node
            if provided.op == "=" and relation.accepts(provided.version):
                return node
        return None

    def group_holds(self, group: tuple[Relation, ...], dependent: Node) -> bool:
        return any(self.satisfies(relation, dependent) is not None for relation in group)


def _arch_matches(relation: Relation, node: Node, wanted: str, native: str) -> bool:
    node_arch = native if node.architecture == "all" else node.architecture
    if relation.archqual == "any":
        return node.multi_arch in ("allowed", "foreign") or node_arch == wanted
    if relation.archqual and relation.archqual != "native":
        return node_arch == relation.archqual
    return node_arch == wanted or node.multi_arch == "foreign" or node.architecture == "all"


def _group_text(group: tuple[Relation, ...]) -> str:
    return " | ".join(str(relation) for relation in group)


@dataclass(frozen=True)
class Request:
    """A requested upgrade, with the fixed version and vulnerability ids from the findings."""

    package: InstalledPackage
    candidate: Candidate
    fixed: str = ""
    vulnerabilities: tuple[str, ...] = ()


class _Failure(Exception):
    def __init__(self, key: str, reason: str) -> None:
        super().__init__(reason)
        self.key = key
        self.reason = reason


def close_dependencies(
    database: DpkgDatabase,
    pool: CandidatePool,
    requests: Sequence[Request],
    *,
    allow_new: bool,
) -> tuple[dict[str, _Change], dict[str, str]]:
    """Compute the changes that satisfy every relation, dropping requests that cannot be met.

    Returns the changes by `name:arch` key and the dropped requests with their reasons.
    """
    dropped: dict[str, str] = {}
    for _attempt in range(len(requests) + 1):
        active = [r for r in requests if r.package.key not in dropped]
        try:
            return _closure(database, pool, active, allow_new=allow_new), dropped
        except _Failure as failure:
            requested = {r.package.key for r in active}
            key = failure.key if failure.key in requested else next(iter(requested))
            dropped[key] = failure.reason
            logger.debug("dropped %s from the plan: %s", key, failure.reason)
    raise AssertionError("the closure loop is bounded by the number of requests")


def _closure(
    database: DpkgDatabase,
    pool: CandidatePool,
    requests: Sequence[Request],
    *,
    allow_new: bool,
) -> dict[str, _Change]:
    closure = _Closure(database, pool, allow_new)
    for request in requests:
        package = request.package
        closure.change(package.key, request.candidate, package.architecture, "", package.key)
    closure.run()
    _check_negative(closure.state, closure.changes, closure.origin)
    return closure.changes


class _Closure:
    """One attempt at the dependency closure of a set of requests."""

    def __init__(self, database: DpkgDatabase, pool: CandidatePool, allow_new: bool) -> None:
        self.database = database
        self.pool = pool
        self.allow_new = allow_new
        self.state = _State(native=database.native_architecture)
        self.original = _State(native=database.native_architecture)
        for package in database.installed:
            self.state.put(node_from_installed(package))
            self.original.put(node_from_installed(package))
        self.changes: dict[str, _Change] = {}
        self.origin: dict[str, str] = {}  # change key -> the requested key that caused it
        self.work: list[str] = []

    def change(
        self, key: str, candidate: Candidate, architecture: str, reason: str, root: str
    ) -> None:
        new = key not in self.state.nodes
        self.changes[key] = _Change(candidate, reason, new=new)
        self.origin[key] = root
        self.state.put(node_from_candidate(candidate, architecture))
        self.work.append(key)

    def run(self) -> None:
        # Each round adds at least one change, so the number of packages bounds the rounds.
        for _round in range(len(self.state.nodes) + 1000):
            while self.work:
                key = self.work.pop()
                node = self.state.nodes[key]
                self.satisfy(node, self.origin[key])
                self.move_multi_arch_same(node, self.origin[key])
            if not self.fix_broken_dependents():
                return

    def satisfy(self, node: Node, root: str) -> None:
        for group in node.dependencies:
            if self.state.group_holds(group, node):
                continue
            if self.was_unsatisfied(node, group):
                continue
            if self.upgrade_for(node, group, root):
                continue
            if self.allow_new and self.add_for(node, group, root):
                continue
            if self.allow_new:
                raise _Failure(
                    root,
                    f"{node.name} {node.version} depends on {_group_text(group)}, which no "
                    "installed or available package satisfies",
                )
            raise _Failure(
                root,
                f"{node.name} {node.version} depends on {_group_text(group)}, which needs a new "
                "package (apt-get upgrade does not install new packages)",
            )

    def was_unsatisfied(self, node: Node, group: tuple[Relation, ...]) -> bool:
        """Whether the installed version already lacked this dependency.

        Distroless images leave out dependencies on purpose (ca-certificates without openssl),
        so a dependency the image never satisfied neither blocks an upgrade nor pulls in a
        new package.
        """
        installed = self.original.nodes.get(node.key)
        if installed is None:
            return False
        names = {relation.name for relation in group}
        return any(
            names & {relation.name for relation in old_group}
            and not self.original.group_holds(old_group, installed)
            for old_group in installed.dependencies
        )

    def upgrade_for(self, node: Node, group: tuple[Relation, ...], root: str) -> bool:
        state = self.state
        wanted = state.native if node.architecture == "all" else node.architecture
        for relation in group:
            for installed in list(state.by_name.get(relation.name, ())):
                if installed.key in self.changes:
                    continue
                if not _arch_matches(relation, installed, wanted, state.native):
                    continue
                package = self.database.find(installed.name, installed.architecture)
                if package is None or package.held:
                    continue
                candidate = self.pool.candidate(
                    installed.name, installed.architecture, installed.version
                )
                if candidate is None or not relation.accepts(candidate.version):
                    continue
                if compare_versions(candidate.version, installed.version) <= 0:
                    continue
                reason = f"required by {node.name}"
                self.change(installed.key, candidate, installed.architecture, reason, root)
                return True
        return False

    def add_for(self, node: Node, group: tuple[Relation, ...], root: str) -> bool:
        wanted = self.state.native if node.architecture == "all" else node.architecture
        reason = f"new dependency of {node.name}"
        for relation in group:
            qualifier = relation.archqual
            architecture = qualifier if qualifier not in ("", "any", "native") else wanted
            candidate = self.pool.candidate(relation.name, architecture)
            if candidate is not None and relation.accepts(candidate.version):
                arch = architecture if candidate.architecture != "all" else "all"
                self.change(f"{candidate.name}:{arch}", candidate, arch, reason, root)
                return True
            if relation.op:
                continue
            for provider in self.pool.providers(relation.name, architecture):
                arch = architecture if provider.architecture != "all" else "all"
                self.change(f"{provider.name}:{arch}", provider, arch, reason, root)
                return True
        return False

    def move_multi_arch_same(self, node: Node, root: str) -> None:
        # dpkg requires every instance of a Multi-Arch: same package to have one version.
        if node.multi_arch != "same":
            return
        for other in list(self.state.by_name.get(node.name, ())):
            if other.key == node.key or other.version == node.version or other.key in self.changes:
                continue
            versions = self.pool.versions(other.name, other.architecture)
            match = next((c for c in versions if c.version == node.version), None)
            if match is None:
                raise _Failure(
                    root,
                    f"{other.key} must move to {node.version} with {node.key} (Multi-Arch: "
                    "same), but no repository has that version for its architecture",
                )
            reason = f"required by {node.key} (Multi-Arch: same)"
            self.change(other.key, match, other.architecture, reason, root)

    def fix_broken_dependents(self) -> bool:
        """Upgrade installed packages whose dependencies the changes broke; return whether any."""
        state = self.state
        for node in list(state.nodes.values()):
            if node.key in self.changes:
                continue
            for group in node.dependencies:
                if state.group_holds(group, node):
                    continue
                culprit = self._changed_target(group)
                if culprit is None:
                    # Broken before any change (a damaged image), so no upgrade caused it.
                    continue
                root = self.origin[culprit.key]
                package = self.database.find(node.name, node.architecture)
                candidate = self.pool.candidate(node.name, node.architecture, node.version)
                if (
                    package is None
                    or package.held
                    or candidate is None
                    or compare_versions(candidate.version, node.version) <= 0
                ):
                    raise _Failure(
                        root,
                        f"upgrading {culprit.name} to {culprit.version} breaks "
                        f"{node.name} {node.version}, which depends on {_group_text(group)} and "
                        "cannot be upgraded",
                    )
                same_source = " (same source)" if candidate.source == culprit.source else ""
                reason = f"required by {culprit.name}{same_source}"
                self.change(node.key, candidate, node.architecture, reason, root)
                return True
        return False

    def _changed_target(self, group: tuple[Relation, ...]) -> Node | None:
        for relation in group:
            for node in self.state.by_name.get(relation.name, ()):
                if node.key in self.changes:
                    return node
        return None


def _check_negative(
    state: _State, changes: Mapping[str, _Change], origin: Mapping[str, str]
) -> None:
    """Raise _Failure when a `Breaks` or `Conflicts` applies between the plan and the final set.

    A relation on a virtual package applies to its providers, except the package itself
    (the usual `Provides: x`, `Conflicts: x`, `Replaces: x` pattern).
    """
    for node in state.nodes.values():
        for field_name, relation in node.negative:
            targets = [(other, other.version) for other in state.by_name.get(relation.name, ())]
            targets += [
                (other, provided.version if provided.op == "=" else "")
                for other, provided in state.by_provided.get(relation.name, ())
            ]
            for other, version in targets:
                if other.name == node.name:
                    continue
                if node.key not in changes and other.key not in changes:
                    continue
                if relation.op and (not version or not relation.accepts(version)):
                    continue
                changed = node if node.key in changes else other
                raise _Failure(
                    origin[changed.key],
                    f"{node.name} {node.version} {field_name} {relation}, and the plan has "
                    f"{other.name} {other.version}",
                )


def requests_for_findings(
    database: DpkgDatabase, pool: CandidatePool, findings: Sequence[Finding]
) -> tuple[list[Request], list[PlannedPackage]]:
    """Turn findings into upgrade requests and final statuses for packages that need none."""
    grouped: dict[tuple[str, str], list[Finding]] = defaultdict(list)
    for finding in findings:
        grouped[(finding.package, finding.architecture)].append(finding)

    requests: list[Request] = []
    settled: list[PlannedPackage] = []
    for (name, architecture), group in sorted(grouped.items()):
        vulnerabilities = tuple(sorted({f.vulnerability_id for f in group if f.vulnerability_id}))
        installed = [
            p
            for p in database.installed
            if p.name == name and (not architecture or p.architecture == architecture)
        ]
        if not installed:
            fixed, _ = required_fixed_version(group, group[0].installed_version)
            settled.append(
                PlannedPackage(
                    name,
                    architecture,
                    group[0].installed_version,
                    fixed,
                    "",
                    PackageStatus.NOT_INSTALLED,
                    vulnerabilities,
                    "the report names a package the image does not have installed",
                )
            )
            continue
        for package in installed:
            fixed, invalid = required_fixed_version(group, package.version)
            if invalid:
                settled.append(
                    PlannedPackage(
                        package.name,
                        package.architecture,
                        package.version,
                        "",
                        "",
                        PackageStatus.FAILED,
                        vulnerabilities,
                        f"the report lists an invalid fixed version {invalid!r}",
                    )
                )
                continue
            planned = _plan_one(pool, package, fixed, vulnerabilities)
            if isinstance(planned, Request):
                requests.append(planned)
            else:
                settled.append(planned)
    return requests, settled


def required_fixed_version(findings: Sequence[Finding], installed: str) -> tuple[str, str]:
    """Return the version that fixes every finding, and the first invalid fixed version.

    A finding may list several fixed versions separated by commas, one per release branch.
    Any of them fixes it, so the lowest one above the installed version counts. Across
    findings the highest such version rules. Returns ("", "") when no finding has a fix.
    """
    required: list[str] = []
    for finding in findings:
        listed = [v.strip() for v in finding.fixed_version.split(",") if v.strip()]
        for version in listed:
            if not is_valid_version(version):
                return "", version
        if not listed:
            continue
        above = [v for v in listed if installed and _is_above(v, installed)]
        required.append(min(above, key=version_key) if above else min(listed, key=version_key))
    if not required:
        return "", ""
    return max(required, key=version_key), ""


def _is_above(version: str, installed: str) -> bool:
    return is_valid_version(installed) and compare_versions(version, installed) > 0


def _plan_one(
    pool: CandidatePool, package: InstalledPackage, fixed: str, vulnerabilities: tuple[str, ...]
) -> Request | PlannedPackage:
    def settle(status: PackageStatus, reason: str = "") -> PlannedPackage:
        return PlannedPackage(
            package.name,
            package.architecture,
            package.version,
            fixed,
            "",
            status,
            vulnerabilities,
            reason,
        )

    if fixed and compare_versions(package.version, fixed) >= 0:
        return settle(PackageStatus.UP_TO_DATE, f"installed {package.version} is not below {fixed}")
    if package.held:
        return settle(PackageStatus.HELD, "the package is on hold in the dpkg database")
    candidate = pool.candidate(package.name, package.architecture, package.version)
    if not fixed:
        return settle(PackageStatus.UNAVAILABLE, "the report lists no fixed version")
    if candidate is None:
        return settle(
            PackageStatus.UNAVAILABLE,
            f"no repository has {package.name} for {package.architecture}; "
            f"fixed version is {fixed}",
        )
    if compare_versions(candidate.version, fixed) < 0:
        return settle(
            PackageStatus.UNAVAILABLE,
            f"repository has only {candidate.version}; fixed version is {fixed}",
        )
    return Request(package, candidate, fixed, vulnerabilities)


def requests_for_update_all(
    database: DpkgDatabase, pool: CandidatePool
) -> tuple[list[Request], list[PlannedPackage]]:
    """Request every installed package that has a newer candidate, as `apt-get upgrade` does."""
    requests: list[Request] = []
    settled: list[PlannedPackage] = []
    for package in database.installed:
        candidate = pool.candidate(package.name, package.architecture, package.version)
        if candidate is None or compare_versions(candidate.version, package.version) <= 0:
            continue
        if package.held:
            settled.append(
                PlannedPackage(
                    package.name,
                    package.architecture,
                    package.version,
                    "",
                    "",
                    PackageStatus.HELD,
                    (),
                    "the package is on hold in the dpkg database",
                )
            )
            continue
        requests.append(Request(package, candidate))
    return requests, settled


def plan_packages(
    database: DpkgDatabase,
    pool: CandidatePool,
    findings: Sequence[Finding] | None,
) -> tuple[list[PlannedPackage], dict[str, Candidate]]:
    """Plan an image's packages; return them with the candidate to fetch for each update."""
    if findings is None:
        requests, settled = requests_for_update_all(database, pool)
    else:
        requests, settled = requests_for_findings(database, pool, findings)
    changes, dropped = close_dependencies(database, pool, requests, allow_new=findings is not None)

    planned = list(settled)
    by_key = {r.package.key: r for r in requests}
    for key, reason in dropped.items():
        request = by_key[key]
        status = PackageStatus.HELD if findings is None else PackageStatus.FAILED
        if findings is None:
            reason = f"kept back: {reason}"
        planned.append(
            PlannedPackage(
                request.package.name,
                request.package.architecture,
                request.package.version,
                request.fixed,
                "",
                status,
                request.vulnerabilities,
                reason,
            )
        )
    downloads: dict[str, Candidate] = {}
    for key, change in sorted(changes.items()):
        name, _, architecture = key.rpartition(":")
        requested = by_key.get(key)
        installed = database.find(name, architecture)
        planned.append(
            PlannedPackage(
                name=name,
                architecture=architecture,
                installed=installed.version if installed is not None else "",
                fixed=requested.fixed if requested else "",
                target=change.candidate.version,
                status=PackageStatus.UPDATE,
                vulnerabilities=requested.vulnerabilities if requested else (),
                reason=change.reason,
            )
        )
        downloads[key] = change.candidate
    planned.sort(key=lambda p: (p.name, p.architecture))
    return planned, downloads
