"""Impression logging: committed by the writer on its own (no wake per request), or off ([ab] log_impressions)."""

from __future__ import annotations

import time

from serving_helpers import LiveServer, serve_config

from modalrec.serving.app import create_app
from modalrec.serving.feedback import FeedbackStore


def _impressions(path: object) -> int:
    reader = FeedbackStore(path)  # type: ignore[arg-type]
    try:
        return int(reader.query("SELECT COUNT(*) FROM ab_impressions")[0][0])
    finally:
        reader.close()


def test_queued_impressions_reach_another_reader_without_a_feedback_commit(runs, tmp_path) -> None:
    cfg = serve_config(tmp_path, text_encoder="none")
    with LiveServer(create_app(runs["pop"], cfg)) as srv:
        for u in ("u1", "u2", "u3"):
            assert srv.client.get(f"/recommend/{u}", params={"k": 3}).status_code == 200
        seen = 0
        for _ in range(200):  # the writer's periodic flush (impression_flush_s), not a request, commits them
            seen = _impressions(cfg.db_path)
            if seen == 3:
                break
            time.sleep(0.05)
        assert seen == 3


def test_log_impressions_off_stores_none_and_feedback_is_unattributed(runs, tmp_path) -> None:
    cfg = serve_config(tmp_path, text_encoder="none", ab={"log_impressions": False})
    with LiveServer(create_app(runs["pop"], cfg)) as srv:
        r = srv.client.get("/recommend/u1", params={"k": 3}).json()
        item = r["items"][0]["item_id"]
        fb = srv.client.post(
            "/feedback",
            json={"user_id": "u1", "item_id": item, "event": "click", "impression_id": r["impression_id"]},
            headers=srv.auth("writer"),
        )
        assert fb.status_code == 200, fb.text
        assert fb.json()["attribution"]["impression_id"] is None
        assert "unknown impression id" in fb.json()["attribution"]["how"]
    assert _impressions(cfg.db_path) == 0
