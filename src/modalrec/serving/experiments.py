"""Online experiments: impressions, attribution of feedback to them, and the ``/admin/ab`` report.

Why an impression log: a click is evidence about the list that showed the item, not about the arm
of the user in general. Every ``/recommend`` answer gets an impression id; the items it showed (in
order), the arm (or, when interleaving, each item's team), latency and errors are stored. Feedback is
attributed to the impression it names, or else to the user's newest impression within
``[ab] attribution_window_s`` that showed the item; everything else is reported as unattributed.

Storage sits behind :class:`ExperimentStore` (a handful of semantic reads and writes).
:class:`~modalrec.serving.feedback.FeedbackStore` implements it on SQLite and
:class:`~modalrec.serving.feedback_pg.PostgresFeedbackStore` on PostgreSQL; both use this module's
SQL (:func:`attribute`, :class:`ExperimentReads`), written once in the dialect both accept with ``?``
placeholders (the PostgreSQL store turns them into ``%s``).

The statistics are :mod:`modalrec.serving.abstats` (pure); this module only turns stored rows into
per-user arrays and a report.
"""

from __future__ import annotations

import abc
import hashlib
import json
import math
import sqlite3
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from modalrec.serving.abstats import (
    AnalysisPlan,
    ArmSample,
    Estimate,
    analyse_ab,
    analyse_interleave,
    ratio_estimate,
)
from modalrec.serving.settings import ABConfig

if TYPE_CHECKING:
    from modalrec.serving.feedback import FeedbackRow

INTERLEAVED = "interleaved"


@dataclass
class Impression:
    """One recommendation list as shown: ``items`` in rank order, ``teams`` when interleaved."""

    id: str
    experiment: str
    user_id: str
    arm: str
    source: str
    items: list[str]
    teams: list[str] | None = None
    latency_ms: float | None = None
    error: bool = False
    ts: float = 0.0

    def row(self) -> tuple[Any, ...]:
        teams = json.dumps(self.teams) if self.teams is not None else None
        return (
            self.id,
            self.experiment,
            self.user_id,
            self.arm,
            self.source,
            json.dumps(self.items),
            teams,
            self.latency_ms,
            int(self.error),
            self.ts,
        )


@dataclass
class Attribution:
    """Where a feedback row was credited: an impression (rank, arm, team) or nowhere (``how`` says why)."""

    impression_id: str | None
    rank: int | None
    arm: str | None
    team: str | None
    how: str
    #: The experiment of the impression credited (an impression from before a reload keeps its own).
    experiment: str | None = None

    @property
    def attributed(self) -> bool:
        return self.impression_id is not None


def new_impression_id() -> str:
    return uuid.uuid4().hex


def experiment_id(mode: str, salt: str, share_b: float, runs: dict[str, str]) -> str:
    """A stable id for one experiment: a reload to other run directories starts a new one."""
    key = json.dumps([mode, salt, share_b, sorted(runs.items())])
    return hashlib.sha256(key.encode()).hexdigest()[:12]


def current(ab: ABConfig, engines: Mapping[str, Any]) -> tuple[str, str]:
    """(experiment id, mode) of what is served now: "interleave" needs two arms; one arm is "ab"
    with everything in arm a. ``engines`` maps arm to an object with ``path`` and ``model_name``."""
    mode = ab.mode if "b" in engines else "ab"
    share = ab.share_b if "b" in engines else 0.0
    runs = {arm: f"{e.path}:{e.model_name}" for arm, e in engines.items()}
    return experiment_id(mode, ab.salt, share, runs), mode


def analysis_plan(ab: ABConfig, engines: Mapping[str, Any]) -> AnalysisPlan:
    """The analysis settings of ``[ab]`` (share_b 0 when only arm a is served)."""
    return AnalysisPlan(
        alpha=ab.alpha,
        metric=ab.metric,
        tau=ab.tau,
        min_users=ab.min_users,
        share_b=ab.share_b if "b" in engines else 0.0,
        srm_alpha=ab.srm_alpha,
        srm_concentration=ab.srm_concentration,
        power=ab.power,
    )


