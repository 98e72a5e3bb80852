"""Impressions, attribution of feedback and interleaving credit through the live server (issue 21)."""

from __future__ import annotations

import time

import numpy as np
import pytest
from serving_helpers import LiveServer, serve_config

from modalrec.serving.app import create_app
from modalrec.serving.feedback import FeedbackStore


def post(srv: LiveServer, user: str, item: str, **extra: object) -> dict:
    r = srv.client.post(
        "/feedback",
        json={"user_id": user, "item_id": item, "event": extra.pop("event", "click"), **extra},
        headers=srv.auth("writer"),
    )
    assert r.status_code == 200, r.text
    return r.json()


def test_attribution_named_window_and_unattributed(runs, tmp_path) -> None:
    cfg = serve_config(tmp_path, text_encoder="none", ab={"attribution_window_s": 1.5})
    with LiveServer(create_app(runs["pop"], cfg)) as srv:
        c = srv.client
        r1 = c.get("/recommend/u1", params={"k": 5}).json()
        r2 = c.get("/recommend/u2", params={"k": 5}).json()
        assert len(r1["impression_id"]) == 32 and r1["impression_id"] != r2["impression_id"]
        shown = [it["item_id"] for it in r1["items"]]
        named = post(srv, "u1", shown[2], impression_id=r1["impression_id"], rank=3, request_id="x1")
        assert named["attribution"] == {
            "impression_id": r1["impression_id"],
            "rank": 3,
            "arm": "a",
            "team": None,
            "how": "named",
        }
        again = post(srv, "u1", shown[2], impression_id=r1["impression_id"], rank=3, request_id="x1")
        assert again["duplicate"] and again["attribution"] == named["attribution"]
        window = post(srv, "u1", shown[4], event="like")
        assert window["attribution"]["how"] == "window" and window["attribution"]["rank"] == 5
        wrong_rank = post(srv, "u1", shown[0], impression_id=r1["impression_id"], rank=4)
        assert wrong_rank["attribution"]["rank"] == 1 and "corrected" in wrong_rank["attribution"]["how"]
        not_shown = next(f"i{n}" for n in range(200) if f"i{n}" not in shown)
        cases = {
            "item not in the named impression": post(srv, "u1", not_shown, impression_id=r1["impression_id"]),
            "no impression in the window showed the item": post(srv, "u1", not_shown),
            "impression of another user": post(srv, "u2", shown[0], impression_id=r1["impression_id"]),
            "unknown impression id": post(srv, "u1", shown[0], impression_id="f" * 32),
        }
        for reason, out in cases.items():
            assert out["attribution"]["impression_id"] is None and reason in out["attribution"]["how"], out
        time.sleep(1.6)
        late = post(srv, "u1", shown[1], impression_id=r1["impression_id"])
        assert "outside the attribution window" in late["attribution"]["how"]
        assert post(srv, "u1", shown[1])["attribution"]["impression_id"] is None
        bad = c.post(
            "/feedback",
            json={"user_id": "u1", "item_id": shown[0], "event": "click", "impression_id": "nope"},
            headers=srv.auth("writer"),
        )
        assert bad.status_code == 422
        ab = c.get("/admin/ab", headers=srv.auth("admin")).json()
        assert ab["mode"] == "ab" and ab["test"] is None and ab["answer"] is None
        a = ab["arms"]["a"]
        assert a["users"] == 2 and a["impressions"] == 2
        # attributed positives: named, window (a like), rank-corrected; the retry is stored once
        assert a["positive_events"] == 3 and a["lists_with_positive"] == 1
        assert a["mrr_of_clicks"]["mean"] == pytest.approx((1 / 3 + 1 / 5 + 1) / 3)
        assert sum(ab["unattributed_events"].values()) == 6
    store = FeedbackStore(cfg.db_path)  # everything is in the database, not only in memory
    assert store.query("SELECT COUNT(*) FROM ab_impressions")[0][0] == 2
    assert store.query("SELECT COUNT(*) FROM ab_attributions WHERE impression_id IS NULL")[0][0] == 6
    store.close()


