"""Private by default: user data needs a read key unless a demo switch opens it, and nothing a caller
without an admin key can read names a filesystem path, a key or a user id it did not send."""

from __future__ import annotations

import logging
import os
import sys
import tempfile
from pathlib import Path

import pytest
from serving_helpers import KEYS, LiveServer, serve_config

from modalrec.serving.app import create_app
from modalrec.serving.auth import hash_key

USER_PATHS = ("/users", "/users/u0/history")


def test_user_data_needs_a_read_key_by_default(live: LiveServer) -> None:
    c = live.client
    for path in USER_PATHS:
        r = c.get(path)
        assert r.status_code == 401, (path, r.text)
        err = r.json()["error"]
        assert err["code"] == "missing_api_key" and "open_user_data" in err["message"], err
        assert r.headers["www-authenticate"] == "Bearer"
        bad = c.get(path, headers={"Authorization": "Bearer not-a-key"})
        assert bad.status_code == 401 and bad.json()["error"]["code"] == "invalid_api_key"
        for who in ("reader", "writer", "admin"):
            assert c.get(path, headers=live.auth(who)).status_code == 200, (path, who)
    assert c.get("/users", headers=live.auth("reader")).json()["users"][:2] == ["u0", "u1"]
    hist = c.get("/users/u0/history", headers=live.auth("reader")).json()
    assert hist["known_user"] and hist["items"]
    # the catalogue reads stay open (read_requires_key = false)
    assert c.get("/recommend/u0").status_code == 200 and c.get("/items/i4").status_code == 200


def test_key_without_read_scope_is_refused(runs, tmp_path: Path) -> None:
    cfg = serve_config(tmp_path, text_encoder="none")
    cfg.auth.keys.append(
        type(cfg.auth.keys[0])(name="feed-only", hash=hash_key("mr_feed_only", "sha256"), scopes=["write"])
    )
    with LiveServer(create_app(runs["pop"], cfg)) as srv:
        r = srv.client.get("/users", headers={"Authorization": "Bearer mr_feed_only"})
        assert r.status_code == 403 and "'read'" in r.json()["error"]["message"]


def test_open_user_data_demo_switch(runs, tmp_path: Path) -> None:
    cfg = serve_config(tmp_path, auth={"open_user_data": True}, text_encoder="none")
    with LiveServer(create_app(runs["pop"], cfg)) as srv:
        for path in USER_PATHS:
            assert srv.client.get(path).status_code == 200, path
    # read_requires_key still closes them (the switch opens them as far as the catalogue, no further)
    cfg = serve_config(
        tmp_path, auth={"open_user_data": True, "read_requires_key": True}, text_encoder="none"
    )
    with LiveServer(create_app(runs["pop"], cfg)) as srv:
        assert srv.client.get("/users").status_code == 401
        assert srv.client.get("/users", headers=srv.auth("reader")).status_code == 200


def test_user_data_without_any_key_configured(runs, tmp_path: Path) -> None:
    cfg = serve_config(tmp_path, auth={"keys": []}, text_encoder="none")
    with LiveServer(create_app(runs["pop"], cfg)) as srv:
        r = srv.client.get("/users/u0/history")
        assert r.status_code == 401 and r.json()["error"]["code"] == "auth_not_configured", r.text
        assert srv.client.get("/recommend/u0").status_code == 200


def test_health_names_run_directories_only_to_admin(live: LiveServer, runs) -> None:
    c = live.client
    for headers in ({}, live.auth("reader"), live.auth("writer"), {"Authorization": "Bearer wrong"}):
        r = c.get("/health", headers=headers)
        assert r.status_code == 200, r.text  # liveness answers probes without a key
        h = r.json()
        assert h["view"] == "public" and "run_dir" not in h["arms"]["a"], headers
        assert h["arms"]["a"]["model"] == "bprmf" and h["arms"]["a"]["index"]["kind"] == "exact"
        assert str(runs["root"]) not in r.text
    h = c.get("/health", headers=live.auth("admin")).json()
    assert h["view"] == "admin" and h["arms"]["a"]["run_dir"] == str(runs["bpr"])


def forbidden_strings(runs, tmp_path: Path) -> list[str]:
    """Filesystem locations that must not appear in an open answer."""
    found = [
        str(runs["root"]),
        str(tmp_path),
        tempfile.gettempdir() + os.sep,
        str(Path.home()) + os.sep,
        sys.prefix,
        "site-packages",
        *KEYS.values(),
        "sha256$",
        "scrypt$",
    ]
    if len(os.getcwd()) > 1:
        found.append(os.getcwd())
    return found


