"""Accumulate a report's findings: drop repeats, split fixable from unfixable, count skips."""

from __future__ import annotations

from collections import Counter

from suture.ecosystems.base import Finding
from suture.reports._versions import select_fixed_version


class FindingCollector:
    """Collect findings for one OS package type, in report order, without repeats."""

    def __init__(self, package_type: str) -> None:
        self.package_type = package_type
        self._fixable: dict[Finding, None] = {}
        self._unfixable: dict[Finding, None] = {}
        self._ignored: Counter[str] = Counter()
        self._not_affected = 0

    def add(
        self,
        *,
        package: str,
        installed: str,
        fixed_versions: list[str],
        vulnerability_id: str,
        architecture: str = "",
    ) -> None:
        """Record one finding; an empty `fixed_versions` makes it a no-fix finding."""
        fixed = select_fixed_version(fixed_versions, installed, self.package_type)
        finding = Finding(
            package=package,
            installed_version=installed,
            fixed_version=fixed,
            vulnerability_id=vulnerability_id,
            architecture=architecture,
            ecosystem=self.package_type,
        )
        if fixed:
            self._fixable[finding] = None
        else:
            self._unfixable[finding] = None

    def ignore(self, kind: str, count: int = 1) -> None:
        """Count findings of a package kind suture does not patch (language packages)."""
        if count:
            self._ignored[kind] += count

    def skip_not_affected(self) -> None:
        self._not_affected += 1

    @property
    def findings(self) -> tuple[Finding, ...]:
        return tuple(self._fixable)

    @property
    def no_fix(self) -> tuple[Finding, ...]:
        return tuple(self._unfixable)

    def notes(self) -> tuple[str, ...]:
        notes: list[str] = []
        if self._ignored:
            total = sum(self._ignored.values())
            kinds = ", ".join(sorted(self._ignored))
            noun = "finding" if total == 1 else "findings"
            notes.append(f"ignored {total} language-package {noun} ({kinds})")
        if self._unfixable:
            count = len(self._unfixable)
            noun = "finding has" if count == 1 else "findings have"
            notes.append(f"{count} OS package {noun} no fix available")
        if self._not_affected:
            noun = "finding" if self._not_affected == 1 else "findings"
            notes.append(f"skipped {self._not_affected} {noun} marked not affected")
        return tuple(notes)
