"""Live feedback (fold-in, persistence, idempotency, SIGKILL), hot reload, A/B split and health alerts."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest
from serving_helpers import LiveServer, item_cluster, serve_config

from modalrec.serving.app import create_app
from modalrec.serving.feedback import FeedbackStore


def clusters(items: list[dict]) -> list[int]:
    return [item_cluster(int(it["item_id"][1:])) for it in items]


def post(srv: LiveServer, user: str, item: str, event: str = "like", **extra: object) -> dict:
    r = srv.client.post(
        "/feedback",
        json={"user_id": user, "item_id": item, "event": event, **extra},
        headers=srv.auth("writer"),
    )
    assert r.status_code == 200, r.text
    return r.json()


def test_feedback_folds_in_at_once(live: LiveServer) -> None:
    c = live.client
    before = c.get("/recommend/u0", params={"k": 10}).json()
    assert np.mean([x == 1 for x in clusters(before["items"])]) <= 0.3
    liked = [f"i{i}" for i in range(1, 80, 4)][:8]  # cluster-1 items
    for it in liked:
        post(live, "u0", it)
    after = c.get("/recommend/u0", params={"k": 10}).json()
    assert after["source"] == "model+feedback" and after["feedback_events"] == 8
    got = [it["item_id"] for it in after["items"]]
    assert not set(got) & set(liked), "items with feedback are excluded"
    assert np.mean([x == 1 for x in clusters(after["items"])]) > np.mean(
        [x == 1 for x in clusters(before["items"])]
    )
    # an unknown user with feedback gets feedback-based (not popularity) recommendations
    for it in ("i3", "i7", "i11"):
        post(live, "brand-new", it, "purchase")
    r = c.get("/recommend/brand-new").json()
    assert r["source"] == "feedback" and not r["fallback"]
    assert np.mean([x == 3 for x in clusters(r["items"])]) >= 0.6
    hist = c.get("/users/brand-new/history", headers=live.auth("reader")).json()
    assert [f["item_id"] for f in hist["feedback"]] == ["i3", "i7", "i11"] and not hist["known_user"]

    # ratings: a low rating pushes the user away from the rated item's cluster
    def cluster_ranks(user: str, cluster: int) -> float:
        r = c.get(f"/recommend/{user}", params={"k": 80, "exclude_seen": "false"}).json()
        return float(np.mean([n for n, x in enumerate(clusters(r["items"])) if x == cluster]))

    rank_before = cluster_ranks("u5", item_cluster(8))
    assert post(live, "u5", "i8", "rating", value=1.0)["duplicate"] is False
    r = c.get("/recommend/u5").json()
    assert r["source"] == "model+feedback" and r["feedback_events"] == 1
    assert cluster_ranks("u5", item_cluster(8)) > rank_before


@pytest.mark.parametrize("run", ["knn", "ease"])
def test_item_item_history_fold_in(runs, tmp_path, run) -> None:
    """Item-item models (ItemKNN's sparse similarities, EASE's dense weights) fold feedback in."""
    with LiveServer(create_app(runs[run], serve_config(tmp_path, text_encoder="none"))) as srv:
        assert srv.client.get("/recommend/u2").json()["source"] == "model"
        for it in ("i1", "i5", "i9", "i13", "i17"):
            post(srv, "stranger", it)
        r = srv.client.get("/recommend/stranger").json()
        assert r["source"] == "feedback" and np.mean([x == 1 for x in clusters(r["items"])]) >= 0.6
        sim = srv.client.get("/similar/i1", params={"k": 3}).json()["items"]
        assert len(sim) == 3 and "i1" not in [x["item_id"] for x in sim]


def test_feedback_persists_across_restart_and_is_idempotent(runs, tmp_path) -> None:
    cfg = serve_config(tmp_path, text_encoder="none")
    ids = []
    with LiveServer(create_app(runs["pop"], cfg)) as srv:
        for n in range(20):
            ids.append(post(srv, f"p{n % 3}", f"i{n}", "click", request_id=f"req-{n}")["id"])
        again = post(srv, "p0", "i0", "click", request_id="req-0")
        assert again["duplicate"] and again["id"] == ids[0]
    with LiveServer(create_app(runs["pop"], cfg)) as srv:  # a new process state on the same database
        fb = srv.client.get("/users/p1/history", headers=srv.auth("reader")).json()["feedback"]
        assert [f["item_id"] for f in fb] == [f"i{n}" for n in range(20) if n % 3 == 1]
        assert srv.client.get("/recommend/p1").json()["feedback_events"] == 7
    store = FeedbackStore(cfg.db_path)
    assert store.count() == 20
    store.close()


def test_concurrent_writes_then_sigkill(tmp_path: Path) -> None:
    """Rows acknowledged by the store survive a SIGKILL of the writing process, with no duplicates."""
    db = tmp_path / "fb.sqlite"
    src = Path(__file__).resolve().parents[2] / "src"
    script = textwrap.dedent(
        f"""
        import sys, threading
        sys.path.insert(0, {str(src)!r})
        from modalrec.serving.feedback import FeedbackRow, FeedbackStore
        store = FeedbackStore({str(db)!r})
        lock = threading.Lock()
        def client(c):
            for n in range(100000):
                rid = f"c{{c}}-{{n}}"
                store.add([FeedbackRow("u", "i", "click", None, "a", request_id=rid)])
                with lock:
                    print(rid, flush=True)
        for c in range(8):
            threading.Thread(target=client, args=(c,), daemon=True).start()
        threading.Event().wait()
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    acked = []
    assert proc.stdout is not None
    for line in proc.stdout:
        acked.append(line.strip())
        if len(acked) >= 300:
            break
    os.kill(proc.pid, signal.SIGKILL)
    rest = proc.stdout.read()  # lines printed before the kill landed are acknowledgements too
    acked += [x for x in rest.split("\n") if x.strip()]
    proc.wait()
    store = FeedbackStore(db)
    rows = store._reader().execute("SELECT request_id FROM feedback").fetchall()
    store.close()
    stored = [r[0] for r in rows]
    assert len(stored) == len(set(stored)), "duplicated rows"
    missing = set(acked) - set(stored)
    assert not missing, f"{len(missing)} acknowledged rows lost"