def test_interleaving_credits_the_team_that_showed_the_item(runs, tmp_path) -> None:
    cfg = serve_config(
        tmp_path,
        text_encoder="none",
        ab={"run_b": str(runs["pop"]), "mode": "interleave", "min_users": 10},
    )
    with LiveServer(create_app(runs["bpr"], cfg)) as srv:
        c = srv.client
        engines = srv.app.state.srv.engines
        credited = {"a": 0, "b": 0}
        for n in range(40):
            u = f"u{n}"
            r = c.get(f"/recommend/{u}", params={"k": 10}).json()
            assert r["arm"] == "interleaved" and r["model"] == "bprmf+popularity"
            ids = [it["item_id"] for it in r["items"]]
            assert len(ids) == len(set(ids)) == 10
            own = {}
            for arm, eng in engines.items():
                top, _, _ = eng.recommend_index(eng.user_pos.get(u), [], 10, exclude_seen=True)
                own[arm] = [str(eng.item_ids[i]) for i in top]
            # the user clicks every item that only popularity recommended (b's team must own it)
            for rank, item in enumerate(ids, 1):
                if item in own["b"] and item not in own["a"]:
                    out = post(srv, u, item, impression_id=r["impression_id"], rank=rank)
                    assert out["attribution"]["team"] == "b" and out["attribution"]["arm"] == "interleaved"
                    credited["b"] += 1
            # and the top item if bprmf put it first and it was a's pick
            if ids[0] == own["a"][0] and ids[0] not in own["b"]:
                assert post(srv, u, ids[0], impression_id=r["impression_id"])["attribution"]["team"] == "a"
                credited["a"] += 1
        ab = c.get("/admin/ab", headers=srv.auth("admin")).json()
        t = ab["test"]
        assert ab["mode"] == "interleave" and t["users"] == 40
        assert (t["credit_a"], t["credit_b"]) == (credited["a"], credited["b"])
        assert t["wins_b"] > t["wins_a"] and t["binomial_p_value"] < 0.05
        assert ab["answer"]["test"] == "interleaving: sequential binomial"
        assert ab["answer"]["winner"] in ("b", None)
        assert set(ab["guardrails"]) == {"interleaved"} and ab["runs"]["b"]["model"] == "popularity"


def test_a_reload_starts_a_new_experiment(runs, tmp_path) -> None:
    cfg = serve_config(tmp_path, text_encoder="none", ab={"run_b": str(runs["pop"])})
    with LiveServer(create_app(runs["bpr"], cfg)) as srv:
        c, admin = srv.client, srv.auth("admin")
        shown = [c.get(f"/recommend/u{n}").json() for n in range(10)]
        first = c.get("/admin/ab", headers=admin).json()
        assert sum(a["impressions"] for a in first["arms"].values()) == 10
        assert c.post("/admin/reload", json={"run_dir_b": str(runs["knn"])}, headers=admin).status_code == 200
        second = c.get("/admin/ab", headers=admin).json()
        assert second["experiment"] != first["experiment"] and second["arms"] == {}
        assert np.isclose(second["share_b"], 0.5)
        # a click on a list shown before the reload is credited to the experiment that showed it
        old = shown[0]
        post(srv, "u0", old["items"][0]["item_id"], impression_id=old["impression_id"])
        arm = old["arm"]
        assert c.get("/admin/ab", headers=admin).json()["arms"] == {}
        assert srv.app.state.srv.store.query("SELECT experiment FROM ab_attributions") == [
            (first["experiment"],)
        ]
    store = FeedbackStore(cfg.db_path)
    again = [r for r in store.ab_users(first["experiment"], ["click"]) if r[0] == "u0"]
    store.close()
    assert again == [("u0", arm, 1, 1, 1, 1.0, 1)]
