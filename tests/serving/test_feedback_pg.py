"""The PostgreSQL feedback store ([feedback] url): the SQLite store's contract on a database that several
stores (processes, hosts) share, its schema versioning, and the failure modes at start-up and while
serving. A throw-away cluster runs in a temp folder (pg_cluster.py); everything skips without it."""

from __future__ import annotations

import dataclasses
import random
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from pg_cluster import PgCluster, free_port, pg_cluster_fixture, pg_url_fixture  # noqa: F401  (fixtures)
from serving_helpers import LiveServer, serve_config

from modalrec.core.errors import ConfigError
from modalrec.serving.app import create_app
from modalrec.serving.experiments import INTERLEAVED, Impression, build_report
from modalrec.serving.feedback import FeedbackRow, FeedbackStore
from modalrec.serving.settings import ServeConfig

pytest.importorskip("psycopg")

from modalrec.serving.feedback_pg import SCHEMA_VERSION, PostgresFeedbackStore, redact


def test_idempotent_and_shared_between_stores(pg_url: str) -> None:
    """Two stores (as two server processes) on one database: one row per request_id however the
    retries race, and each store reads what the other committed."""
    s1, s2 = PostgresFeedbackStore(pg_url), PostgresFeedbackStore(pg_url)
    try:
        ids: dict[str, set[int]] = {}
        lock = threading.Lock()

        def client(seed: int) -> None:
            rng = random.Random(seed)
            for n in range(40):
                rid = f"r{rng.randrange(60)}"
                store = s1 if rng.random() < 0.5 else s2
                got = store.add([FeedbackRow(f"u{n % 5}", f"i{n}", "click", None, "a", request_id=rid)])[0]
                with lock:
                    ids.setdefault(rid, set()).add(got.id)

        threads = [threading.Thread(target=client, args=(k,)) for k in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert all(len(v) == 1 for v in ids.values()), "a request_id got two rows"
        assert s1.count() == s2.count() == len(ids)
        s2.add([FeedbackRow("solo", "i7", "like", None, "b")])
        assert s1.for_user("solo") == [("i7", "like", None)]
        assert s1.events_by_arm()["b"] == {"like": 1}
    finally:
        s1.close()
        s2.close()


def _replay(store: Any) -> list[Any]:
    """The same impressions and feedback into a store; everything its experiment reads answer."""
    t0 = time.time() - 100
    imps = [
        Impression("p1", "e1", "u1", "a", "model", ["i1", "i2", "i3"], latency_ms=3.0, ts=t0),
        Impression("p2", "e1", "u2", "b", "model", ["i4", "i2"], latency_ms=5.0, ts=t0 + 1),
        Impression("p3", "e1", "u3", "b", "popularity", ["i9"], latency_ms=9.0, error=True, ts=t0 + 2),
        Impression("p4", "e2", "u1", INTERLEAVED, "model", ["i5", "i6"], ["a", "b"], 4.0, ts=t0 + 3),
    ]
    for imp in imps:
        store.record_impression(imp)
    store.flush_impressions()
    rows = [
        FeedbackRow("u1", "i2", "click", None, "a", "q1", t0 + 5, impression_id="p1", rank=2),
        FeedbackRow("u1", "i3", "like", None, "a", None, t0 + 6),
        FeedbackRow("u2", "i2", "click", None, "b", None, t0 + 7, experiment="e1"),
        FeedbackRow("u2", "i8", "click", None, "b", None, t0 + 8, experiment="e1"),
        FeedbackRow("u1", "i6", "click", None, "a", None, t0 + 9, experiment="e2"),
        FeedbackRow("u1", "i1", "click", None, "a", "q9", t0 + 10, impression_id="zz"),
    ]
    stored = store.add(rows) + store.add(rows[:1])
    out: list[Any] = [[(s.id, s.duplicate, s.attribution) for s in stored]]
    for exp in ("e1", "e2"):
        out += [
            sorted(tuple(float(x) if not isinstance(x, str) else x for x in r) for r in q)
            for q in (
                store.ab_users(exp, ["click", "like"]),
                store.interleave_users(exp, ["click"]),
                store.guardrail_rows(exp, 10),
                store.unattributed(exp),
            )
        ]
    out.append([store.update_running_p("e1", p) for p in (0.4, 0.2, 0.3)])
    return out


def test_experiment_tables_answer_like_sqlite(pg_url: str, tmp_path: Path) -> None:
    """Attribution and every report query give the same answers on both stores (one shared SQL)."""
    lite, pg = FeedbackStore(tmp_path / "fb.sqlite"), PostgresFeedbackStore(pg_url)
    try:
        want, got = _replay(lite), _replay(pg)
        assert got == want
        assert want[1] and want[6] and want[4], "the replay exercises A/B, interleaving, unattributed"
        from modalrec.serving.abstats import AnalysisPlan

        plan = AnalysisPlan(alpha=0.05, metric="ctr", tau=0.1, min_users=2, share_b=0.5)
        assert build_report(pg, "e1", "ab", plan, ["click"]) == build_report(
            lite, "e1", "ab", plan, ["click"]
        )
    finally:
        lite.close()
        pg.close()


def test_schema_version_table_and_newer_schema_refused(pg_url: str) -> None:
    import psycopg

    PostgresFeedbackStore(pg_url).close()
    PostgresFeedbackStore(pg_url).close()  # a second start migrates nothing
    with psycopg.connect(pg_url, autocommit=True) as con:
        versions = con.execute("SELECT version FROM modalrec_schema ORDER BY version").fetchall()
        assert versions == [(v,) for v in range(1, SCHEMA_VERSION + 1)]
        con.execute("INSERT INTO modalrec_schema VALUES (%s, 0)", (SCHEMA_VERSION + 1,))
    with pytest.raises(ConfigError, match="newer than this modalrec"):
        PostgresFeedbackStore(pg_url)


def test_unreachable_database_stops_start_up_with_one_line(runs: dict[str, Path], tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    url = f"postgresql://app:hunter2secret@127.0.0.1:{port}/feedback"
    cfg = serve_config(tmp_path, text_encoder="none", feedback={"url": url})
    with pytest.raises(ConfigError) as err:
        create_app(runs["pop"], cfg)
    msg = str(err.value)
    assert f"127.0.0.1:{port}/feedback" in msg and "\n" not in msg
    assert "hunter2secret" not in msg and "app:" not in msg
    assert redact(url) == f"127.0.0.1:{port}/feedback"


def test_settings_reject_a_non_postgres_url() -> None:
    with pytest.raises(ValueError, match="postgresql://"):
        ServeConfig.model_validate({"feedback": {"url": "mysql://x/y"}})


def _post(srv: LiveServer, user: str, item: str, rid: str) -> Any:
    return srv.client.post(
        "/feedback",
        json={"user_id": user, "item_id": item, "event": "like", "request_id": rid},
        headers=srv.auth("writer"),
    )


def test_two_servers_share_the_store_and_survive_an_outage(
    runs: dict[str, Path], tmp_path: Path, pg_cluster: PgCluster, pg_url: str
) -> None:
    """Two apps (as two hosts) on one database: a POST to one is read by the other; with the database
    gone a POST answers 503 (not a 200 without a row) and /recommend still answers; back, it resumes."""
    cfg = [serve_config(tmp_path / f"h{k}", text_encoder="none", feedback={"url": pg_url}) for k in (1, 2)]
    with LiveServer(create_app(runs["bpr"], cfg[0])) as a, LiveServer(create_app(runs["bpr"], cfg[1])) as b:
        assert _post(a, "u0", "i1", "k1").status_code == 200
        hist = b.client.get("/users/u0/history", headers=b.auth("reader")).json()
        assert [f["item_id"] for f in hist["feedback"]] == ["i1"]
        assert _post(b, "u0", "i1", "k1").json()["duplicate"]
        pg_cluster.stop()
        try:
            down = _post(a, "u0", "i5", "k2")
            assert down.status_code == 503 and down.json()["error"]["code"] == "store_unavailable"
            rec = b.client.get("/recommend/u0", params={"k": 5})
            assert rec.status_code == 200 and len(rec.json()["items"]) == 5
        finally:
            pg_cluster.start()
        time.sleep(1.1)  # past the reader's one-second back-off
        again = _post(a, "u0", "i5", "k2")
        assert again.status_code == 200 and not again.json()["duplicate"]
        hist = b.client.get("/users/u0/history", headers=b.auth("reader")).json()
        assert [f["item_id"] for f in hist["feedback"]] == ["i1", "i5"]


def _commit_together(stores: list[Any], batches: list[list[FeedbackRow]]) -> list[Any]:
    """Each store commits its batch (one transaction each), both starting at the same moment; the
    results in order, or the exception a store raised."""
    go = threading.Barrier(len(stores))
    results: list[Any] = [None] * len(stores)

    def commit(k: int) -> None:
        go.wait()
        try:
            results[k] = stores[k].add(batches[k])
        except Exception as e:
            results[k] = e

    threads = [threading.Thread(target=commit, args=(k,)) for k in range(len(stores))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_overlapping_batches_in_opposite_order_do_not_deadlock(pg_url: str) -> None:
    """Two stores (two processes) commit the same request_ids in one transaction each, one in the
    opposite order of the other. Inserting in arrival order, each transaction would wait on a row the
    other inserted first (PostgreSQL aborts one with a deadlock error after a second, its POSTs get 503);
    the store inserts every batch in request_id order, so one waits for the other and both succeed."""
    s1, s2 = PostgresFeedbackStore(pg_url), PostgresFeedbackStore(pg_url)
    try:
        for round_ in range(6):
            rows = [
                FeedbackRow(f"u{n % 7}", f"i{n}", "click", None, "a", request_id=f"x{round_}-{n:03d}")
                for n in range(150)
            ]
            forward = [dataclasses.replace(r) for r in rows]
            backward = [dataclasses.replace(r) for r in rows[::-1]]
            results = _commit_together([s1, s2], [forward, backward])
            failed = [r for r in results if isinstance(r, Exception)]
            assert not failed, f"round {round_}: {failed}"
            first, second = results[0], results[1][::-1]  # second in the same order as the first
            assert [a.id for a in first] == [b.id for b in second]
            assert all(a.duplicate != b.duplicate for a, b in zip(first, second, strict=True))
        assert s1.count() == 6 * 150
    finally:
        s1.close()
        s2.close()