def test_hot_reload_and_broken_run_refused(live: LiveServer, runs) -> None:
    c, admin = live.client, live.auth("admin")
    assert c.get("/health").json()["arms"]["a"]["model"] == "bprmf"
    stop = threading.Event()
    errors: list[int] = []
    served: list[str] = []

    def hammer() -> None:  # requests in flight during the swaps must all succeed
        while not stop.is_set():
            r = c.get("/recommend/u7")
            if r.status_code != 200:
                errors.append(r.status_code)
            else:
                served.append(r.json()["model"])

    t = threading.Thread(target=hammer)
    t.start()
    try:
        r = c.post("/admin/reload", json={"run_dir": str(runs["knn"])}, headers=admin)
        assert r.status_code == 200, r.text
        assert r.json()["arms"]["a"]["model"] == "itemknn" and r.json()["generation"] == 1
        r = c.post("/admin/reload", json={"run_dir": str(runs["broken"])}, headers=admin)
        assert r.status_code == 422 and r.json()["error"]["code"] == "run_dir_invalid"
        assert "sha256" in r.json()["error"]["message"]
        r = c.post("/admin/reload", json={"run_dir": str(runs["root"] / "missing")}, headers=admin)
        assert r.status_code == 422
    finally:
        stop.set()
        t.join()
    assert not errors and served, (errors, len(served))
    assert set(served) <= {"bprmf", "itemknn"}
    h = c.get("/health").json()
    assert h["arms"]["a"]["model"] == "itemknn" and h["generation"] == 1
    assert c.get("/recommend/u7").json()["model"] == "itemknn"
    rec = live.app.state.srv.store.active_run()  # recorded in the feedback store, which others follow
    assert rec.generation == 1 and rec.run_dir == str(Path(runs["knn"]).resolve()) and rec.run_dir_b is None
    metrics = c.get("/metrics").text
    assert 'modalrec_reloads_total{outcome="refused"} 2.0' in metrics
    assert 'modalrec_reloads_total{outcome="ok"} 1.0' in metrics


def test_other_worker_follows_reload(runs, tmp_path) -> None:
    """Two app instances on one state dir stand in for two worker processes."""
    cfg = serve_config(tmp_path, text_encoder="none")
    a, b = create_app(runs["pop"], cfg), create_app(runs["pop"], cfg)
    with LiveServer(a) as sa, LiveServer(b) as sb:
        r = sa.client.post("/admin/reload", json={"run_dir": str(runs["knn"])}, headers=sa.auth("admin"))
        assert r.status_code == 200
        import time

        deadline = time.monotonic() + 10
        while sb.client.get("/health").json()["arms"]["a"]["model"] != "itemknn":
            assert time.monotonic() < deadline, "the second worker did not follow the reload"
            time.sleep(0.2)
        assert sb.client.get("/health").json()["generation"] == 1


