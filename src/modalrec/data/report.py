"""Validation report: every problem found while loading, and every row dropped, with a count.

Why: "never silent loss". Loaders do not raise on recoverable problems (a duplicate interaction,
an item with no text); they record them here, and the report is printed by ``modalrec validate``,
stored in the run directory and summarised by ``modalrec fit``. Structural problems (a truncated
line, an unreadable encoding) raise :class:`~modalrec.core.errors.DataError` instead.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

MAX_EXAMPLES = 5


@dataclass
class Issue:
    """One kind of problem in one file, with a count and a few examples (file:line)."""

    kind: str
    file: str
    count: int = 0
    dropped: int = 0
    examples: list[str] = field(default_factory=list)
    severity: str = "warning"  # "warning" (rows kept or dropped with a count) or "info"

    def as_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "file": self.file,
            "count": self.count,
            "dropped": self.dropped,
            "severity": self.severity,
            "examples": list(self.examples),
        }


@dataclass
class ValidationReport:
    """Collects issues and per-file statistics.

    >>> r = ValidationReport()
    >>> r.add("duplicate interaction", "u.data", example="u.data:7 user 1 item 3", dropped=1)
    >>> r.dropped_rows
    1
    >>> r.ok
    False
    """

    issues: dict[tuple[str, str], Issue] = field(default_factory=dict)
    stats: dict[str, dict[str, Any]] = field(default_factory=dict)

    def add(
        self,
        kind: str,
        file: str,
        *,
        example: str | None = None,
        count: int = 1,
        dropped: int = 0,
        severity: str = "warning",
        examples: list[str] | None = None,
    ) -> None:
        key = (kind, file)
        issue = self.issues.get(key)
        if issue is None:
            issue = self.issues[key] = Issue(kind=kind, file=file, severity=severity)
        issue.count += count
        issue.dropped += dropped
        for ex in ([example] if example else []) + (examples or []):
            if len(issue.examples) < MAX_EXAMPLES:
                issue.examples.append(ex)

    def stat(self, file: str, **values: Any) -> None:
        self.stats.setdefault(file, {}).update(values)

    @property
    def dropped_rows(self) -> int:
        return sum(i.dropped for i in self.issues.values())

    @property
    def ok(self) -> bool:
        """True when no warning was recorded (info issues do not count)."""
        return not any(i.severity == "warning" for i in self.issues.values())

    def counts_by_kind(self) -> dict[str, int]:
        c: Counter[str] = Counter()
        for i in self.issues.values():
            c[i.kind] += i.count
        return dict(c)

    def merge(self, other: ValidationReport) -> None:
        for issue in other.issues.values():
            self.add(
                issue.kind,
                issue.file,
                count=issue.count,
                dropped=issue.dropped,
                severity=issue.severity,
                examples=issue.examples,
            )
        for f, s in other.stats.items():
            self.stat(f, **s)

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "dropped_rows": self.dropped_rows,
            "issues": [i.as_dict() for i in self.issues.values()],
            "stats": self.stats,
        }

    def to_markdown(self) -> str:
        lines = ["# Validation report", ""]
        for f, s in self.stats.items():
            lines.append(f"- `{f}`: " + ", ".join(f"{k}={v}" for k, v in s.items()))
        lines.append("")
        if not self.issues:
            lines.append("No problems found.")
        else:
            lines += [
                "| severity | problem | file | count | dropped | examples |",
                "|---|---|---|---|---|---|",
            ]
            for i in self.issues.values():
                ex = "; ".join(i.examples)
                lines.append(f"| {i.severity} | {i.kind} | {i.file} | {i.count} | {i.dropped} | {ex} |")
        lines.append("")
        lines.append(f"Rows dropped in total: {self.dropped_rows}")
        return "\n".join(lines) + "\n"
