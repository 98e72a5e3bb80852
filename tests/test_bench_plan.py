"""benchmarks/plan.py: a plan must be committed before its run; rows added by a later commit are marked."""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import plan


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "config", "user.email", "t@example.org")
    _git(tmp_path, "config", "user.name", "t")
    (tmp_path / "benchmarks" / "plans").mkdir(parents=True)
    monkeypatch.setattr(plan, "ROOT", tmp_path)
    return tmp_path


def rows_of(data: dict) -> list[str]:
    return [r["label"] for r in data.get("rows", [])]


def test_uncommitted_plan_is_refused_and_amendments_are_marked(repo: Path) -> None:
    plans = repo / "benchmarks" / "plans"
    path = plans / "s.toml"
    path.write_text('[[rows]]\nlabel = "a"\n')
    with pytest.raises(SystemExit, match="commit the plan"):
        plan.load_plan("s", rows_of=rows_of, plans_dir=plans)
    _git(repo, "add", ".")
    _git(repo, "commit", "-q", "-m", "plan")
    p = plan.load_plan("s", rows_of=rows_of, plans_dir=plans)
    assert not p.dirty and p.commit == p.first_commit
    assert p.row_status("a")["plan_status"] == plan.PLANNED
    assert p.row_status("zzz")["plan_status"] == plan.UNPLANNED

    path.write_text('[[rows]]\nlabel = "a"\n[[rows]]\nlabel = "b"\n')
    dry = plan.load_plan("s", rows_of=rows_of, plans_dir=plans, allow_uncommitted=True)
    assert dry.dirty and dry.row_status("b")["plan_status"] == plan.UNPLANNED
    _git(repo, "commit", "-q", "-am", "amend")
    p2 = plan.load_plan("s", rows_of=rows_of, plans_dir=plans)
    assert p2.commit != p2.first_commit
    assert p2.row_status("a")["plan_status"] == plan.PLANNED
    b = p2.row_status("b")
    assert b == {"plan_status": plan.AMENDED, "planned_in": p2.commit}
    assert "amendment" in plan.status_mark(b) and plan.status_mark({}) == " (run before its plan existed)"
    assert p2.record()["plan_commit"] == p2.commit


def test_missing_or_broken_plan_names_the_file(repo: Path) -> None:
    plans = repo / "benchmarks" / "plans"
    with pytest.raises(SystemExit, match="no plan"):
        plan.load_plan("nope", plans_dir=plans)
    (plans / "bad.toml").write_text("rows = [")
    with pytest.raises(SystemExit, match=r"bad\.toml: not valid TOML"):
        plan.load_plan("bad", plans_dir=plans)


def test_plan_doctests_run() -> None:
    import doctest

    assert doctest.testmod(plan).failed == 0


@given(
    start=st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2030, 1, 1)),
    hh=st.integers(0, 23),
    mm=st.integers(0, 59),
)
def test_time_of_day_deadline_is_the_next_such_moment(start: datetime, hh: int, mm: int) -> None:
    # For every start, "HH:MM" means the first moment with that time of day at or after the start:
    # never in the past (a section would stop at once), never more than a day ahead (it would not stop).
    start = start.replace(tzinfo=UTC)
    moment = plan.deadline(f"{hh:02d}:{mm:02d}", start)
    assert (moment.hour, moment.minute, moment.second) == (hh, mm, 0)
    assert timedelta(0) <= moment - start < timedelta(days=1)
