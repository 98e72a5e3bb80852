"""The page at / in a real headless browser (Debian chromium + chromedriver via selenium)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from serving_helpers import KEYS, THEMES, LiveServer
from web_browser import chromium_paths, headless_chromium, images_loaded, severe_console_errors, wait_for

PATHS = chromium_paths()
pytestmark = pytest.mark.skipif(
    PATHS is None, reason="Debian's chromium and chromium-driver are not installed (apt-get install ...)"
)


def cards(drv, container: str) -> list[dict]:
    return drv.execute_script(
        "return [...document.querySelectorAll('#' + arguments[0] + ' .card')]"
        ".map(c => ({id: c.dataset.itemId, title: c.querySelector('.t').textContent}))",
        container,
    )


def test_page_recommend_search_similar(live: LiveServer, tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    assert PATHS is not None
    drv = headless_chromium(*PATHS)
    try:
        drv.get(live.url + "/")
        assert wait_for(drv, "return document.body.dataset.ready") == "1"
        # the user list and histories are private by default: the page's key (kept in localStorage)
        drv.execute_script("localStorage.setItem('modalrec-key', arguments[0])", KEYS["reader"])
        drv.get_log("browser")  # drops the first load's refused /users (401) from the log
        drv.refresh()
        assert wait_for(drv, "return document.body.dataset.ready") == "1"
        assert "bprmf" in drv.find_element(By.ID, "status").text
        # first user is selected and recommended on load: 12 cards with titles and decoded posters
        first = cards(drv, "recs")
        assert len(first) == 12 and all(c["title"] for c in first)
        assert "u0" in drv.find_element(By.ID, "recs-title").text
        wait_for(drv, "return [...document.querySelectorAll('#recs img')].every(i => i.complete)")
        loaded = images_loaded(drv, "recs")
        assert loaded and all(loaded)
        history = cards(drv, "history")
        assert history and not {c["id"] for c in history} & {c["id"] for c in first}
        # pick another user from the list
        Select(drv.find_element(By.ID, "user")).select_by_value("u1")
        wait_for(drv, "return document.getElementById('recs-title').textContent.endsWith('u1')")
        wait_for(drv, "return document.querySelectorAll('#recs .card').length === 12")
        # unknown user typed in: flagged popularity fallback
        drv.find_element(By.ID, "user-free").send_keys("visitor-17")
        drv.find_element(By.ID, "go").click()
        wait_for(drv, "return document.getElementById('recs-note').textContent.includes('fallback')")
        # text search
        q = drv.find_element(By.ID, "q")
        q.send_keys("a kitchen recipe for dinner")
        q.submit()
        wait_for(drv, "return document.querySelectorAll('#results .card').length === 12")
        results = cards(drv, "results")
        assert sum(THEMES[2] in c["title"] for c in results[:5]) == 5, results
        # click a result: similar items of that item
        clicked = results[0]
        drv.find_element(By.CSS_SELECTOR, f'#results .card[data-item-id="{clicked["id"]}"]').click()
        wait_for(drv, "return !document.getElementById('panel-similar').hidden")
        wait_for(drv, "return document.querySelectorAll('#similar .card').length > 0")
        assert clicked["title"] in drv.find_element(By.ID, "similar-title").text
        similar = cards(drv, "similar")
        assert clicked["id"] not in {c["id"] for c in similar}
        assert not severe_console_errors(drv)
        shot = tmp_path / "web.png"
        assert drv.save_screenshot(str(shot))
        assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
    finally:
        drv.quit()


def test_page_without_a_key_keeps_user_data_private(live: LiveServer) -> None:
    """No key: the user list and history say why they are empty; a typed user id still gets recommendations."""
    from selenium.webdriver.common.by import By

    assert PATHS is not None
    drv = headless_chromium(*PATHS)
    try:
        drv.get(live.url + "/")
        assert wait_for(drv, "return document.body.dataset.ready") == "1"
        assert "bprmf" in drv.find_element(By.ID, "status").text
        assert drv.find_element(By.ID, "user").get_attribute("disabled") is not None
        assert "open_user_data" in drv.find_element(By.ID, "user-note").text
        assert cards(drv, "recs") == []
        drv.find_element(By.ID, "user-free").send_keys("u3")
        drv.find_element(By.ID, "go").click()
        wait_for(drv, "return document.querySelectorAll('#recs .card').length === 12")
        wait_for(drv, "return document.querySelector('#history .error') !== null")
        assert "read scope" in drv.find_element(By.CSS_SELECTOR, "#history .error").text
        assert cards(drv, "history") == []
        errors = severe_console_errors(drv)  # the browser logs the refused /users requests (401)
        assert all("401" in e for e in errors), errors
    finally:
        drv.quit()


def test_page_shows_api_errors(runs, tmp_path: Path) -> None:
    """Reads that need a key: the page says so instead of failing silently, and works once a key is set."""
    from selenium.webdriver.common.by import By
    from serving_helpers import KEYS, serve_config

    from modalrec.serving.app import create_app

    assert PATHS is not None
    cfg = serve_config(tmp_path, auth={"read_requires_key": True}, text_encoder="none")
    with LiveServer(create_app(runs["pop"], cfg)) as srv:
        drv = headless_chromium(*PATHS)
        try:
            drv.get(srv.url + "/")
            # the user list says it needs a key; a typed user's recommendations say so too
            assert wait_for(drv, "return document.body.dataset.ready") == "1"
            assert "api key" in drv.find_element(By.ID, "user-note").text.lower()
            drv.find_element(By.ID, "user-free").send_keys("u0")
            drv.find_element(By.ID, "go").click()
            wait_for(drv, "return document.querySelector('#recs .error') !== null")
            assert "api key" in drv.find_element(By.CSS_SELECTOR, "#recs .error").text.lower()
            drv.find_element(By.ID, "user-free").clear()
            key = drv.find_element(By.ID, "apikey")
            key.send_keys(KEYS["reader"])
            drv.execute_script("document.getElementById('apikey').dispatchEvent(new Event('change'))")
            drv.refresh()  # the key is kept in localStorage
            assert wait_for(drv, "return document.body.dataset.ready") == "1"
            assert len(cards(drv, "recs")) == 12
        finally:
            drv.quit()


def _ab_page(srv: LiveServer) -> tuple[Any, dict]:
    """Open the page, enter the admin key, show the experiment; returns the driver and /admin/ab."""
    from selenium.webdriver.common.by import By
    from serving_helpers import KEYS

    assert PATHS is not None
    drv = headless_chromium(*PATHS)
    drv.get(srv.url + "/")
    assert wait_for(drv, "return document.body.dataset.ready") == "1"
    drv.find_element(By.ID, "apikey").send_keys(KEYS["admin"])
    drv.execute_script("document.getElementById('apikey').dispatchEvent(new Event('change'))")
    drv.get_log("browser")  # drops the keyless first load's refused /users (401, user data is private)
    drv.refresh()  # the key is kept in localStorage
    assert wait_for(drv, "return document.body.dataset.ready") == "1"
    drv.find_element(By.ID, "ab-load").click()
    assert wait_for(drv, "return document.getElementById('ab').dataset.loaded") == "1"
    report = srv.client.get("/admin/ab", headers=srv.auth("admin")).json()
    return drv, report


def _cells(drv: Any, key: str) -> list[str]:
    return drv.execute_script(
        "const r = document.querySelector('#ab tr[data-key=\"' + arguments[0] + '\"]');"
        "return r ? [...r.cells].map(c => c.textContent) : null;",
        key,
    )


def test_admin_view_shows_the_experiment(runs, tmp_path: Path) -> None:
    """The page's experiment panel shows /admin/ab: per-arm metrics, the answering test and guardrails."""
    from serving_helpers import serve_config

    from modalrec.serving.app import create_app

    cfg = serve_config(tmp_path, text_encoder="none", ab={"run_b": str(runs["knn"]), "min_users": 5})
    with LiveServer(create_app(runs["bpr"], cfg)) as srv:
        for n in range(40):
            r = srv.client.get(f"/recommend/u{n}").json()
            if r["arm"] == "b" or n % 3 == 0:
                body = {"user_id": f"u{n}", "item_id": r["items"][0]["item_id"], "event": "click"}
                body["impression_id"] = r["impression_id"]
                assert srv.client.post("/feedback", json=body, headers=srv.auth("writer")).status_code == 200
        drv, rep = _ab_page(srv)
        try:
            for arm in ("a", "b"):
                row = _cells(drv, arm)
                a = rep["arms"][arm]
                assert row[:4] == [arm, rep["runs"][arm]["model"], str(a["users"]), str(a["impressions"])]
                assert float(row[4].split(" ± ")[0]) == pytest.approx(a["ctr"]["mean"], rel=1e-3)
            answer = drv.find_element("id", "ab-answer").text
            assert rep["answer"]["test"] in answer and rep["answer"]["why"][:40] in answer
            assert _cells(drv, "sample-ratio mismatch") is not None
            seq = _cells(drv, f"sequential ({rep['test']['sequential']['method']})")
            assert seq is not None and "Λ" in seq[1]
            assert not severe_console_errors(drv)
        finally:
            drv.quit()