def positive_events(ab: ABConfig, weights: Mapping[str, float]) -> list[str]:
    """Events that count as positive: ``[ab] positive_events``, or every positively weighted event
    except ``view`` (too weak) and ``rating`` (its sign depends on the value)."""
    if ab.positive_events is not None:
        return list(ab.positive_events)
    return [e for e, w in weights.items() if w > 0 and e not in ("view", "rating")]


def _match(imp: tuple[Any, ...], item_id: str) -> Attribution | None:
    """The attribution to impression row ``(id, arm, items, teams, experiment)`` if it showed ``item_id``."""
    iid, arm, items_json, teams_json, experiment = imp
    items = json.loads(items_json)
    if item_id not in items:
        return None
    rank = items.index(item_id) + 1
    teams = json.loads(teams_json) if teams_json else None
    return Attribution(iid, rank, arm, teams[rank - 1] if teams else None, "", experiment)


#: Runs one query inside the caller's transaction and returns its rows (``?`` placeholders).
Fetch = Callable[[str, tuple[Any, ...]], list[tuple[Any, ...]]]


def attribute(fetch: Fetch, r: FeedbackRow, window_s: float) -> Attribution:
    """Attribute one feedback row (inside the transaction that stores it); see the module docstring.
    ``fetch`` runs a query on the writer's connection, so SQLite and PostgreSQL share this logic."""
    if r.impression_id is not None:
        found = fetch(
            "SELECT id, arm, items, teams, experiment, user_id, ts FROM ab_impressions WHERE id = ?",
            (r.impression_id,),
        )
        imp = found[0] if found else None
        if imp is None:
            return Attribution(None, None, None, None, "unattributed: unknown impression id")
        if imp[5] != r.user_id:
            return Attribution(None, None, None, None, "unattributed: impression of another user")
        if not 0 <= r.ts - imp[6] <= window_s:
            return Attribution(None, None, None, None, "unattributed: outside the attribution window")
        att = _match(imp[:5], r.item_id)
        if att is None:
            return Attribution(None, None, None, None, "unattributed: item not in the named impression")
        # the impression's own order is the truth; a client rank that disagrees is reported, not used
        att.how = "named" if r.rank in (None, att.rank) else f"named (client rank {r.rank} corrected)"
        return att
    rows = fetch(
        "SELECT id, arm, items, teams, experiment FROM ab_impressions WHERE user_id = ? AND ts BETWEEN ? AND ? "
        "AND error = 0 ORDER BY ts DESC LIMIT 200",
        (r.user_id, r.ts - window_s, r.ts),
    )
    for imp in rows:
        att = _match(imp, r.item_id)
        if att is not None:
            att.how = "window"
            return att
    return Attribution(None, None, None, None, "unattributed: no impression in the window showed the item")


class ExperimentStore(Protocol):
    """What the service needs from an experiment log (SQLite here; a shared store implements the same)."""

    def record_impression(self, imp: Impression) -> None: ...

    def flush_impressions(self) -> None: ...

    def ab_users(self, experiment: str, positive: list[str]) -> list[tuple[Any, ...]]: ...

    def interleave_users(self, experiment: str, positive: list[str]) -> list[tuple[Any, ...]]: ...

    def guardrail_rows(self, experiment: str, limit: int) -> list[tuple[Any, ...]]: ...

    def unattributed(self, experiment: str) -> list[tuple[Any, ...]]: ...

    def update_running_p(self, experiment: str, p_value: float) -> float: ...


