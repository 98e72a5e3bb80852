"""Every read endpoint on a live server, malformed input, auth failures and the OpenAPI schema."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from serving_helpers import KEYS, THEMES, LiveServer, item_cluster, serve_config

from modalrec.serving.app import create_app


def cluster_of(item_id: str) -> int:
    return item_cluster(int(item_id[1:]))


def test_recommend_known_and_unknown_user(live: LiveServer) -> None:
    c = live.client
    r = c.get("/recommend/u0", params={"k": 10})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["source"] == "model" and not body["fallback"] and body["known_user"]
    ids = [it["item_id"] for it in body["items"]]
    assert len(ids) == 10 and len(set(ids)) == 10
    scores = [it["score"] for it in body["items"]]
    assert scores == sorted(scores, reverse=True)
    hist = c.get("/users/u0/history", params={"limit": 500}, headers=live.auth("reader")).json()
    hist = {it["item_id"] for it in hist["items"]}
    assert not hist & set(ids), "seen items must be excluded by default"
    # the model learned the clusters: user 0 (cluster 0) gets mostly cluster-0 items
    assert np.mean([cluster_of(i) == 0 for i in ids]) >= 0.7
    # exclude_seen=false may return seen items
    r2 = c.get("/recommend/u0", params={"k": 80, "exclude_seen": "false"}).json()
    assert len(r2["items"]) == 80
    # unknown user: popularity fallback, flagged
    r3 = c.get("/recommend/somebody-new").json()
    assert r3["source"] == "popularity" and r3["fallback"] and not r3["known_user"]
    for it in r3["items"]:  # every tenth item of the catalogue has no image
        has_image = int(it["item_id"][1:]) % 10 != 9
        assert it["image_url"] == (f"/items/{it['item_id']}/image" if has_image else None), it


def test_similar_search_items(live: LiveServer) -> None:
    c = live.client
    for modality in ("fused", "text", "image"):
        r = c.get("/similar/i4", params={"k": 5, "modality": modality})
        assert r.status_code == 200, (modality, r.text)
        items = r.json()["items"]
        assert len(items) == 5 and all(it["item_id"] != "i4" for it in items)
        if modality != "fused":  # content features carry the cluster exactly
            assert all(cluster_of(it["item_id"]) == 0 for it in items), (modality, items)
    assert c.get("/similar/i4", params={"modality": "audio"}).status_code == 400
    assert c.get("/similar/i9", params={"modality": "image"}).json()["error"]["code"] == "no_vector"
    r = c.get("/search", params={"q": "a cooking recipe", "k": 5})
    assert r.status_code == 200, r.text
    got = r.json()["items"]
    assert len(got) == 5 and all(THEMES[2] in it["title"] for it in got)
    assert c.get("/search", params={"q": "x", "modality": "image"}).status_code == 400
    d = c.get("/items/i6").json()
    assert d["title"].startswith(THEMES[2]) and d["media"] == {"image": True}
    assert set(d["modalities"]) == {"text", "image"} and d["popularity"] > 0
    img = c.get(d["image_url"])
    assert img.status_code == 200 and img.headers["content-type"] == "image/png"
    assert img.content.startswith(b"\x89PNG")
    assert c.get("/items/i9/image").status_code == 404
    users = c.get("/users", params={"limit": 3}, headers=live.auth("reader")).json()
    assert users["total"] == 120 and users["users"] == ["u0", "u1", "u2"]


def test_health_metrics_openapi(live: LiveServer) -> None:
    c = live.client
    h = c.get("/health").json()
    a = h["arms"]["a"]
    assert h["status"] == "ok" and a["model"] == "bprmf" and a["items"] == 80
    assert a["index"]["kind"] == "exact" and a["index"]["recall_at_10"] == 1.0
    c.get("/recommend/u1")
    text = c.get("/metrics").text
    for name in (
        "modalrec_requests_total",
        "modalrec_request_seconds_bucket",
        "modalrec_recommendations_total",
        "modalrec_index_items",
        "modalrec_index_recall_at_10",
    ):
        assert name in text, name
    assert 'route="/recommend/{user_id}"' in text and "u1" not in text
    spec = c.get("/openapi.json").json()
    for p in (
        "/recommend/{user_id}",
        "/similar/{item_id}",
        "/search",
        "/items/{item_id}",
        "/feedback",
        "/admin/reload",
    ):
        assert p in spec["paths"], p
    assert "RecommendResponse" in spec["components"]["schemas"]
    page = c.get("/")
    assert page.status_code == 200 and '<script src="/static/app.js">' in page.text
    assert "http" not in c.get("/static/app.js").text.replace("httpx", ""), (
        "the page must not load external code"
    )


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "code"),
    [
        ("get", "/recommend/u0", {"params": {"k": 0}}, 422, "invalid_request"),
        ("get", "/recommend/u0", {"params": {"k": 100000}}, 422, "invalid_request"),
        ("get", "/recommend/u0", {"params": {"k": "ten"}}, 422, "invalid_request"),
        ("get", "/recommend/u0", {"params": {"exclude_seen": "maybe"}}, 422, "invalid_request"),
        ("get", "/recommend/bad%01id", {}, 422, "invalid_request"),
        ("get", "/similar/nope", {}, 404, "unknown_item"),
        ("get", "/similar/i1", {"params": {"modality": "Bad Modality"}}, 422, "invalid_request"),
        ("get", "/items/nope", {}, 404, "unknown_item"),
        ("get", "/search", {}, 422, "invalid_request"),
        ("get", "/search", {"params": {"q": "   "}}, 422, "invalid_request"),
        ("get", "/search", {"params": {"q": "x" * 501}}, 422, "invalid_request"),
        ("get", "/no/such/route", {}, 404, "not_found"),
        ("delete", "/feedback", {}, 405, "method_not_allowed"),
    ],
)
def test_malformed_reads(
    live: LiveServer, method: str, path: str, kwargs: dict, status: int, code: str
) -> None:
    r = getattr(live.client, method)(path, **kwargs)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["status"] == status and err["code"] == code and err["message"]


def write(live: LiveServer, body: object, who: str | None = "writer", **kw: object):
    headers = live.auth(who) if who else {}
    return live.client.post("/feedback", json=body, headers=headers, **kw)


def test_feedback_auth(live: LiveServer) -> None:
    ok = {"user_id": "u3", "item_id": "i2", "event": "click"}
    r = write(live, ok, who=None)
    assert r.status_code == 401 and r.json()["error"]["code"] == "missing_api_key"
    assert r.headers["www-authenticate"] == "Bearer"
    r = live.client.post("/feedback", json=ok, headers={"Authorization": "Bearer not-a-key"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    r = live.client.post("/feedback", json=ok, headers={"Authorization": f"Basic {KEYS['writer']}"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "missing_api_key"
    r = write(live, ok, who="reader")  # scrypt-hashed key, valid but read-only
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    r = write(live, ok)
    assert r.status_code == 200 and r.json()["duplicate"] is False and r.json()["arm"] == "a"
    r = live.client.post("/admin/reload", json={}, headers=live.auth("writer"))
    assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"
    assert live.client.get("/admin/ab", headers=live.auth("writer")).status_code == 403
    r = live.client.get("/admin/ab")
    assert r.status_code == 401 and r.json()["error"]["code"] == "missing_api_key"


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"user_id": "u1", "item_id": "i2"}, "invalid_request"),
        ({"user_id": "u1", "item_id": "i2", "event": "click", "extra": 1}, "invalid_request"),
        ({"user_id": "", "item_id": "i2", "event": "click"}, "invalid_request"),
        ({"user_id": "u1", "item_id": "i2", "event": "CLICK!"}, "invalid_request"),
        ({"user_id": "u1", "item_id": "i2", "event": "teleport"}, "unknown_event"),
        ({"user_id": "u1", "item_id": "i2", "event": "rating"}, "invalid_request"),
        ({"user_id": "u1", "item_id": "i2", "event": "click", "value": "high"}, "invalid_request"),
        ({"user_id": "u1", "item_id": "zzz", "event": "click"}, "unknown_item"),
        (["not", "an", "object"], "invalid_request"),
    ],
)
def test_malformed_feedback(live: LiveServer, body: object, code: str) -> None:
    r = write(live, body)
    assert r.status_code == (404 if code == "unknown_item" else 422), r.text
    assert r.json()["error"]["code"] == code


def test_body_limits_and_bad_json(live: LiveServer) -> None:
    h = {**live.auth("writer"), "Content-Type": "application/json"}
    r = live.client.post("/feedback", content=b"{not json", headers=h)
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request"
    r = live.client.post(
        "/feedback", content=b'{"user_id": "u1", "item_id": "i1", "event": "click", "value": NaN}', headers=h
    )
    assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_request"
    assert r.json()["error"]["message"].startswith("body.value:"), r.text
    big = b'{"user_id": "' + b"a" * 20_000 + b'"}'
    r = live.client.post("/feedback", content=big, headers=h)
    assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"

    def chunks():  # no Content-Length: the limit is enforced while reading
        for _ in range(40):
            yield b" " * 1000

    r = live.client.post("/feedback", content=chunks(), headers=h)
    assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"


def test_read_key_required_and_masked_logs(runs, tmp_path, caplog: pytest.LogCaptureFixture) -> None:
    cfg = serve_config(tmp_path, auth={"read_requires_key": True}, text_encoder="none")
    with (
        LiveServer(create_app(runs["pop"], cfg)) as srv,
        caplog.at_level(logging.INFO, "modalrec.serving.access"),
    ):
        r = srv.client.get("/recommend/secret-user-42")
        assert r.status_code == 401 and r.json()["error"]["code"] == "missing_api_key"
        r = srv.client.get("/recommend/secret-user-42", headers=srv.auth("reader"))
        assert r.status_code == 200 and r.json()["model"] == "popularity"
        assert srv.client.get("/health").status_code == 200  # liveness stays open
        assert srv.client.get("/search", params={"q": "x"}, headers=srv.auth("reader")).status_code == 503
    lines = [r.getMessage() for r in caplog.records if r.name == "modalrec.serving.access"]
    assert any("/recommend/{user_id} user=u:" in line for line in lines), lines
    assert not any("secret-user-42" in line for line in lines)