def test_admin_view_interleaving(runs, tmp_path: Path) -> None:
    from serving_helpers import serve_config

    from modalrec.serving.app import create_app

    ab = {"run_b": str(runs["pop"]), "mode": "interleave", "min_users": 5}
    with LiveServer(create_app(runs["bpr"], serve_config(tmp_path, text_encoder="none", ab=ab))) as srv:
        for n in range(12):
            r = srv.client.get(f"/recommend/u{n}").json()
            body = {"user_id": f"u{n}", "item_id": r["items"][1]["item_id"], "event": "click"}
            assert srv.client.post("/feedback", json=body, headers=srv.auth("writer")).status_code == 200
        drv, rep = _ab_page(srv)
        try:
            t = rep["test"]
            assert _cells(drv, "clicks credited a · b")[1] == f"{t['credit_a']} · {t['credit_b']}"
            assert _cells(drv, "user wins a · b · ties")[1] == f"{t['wins_a']} · {t['wins_b']} · {t['ties']}"
            assert "interleaving" in drv.find_element("id", "ab-answer").text
            assert not severe_console_errors(drv)
        finally:
            drv.quit()


@pytest.fixture(scope="module")
def coldstart_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small coldstart run (modalrec fit, char-ngram text) that can place items added live."""
    from live_helpers import fit_run

    return fit_run(tmp_path_factory.mktemp("web-live"), "coldstart")


def _submit(drv: Any, form: str) -> tuple[str, str]:
    """Submit ``#form`` and wait for the live-items answer: its text and class (ok / error)."""
    drv.execute_script("document.getElementById('item-result').textContent = ''")
    drv.find_element("css selector", f"#{form} button[type=submit]").click()
    wait_for(
        drv, "const t = document.getElementById('item-result').textContent; return t && !t.endsWith('…')", 60
    )
    return tuple(
        drv.execute_script(
            "const r = document.getElementById('item-result'); return [r.textContent, r.className];"
        )
    )