def open_requests() -> list[tuple[str, str, dict]]:
    """Every open endpoint (and the error answers a caller without a key can provoke)."""
    return [
        ("get", "/", {}),
        ("get", "/static/app.js", {}),
        ("get", "/static/index.html", {}),
        ("get", "/openapi.json", {}),
        ("get", "/docs", {}),
        ("get", "/health", {}),
        ("get", "/metrics", {}),
        ("get", "/recommend/u0", {"params": {"k": 5}}),
        ("get", "/recommend/secret-visitor-42", {}),
        ("get", "/similar/i4", {"params": {"modality": "image"}}),
        ("get", "/similar/i9", {"params": {"modality": "image"}}),
        ("get", "/similar/i4", {"params": {"modality": "audio"}}),
        ("get", "/search", {"params": {"q": "cooking"}}),
        ("get", "/items/i6", {}),
        ("get", "/items/i9/image", {}),
        ("get", "/items/nope", {}),
        ("get", "/users", {}),
        ("get", "/users/secret-visitor-42/history", {}),
        ("get", "/admin/ab", {}),
        ("post", "/admin/reload", {"json": {"run_dir": "/etc"}}),
        ("post", "/feedback", {"json": {"user_id": "u0", "item_id": "i1", "event": "click"}}),
        ("get", "/no/such/route", {}),
        ("get", "/recommend/u0", {"params": {"k": "ten"}}),
    ]


def test_open_answers_show_no_paths_keys_or_user_ids(live: LiveServer, runs, tmp_path: Path) -> None:
    c = live.client
    bad = forbidden_strings(runs, tmp_path)
    texts = {}
    for method, path, kwargs in open_requests():
        r = getattr(c, method)(path, **kwargs)
        assert r.status_code < 500, (path, r.status_code, r.text)
        texts[(method, path)] = r.text
        leaks = [s for s in bad if s in r.text]
        assert not leaks, (method, path, leaks, r.text[:500])
    # user ids a caller sent do not come back from the operational endpoints
    for path in ("/health", "/metrics"):
        text = c.get(path).text
        assert "secret-visitor-42" not in text and '"u0"' not in text, path
    # and the paths are really there for an admin (the check above could not pass by accident)
    admin = c.get("/health", headers=live.auth("admin")).text
    assert str(runs["root"]) in admin


@pytest.mark.parametrize("who", ["reader", "writer"])
def test_keys_without_admin_see_no_paths(live: LiveServer, runs, tmp_path: Path, who: str) -> None:
    bad = forbidden_strings(runs, tmp_path)
    for method, path, kwargs in open_requests():
        r = getattr(live.client, method)(path, headers=live.auth(who), **kwargs)
        if method == "post" and path == "/feedback":
            continue  # a writer's feedback is stored; its answer names only the ids sent
        leaks = [s for s in bad if s in r.text]
        assert not leaks, (who, method, path, leaks, r.text[:500])


def log_text(records: list[logging.LogRecord]) -> str:
    """What the log shows: every record's message and its exception's message (traceback frames name
    the installed code's files, not the data; they are left out)."""
    out = []
    for r in records:
        out.append(r.getMessage())
        if r.exc_info and r.exc_info[1] is not None:
            out.append(str(r.exc_info[1]))
    return "\n".join(out)


def test_server_logs_show_no_run_or_state_paths(
    runs, tmp_path: Path, text_encoder, caplog: pytest.LogCaptureFixture
) -> None:
    """Start-up, requests, a reload and a refused reload: no log line names the run or state directory."""
    caplog.set_level(logging.DEBUG)
    cfg = serve_config(tmp_path)
    with LiveServer(create_app(runs["bpr"], cfg, encode_text=text_encoder)) as srv:
        c = srv.client
        assert c.get("/recommend/u0", params={"k": 5}).status_code == 200
        assert c.get("/similar/i4", params={"modality": "image"}).status_code == 200
        fb = {"user_id": "u0", "item_id": "i1", "event": "click"}
        assert c.post("/feedback", json=fb, headers=srv.auth("writer")).status_code == 200
        admin = srv.auth("admin")
        ok = c.post("/admin/reload", json={"run_dir": str(runs["knn"])}, headers=admin)
        assert ok.status_code == 200, ok.text
        refused = c.post("/admin/reload", json={"run_dir": str(runs["broken"])}, headers=admin)
        assert refused.status_code == 422, refused.text
        # the admin's answer names the directory (the check below could not pass by accident)
        assert str(runs["broken"]) in refused.text
    text = log_text(caplog.records)
    assert "loaded run" in text and "reload refused" in text, text  # the lines were captured
    bad = [str(runs["root"]), str(Path(runs["root"]).resolve()), str(tmp_path), str(tmp_path.resolve())]
    leaks = [line for line in text.splitlines() if any(b in line for b in bad)]
    assert not leaks, leaks
