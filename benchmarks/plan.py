"""Benchmark plans: ``benchmarks/plans/<section>.toml``, committed before the run that reads it.

Why: a row, grid or seed chosen after test numbers were seen is tuning on test, however honest each run
is. So every benchmark section reads its rows, grids and seeds from a plan file, the results record the
commit of that file, and a row that entered the plan in a later commit (an amendment) or that is not in
the plan at all is marked as such in the results, never silently mixed with planned rows.

Used by ``baselines.py`` and ``multimodal.py`` (the older sections keep their own, equivalent code);
:func:`deadline` by the LLM sections (``llm_tune.py``, ``llm_explain.py``).

    from plan import load_plan
    plan = load_plan("baselines", rows_of=lambda d: [r["label"] for r in d["rows"]])
    plan.data["seeds"], plan.record(), plan.row_status("modalrec bprmf")

A plan with uncommitted edits is refused (``allow_uncommitted=True`` for a dry run, recorded as such).
Cost: a few ``git`` calls (one ``git show`` per commit that touched the plan).
"""

from __future__ import annotations

import subprocess
import tomllib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PLANS = ROOT / "benchmarks" / "plans"

#: How a row relates to its plan (the values shown in results tables).
PLANNED = "planned"
AMENDED = "added by a plan amendment"
UNPLANNED = "not in the plan"


def git(*args: str) -> str:
    """Output of ``git args`` in the repository ('' when git fails: no repository, no commit)."""
    out = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=False)
    return out.stdout.strip() if out.returncode == 0 else ""


@dataclass
class Plan:
    """A parsed plan with its git provenance."""

    name: str
    path: Path
    data: dict[str, Any]
    commit: str  # last commit that changed the plan file ('' if never committed)
    first_commit: str  # the commit that created it
    dirty: bool  # the working copy differs from ``commit``
    row_commits: dict[str, str] = field(default_factory=dict)  # row key -> first commit naming it

    def record(self) -> dict[str, Any]:
        """What every result of this plan stores: the file, its commit, and whether it was edited."""
        return {
            "plan": str(self.path.relative_to(ROOT)),
            "plan_commit": self.commit or None,
            "plan_first_commit": self.first_commit or None,
            "plan_uncommitted_edits": self.dirty,
        }

    def row_status(self, key: str) -> dict[str, Any]:
        """Planned in the plan's first commit, added by a later amendment (which), or not planned."""
        c = self.row_commits.get(key)
        if c is None or c == "uncommitted":
            return {"plan_status": UNPLANNED}
        if c == self.first_commit:
            return {"plan_status": PLANNED, "planned_in": c}
        return {"plan_status": AMENDED, "planned_in": c}


def _history(rel: str) -> list[str]:
    """Commits that touched ``rel``, oldest first (following renames is not needed: plans keep their name)."""
    log = git("log", "--format=%H", "--", rel)
    return list(reversed(log.split())) if log else []


def load_plan(
    name: str,
    *,
    rows_of: Callable[[dict[str, Any]], Iterable[str]] | None = None,
    allow_uncommitted: bool = False,
    plans_dir: Path = PLANS,
) -> Plan:
    """Read ``<plans_dir>/<name>.toml`` and find, for each row key ``rows_of`` yields, its first commit.

    Raises ``SystemExit`` with the reason when the plan is missing, not committed, or has uncommitted
    edits (unless ``allow_uncommitted``): a run must be reproducible from a committed plan.
    """
    path = plans_dir / f"{name}.toml"
    if not path.is_file():
        raise SystemExit(f"no plan {path}: write and commit it before running this section")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise SystemExit(f"{path}: not valid TOML ({e})") from None
    rel = str(path.resolve().relative_to(ROOT))
    commits = _history(rel)
    dirty = bool(git("status", "--porcelain", "--", rel)) or not commits
    if dirty and not allow_uncommitted:
        raise SystemExit(
            f"{rel} has uncommitted edits (or was never committed): commit the plan before the run "
            "(--allow-uncommitted-plan for a dry run, recorded as such)"
        )
    row_commits: dict[str, str] = {}
    if rows_of is not None:
        for c in commits:
            try:
                old = tomllib.loads(git("show", f"{c}:{rel}"))
            except tomllib.TOMLDecodeError:
                continue
            for key in rows_of(old):
                row_commits.setdefault(key, c)
        if dirty:  # rows only in the working copy: not committed, so not planned
            for key in rows_of(data):
                row_commits.setdefault(key, "uncommitted")
    return Plan(
        name=name,
        path=path,
        data=data,
        commit=commits[-1] if commits else "",
        first_commit=commits[0] if commits else "",
        dirty=dirty,
        row_commits=row_commits,
    )