class ExperimentReads(abc.ABC):
    """The experiment report's reads (per-user sums, guardrail rows, unattributed counts) in SQL that
    SQLite and PostgreSQL both run (``CASE`` instead of summing booleans, a float cast before dividing);
    mixed into both feedback stores, which own the connections and implement :meth:`query`."""

    @abc.abstractmethod
    def query(self, sql: str, params: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
        """Rows of a read-only query (``?`` placeholders) on this thread's reader connection."""

    def ab_users(self, experiment: str, positive: list[str]) -> list[tuple[Any, ...]]:
        """Per (user, arm): impressions, impressions with a positive event, positive events, sum 1/rank,
        positive events with a rank."""
        marks = ",".join("?" * len(positive)) or "NULL"
        return self.query(
            f"""WITH att AS (
                  SELECT impression_id, COUNT(*) AS pos, SUM(CAST(1 AS DOUBLE PRECISION) / rank) AS rr, COUNT(rank) AS ranked
                  FROM ab_attributions WHERE experiment = ? AND impression_id IS NOT NULL
                  AND event IN ({marks}) GROUP BY impression_id)
                SELECT i.user_id, i.arm, COUNT(*), SUM(CASE WHEN att.pos > 0 THEN 1 ELSE 0 END), SUM(COALESCE(att.pos, 0)),
                       SUM(COALESCE(att.rr, 0)), SUM(COALESCE(att.ranked, 0))
                FROM ab_impressions i LEFT JOIN att ON att.impression_id = i.id
                WHERE i.experiment = ? AND i.error = 0 AND i.arm != ?
                GROUP BY i.user_id, i.arm""",
            (experiment, *positive, experiment, INTERLEAVED),
        )

    def interleave_users(self, experiment: str, positive: list[str]) -> list[tuple[Any, ...]]:
        """Per user of an interleaving experiment: impressions, positive events credited to a and to b."""
        marks = ",".join("?" * len(positive)) or "NULL"
        return self.query(
            f"""WITH att AS (
                  SELECT impression_id, SUM(CASE WHEN team = 'a' THEN 1 ELSE 0 END) AS ca,
                         SUM(CASE WHEN team = 'b' THEN 1 ELSE 0 END) AS cb
                  FROM ab_attributions WHERE experiment = ? AND impression_id IS NOT NULL
                  AND event IN ({marks}) GROUP BY impression_id)
                SELECT i.user_id, COUNT(*), SUM(COALESCE(att.ca, 0)), SUM(COALESCE(att.cb, 0))
                FROM ab_impressions i LEFT JOIN att ON att.impression_id = i.id
                WHERE i.experiment = ? AND i.error = 0 AND i.arm = ?
                GROUP BY i.user_id""",
            (experiment, *positive, experiment, INTERLEAVED),
        )

    def guardrail_rows(self, experiment: str, limit: int) -> list[tuple[Any, ...]]:
        """(arm, source, latency_ms, error) of the newest ``limit`` impressions of the experiment."""
        return self.query(
            "SELECT arm, source, latency_ms, error FROM ab_impressions WHERE experiment = ? "
            "ORDER BY ts DESC LIMIT ?",
            (experiment, limit),
        )

    def unattributed(self, experiment: str) -> list[tuple[Any, ...]]:
        """(arm of the user, how, event, count) of feedback rows not attributed to any impression."""
        return self.query(
            "SELECT arm, how, event, COUNT(*) FROM ab_attributions WHERE experiment = ? "
            "AND impression_id IS NULL GROUP BY arm, how, event",
            (experiment,),
        )


class SQLiteExperimentReads(ExperimentReads):
    """:class:`ExperimentReads` on a per-thread SQLite connection (:class:`~modalrec.serving.feedback.FeedbackStore`)."""

    @abc.abstractmethod
    def _reader(self) -> sqlite3.Connection:
        """This thread's read connection."""

    def query(self, sql: str, params: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
        """Rows of a read-only query on this thread's reader connection."""
        return self._reader().execute(sql, params).fetchall()


# ------------------------------------------------------------------------------------------ report
def _summary(est: Estimate, alpha: float = 0.05) -> dict[str, Any]:
    se = math.sqrt(est.var) if np.isfinite(est.var) else None
    mean = est.mean if np.isfinite(est.mean) else None
    ci = [mean - 1.96 * se, mean + 1.96 * se] if mean is not None and se is not None else None
    return {"mean": mean, "se": se, "ci95": ci}


def _samples(rows: list[tuple[Any, ...]]) -> dict[str, ArmSample]:
    by_arm: dict[str, list[tuple[Any, ...]]] = {}
    for r in rows:
        by_arm.setdefault(r[1], []).append(r)
    out = {}
    for arm, rs in by_arm.items():
        m = np.asarray([r[2:] for r in rs], dtype=np.float64)
        out[arm] = ArmSample(m[:, 0], m[:, 1], m[:, 2], m[:, 3], m[:, 4])
    return out


def arm_metrics(s: ArmSample) -> dict[str, Any]:
    """What one arm did, per metric with its user-clustered standard error."""
    return {
        "users": s.users,
        "impressions": int(s.impressions.sum()),
        "lists_with_positive": int(s.lists_with_positive.sum()),
        "positive_events": int(s.positives.sum()),
        "ctr": _summary(s.metric("ctr")),
        "positive_per_impression": _summary(s.metric("positive_per_impression")),
        "positive_per_user": _summary(s.metric("positive_per_user")),
        "mrr_of_clicks": _summary(ratio_estimate(s.rr, s.ranked)),
    }


def guardrails(rows: list[tuple[Any, ...]]) -> dict[str, dict[str, Any]]:
    """Per arm: latency p50/p99 (ms), popularity-fallback share and error share of served lists."""
    by_arm: dict[str, list[tuple[Any, ...]]] = {}
    for r in rows:
        by_arm.setdefault(r[0], []).append(r)
    out = {}
    for arm, rs in sorted(by_arm.items()):
        lat = np.asarray([r[2] for r in rs if r[2] is not None], dtype=np.float64)
        out[arm] = {
            "requests": len(rs),
            "latency_p50_ms": float(np.percentile(lat, 50)) if len(lat) else None,
            "latency_p99_ms": float(np.percentile(lat, 99)) if len(lat) else None,
            "fallback_share": sum(r[1] == "popularity" for r in rs) / len(rs),
            "error_share": sum(bool(r[3]) for r in rs) / len(rs),
        }
    return out


def build_report(
    store: ExperimentStore, experiment: str, mode: str, plan: AnalysisPlan, positive: list[str]
) -> dict[str, Any]:
    """Metrics per arm, guardrails, unattributed events and the test that answers (see abstats)."""
    store.flush_impressions()
    unatt: dict[str, int] = {}
    for _arm, how, _event, n in store.unattributed(experiment):
        unatt[how] = unatt.get(how, 0) + int(n)
    out: dict[str, Any] = {
        "guardrails": guardrails(store.guardrail_rows(experiment, 20_000)),
        "unattributed_events": unatt,
    }
    if mode == "interleave":
        rows = store.interleave_users(experiment, positive)
        m = np.asarray([r[1:] for r in rows], dtype=np.float64).reshape(-1, 3)
        res = analyse_interleave(m[:, 1], m[:, 2], m[:, 0], plan)
        res = _stick(
            store, experiment, res, plan, lambda p: analyse_interleave(m[:, 1], m[:, 2], m[:, 0], plan, p)
        )
        return {**out, "arms": {}, "test": res}
    samples = _samples(store.ab_users(experiment, positive))
    out["arms"] = {arm: arm_metrics(s) for arm, s in sorted(samples.items())}
    if "a" in samples and "b" in samples:
        a, b = samples["a"], samples["b"]
        out["test"] = _stick(
            store, experiment, analyse_ab(a, b, plan), plan, lambda p: analyse_ab(a, b, plan, p)
        )
    else:
        out["test"] = None
    return out


def _stick(
    store: ExperimentStore, experiment: str, res: dict[str, Any], plan: AnalysisPlan, again: Any
) -> dict[str, Any]:
    """Fold this look's always-valid p-value into the stored running minimum and recompute with it."""
    if res["decision"]["test"] in ("none yet", "sample-ratio mismatch"):
        return res
    p = store.update_running_p(experiment, res["sequential"]["p_value"])
    return again(p) if p < res["sequential"]["p_value"] else res