def test_a_run_that_differs_on_this_host_is_not_followed(runs, tmp_path) -> None:
    """A record whose run directory holds other content here than where it was activated (another
    manifest at the same path) is refused by the follower, once, and the current run keeps serving."""
    from modalrec.serving import active

    cfg = serve_config(tmp_path, text_encoder="none")
    state = create_app(runs["pop"], cfg).state.srv
    try:
        store = state.store
        store.set_active(str(Path(runs["knn"]).resolve()), None, "0" * 64)  # fingerprint of other content
        state.follow_active()
        assert state.engines["a"].model_name == "popularity" and state.generation == 0
        assert state._refused_generation == 1
        rec = active.record(store, runs["knn"], None)  # the real fingerprint: followed
        state.follow_active()
        assert state.engines["a"].model_name == "itemknn" and state.generation == rec.generation == 2
    finally:
        state.store.close()
        state.live.close()


def test_ab_split_and_report(runs, tmp_path, caplog: pytest.LogCaptureFixture) -> None:
    """Deterministic split, per-arm metrics from attributed clicks, guardrails and health alerts."""
    cfg = serve_config(
        tmp_path,
        text_encoder="none",
        ab={"run_b": str(runs["knn"]), "share_b": 0.5, "min_users": 5},
        health={"max_fallback_share": 0.1},
    )
    with (
        LiveServer(create_app(runs["bpr"], cfg)) as srv,
        caplog.at_level(logging.WARNING, "modalrec.serving.alerts"),
    ):
        c = srv.client
        arms, lists = {}, {}
        for n in range(60):
            u = f"u{n}"
            r = c.get(f"/recommend/{u}").json()
            arms[u], lists[u] = r["arm"], r
            assert r["model"] == {"a": "bprmf", "b": "itemknn"}[r["arm"]]
            assert c.get(f"/recommend/{u}").json()["arm"] == r["arm"], "the split must be deterministic"
        share_b = np.mean([a == "b" for a in arms.values()])
        assert 0.3 < share_b < 0.7
        clicked = {}
        for u, arm in list(arms.items())[:40]:
            if arm == "b" or u.endswith(("0", "2", "4")):
                r = lists[u]
                post(srv, u, r["items"][1]["item_id"], "click", impression_id=r["impression_id"], rank=2)
                clicked[u] = arm
        for n in range(30):  # unknown users: fallback share crosses the threshold -> alert
            c.get(f"/recommend/nobody-{n}")
        ab = c.get("/admin/ab", headers=srv.auth("admin")).json()
        a, b = ab["arms"]["a"], ab["arms"]["b"]
        assert a["impressions"] + b["impressions"] == 150
        assert a["users"] + b["users"] == 90
        assert b["positive_events"] == sum(1 for arm in clicked.values() if arm == "b")
        assert a["positive_events"] == sum(1 for arm in clicked.values() if arm == "a")
        # every click was on the second item of the user's first list: MRR 1/2, CTR = clicked lists / lists
        assert b["mrr_of_clicks"]["mean"] == pytest.approx(0.5)
        assert b["ctr"]["mean"] == pytest.approx(b["lists_with_positive"] / b["impressions"])
        assert 0 < a["ctr"]["mean"] < b["ctr"]["mean"]
        t = ab["test"]
        assert t["metric"] == "ctr" and ab["answer"] == t["decision"]
        assert t["decision"]["test"] in ("mSPRT", "sample-ratio mismatch")
        assert "always-valid" in t["decision"]["why"] or "split" in t["decision"]["why"]
        assert t["srm"]["users_a"] == a["users"] and t["mde"]["absolute"] > 0
        g = ab["guardrails"]
        assert g["a"]["requests"] + g["b"]["requests"] == 150 and g["a"]["latency_p99_ms"] > 0
        assert max(g["a"]["fallback_share"], g["b"]["fallback_share"]) > 0.2
        metrics = c.get("/metrics").text
        assert f'modalrec_feedback_total{{arm="b",event="click"}} {float(b["positive_events"])}' in metrics
        health = c.get("/health").json()
    alerts = [json.loads(r.getMessage()) for r in caplog.records if r.name == "modalrec.serving.alerts"]
    assert any(al["alert"] == "fallback_share" for al in alerts), alerts
    assert any("fallback_share" in v for v in health["alerts"].values())