def code_commit() -> str:
    """The checked-out commit, with ``+dirty`` when tracked files under benchmarks/ or src/ differ."""
    head = git("rev-parse", "HEAD")
    dirty = git("status", "--porcelain", "--untracked-files=no", "--", "benchmarks", "src")
    return head + ("+dirty" if dirty else "")


def plan_line(record: dict[str, Any] | None, name: str) -> str:
    """The results' Markdown line naming the plan a result ran under (``record``: what :meth:`Plan.record`
    stored, or a dict holding those keys; None or no ``plan`` key = a result from before plans existed).

    Scripts append their own notes (smoke runs, off-plan options, sections from other runs).

    >>> plan_line(None, "llm")
    'Plan: none: this result was produced before plans existed (benchmarks/plans/llm.toml now fixes the protocol of the next run).'
    >>> plan_line({"plan": "benchmarks/plans/llm.toml", "plan_commit": "27ce75f4ab", "plan_uncommitted_edits": False}, "llm")
    'Plan: benchmarks/plans/llm.toml at commit 27ce75f4'
    """
    path = f"benchmarks/plans/{name}.toml"
    if not record or "plan" not in record:
        return (
            f"Plan: none: this result was produced before plans existed ({path} now fixes the protocol "
            "of the next run)."
        )
    commit = str(record.get("plan_commit") or "")
    if not commit:
        return f"Plan: {record['plan'] or path}, never committed (a dry run)"
    edits = " (with uncommitted edits: a dry run)" if record.get("plan_uncommitted_edits") else ""
    return f"Plan: {record['plan'] or path} at commit {commit[:8]}{edits}"


def status_mark(row: dict[str, Any]) -> str:
    """A short mark for tables: '' planned, '(amendment)' added later, '(unplanned)', '(pre-plan)'."""
    st = row.get("plan_status")
    if st is None:
        return " (run before its plan existed)"
    if st == PLANNED:
        return ""
    if st == AMENDED:
        return f" (added by plan amendment {str(row.get('planned_in', ''))[:8]})"
    return " (not in the plan)"


def deadline(spec: str, start: datetime | None = None) -> datetime:
    """The UTC moment a plan's ``deadline_utc`` means, for a section starting at ``start`` (default now).

    Why: plans give a deadline as a time of day ("01:15"); compared as a time of day, a section started
    at 23:00 for a 01:15 deadline stops at once, and a re-run on a later day at 02:00 never stops. So
    "HH:MM" is the first such moment at or after the start (past midnight if need be), and a full
    ISO date-time ("2026-12-03T01:15") is taken as given.

    >>> s = datetime(2026, 12, 2, 23, 0, tzinfo=UTC)
    >>> deadline("01:15", s).isoformat(), deadline("23:30", s).isoformat()
    ('2026-12-03T01:15:00+00:00', '2026-12-02T23:30:00+00:00')
    >>> deadline("2026-12-04T08:00", s).isoformat()
    '2026-12-04T08:00:00+00:00'
    """
    start = start or datetime.now(UTC)
    if "T" in spec:
        moment = datetime.fromisoformat(spec)
        return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    hh, mm = (int(x) for x in spec.split(":"))
    moment = start.replace(hour=hh, minute=mm, second=0, microsecond=0)
    return moment if moment >= start else moment + timedelta(days=1)