def test_add_and_hide_a_live_item_from_the_page(coldstart_run: Path, tmp_path: Path) -> None:
    """The live-items form: a corrupt picture is refused with the server's reason (nothing stored); the
    item with a good picture is added, shown with its similar items and found by search; hiding it
    removes it from search."""
    from live_helpers import query_encoder
    from selenium.webdriver.common.by import By
    from serving_helpers import KEYS, png_bytes, serve_config

    from modalrec.serving.app import create_app

    assert PATHS is not None
    good, bad = tmp_path / "sofa.png", tmp_path / "broken.png"
    good.write_bytes(png_bytes((200, 40, 40), size=16))
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])  # cut inside its header
    cfg = serve_config(tmp_path, text_encoder="none")
    with LiveServer(create_app(coldstart_run, cfg, encode_text=query_encoder())) as srv:
        drv = headless_chromium(*PATHS)
        try:
            drv.get(srv.url + "/")
            assert wait_for(drv, "return document.body.dataset.ready") == "1"
            drv.execute_script("localStorage.setItem('modalrec-key', arguments[0])", KEYS["writer"])
            drv.get_log("browser")  # the keyless first load's refused /users (401)
            drv.refresh()
            assert wait_for(drv, "return document.body.dataset.ready") == "1"
            # one input per catalogue text column, learned from a catalogue item
            fields = drv.execute_script(
                "return [...document.querySelectorAll('#item-fields input')].map(i => i.dataset.field)"
            )
            assert fields == ["title", "colour"], fields
            drv.find_element(By.ID, "item-id").send_keys("n-red")
            drv.find_element(By.CSS_SELECTOR, "#item-fields input[data-field=title]").send_keys(
                "red velvet sofa chair"
            )
            drv.find_element(By.CSS_SELECTOR, "#item-fields input[data-field=colour]").send_keys("red")
            # a corrupt picture: the server's reason, and nothing stored
            drv.find_element(By.ID, "item-image").send_keys(str(bad))
            text, cls = _submit(drv, "item-form")
            files = {"image": ("broken.png", bad.read_bytes(), "image/png")}
            api = srv.client.post(
                "/items", data={"item_id": "n-red", "title": "x"}, files=files, headers=srv.auth("writer")
            )
            err = api.json()["error"]
            assert api.status_code == 422 and cls == "error", (text, api.text)
            # the page shows the server's code and reason (the reason's detail names a per-request object)
            assert text.startswith(f"not added: {err['code']}: {err['message'].split(' (')[0]}"), text
            assert srv.client.get("/items/n-red").status_code == 404
            # the good picture: added, its similar items shown at once (the red word cluster)
            drv.execute_script("document.getElementById('item-image').value = ''")
            drv.find_element(By.ID, "item-image").send_keys(str(good))
            text, cls = _submit(drv, "item-form")
            assert cls == "ok" and text.startswith("added n-red · vectors: text"), text
            wait_for(
                drv, "return document.getElementById('similar-title').textContent.includes('red velvet')"
            )
            wait_for(drv, "return document.querySelectorAll('#similar .card').length > 0")
            similar = [c["id"] for c in cards(drv, "similar")]
            assert "n-red" not in similar and all(int(i[1:]) % 3 == 0 for i in similar[:5]), similar
            detail = srv.client.get("/items/n-red").json()
            assert detail["live"] and detail["fields"] == {"title": "red velvet sofa chair", "colour": "red"}
            # found by search, with its picture served
            q = drv.find_element(By.ID, "q")
            q.send_keys("red velvet sofa chair")
            q.submit()
            wait_for(drv, "return document.querySelectorAll('#results .card').length > 0")
            assert cards(drv, "results")[0]["id"] == "n-red"
            wait_for(drv, "return [...document.querySelectorAll('#results img')].every(i => i.complete)")
            assert images_loaded(drv, "results")[0]
            # hide it: gone from search
            assert drv.find_element(By.ID, "hide-id").get_attribute("value") == "n-red"
            text, cls = _submit(drv, "hide-form")
            assert cls == "ok" and text == "hidden everywhere: n-red", text
            drv.execute_script("document.getElementById('results').replaceChildren()")
            drv.find_element(By.CSS_SELECTOR, "#search-form button").click()
            wait_for(drv, "return document.querySelectorAll('#results .card').length > 0")
            assert "n-red" not in {c["id"] for c in cards(drv, "results")}
            assert srv.client.get("/items/n-red").status_code == 404
            # hiding it again: the server's reason
            text, cls = _submit(drv, "hide-form")
            assert cls == "error" and text.startswith("not hidden: unknown_item"), text
            errors = severe_console_errors(drv)  # the refused POST (422) and DELETE (404) only
            assert all(" 422 " in e or " 404 " in e for e in errors), errors
        finally:
            drv.quit()
