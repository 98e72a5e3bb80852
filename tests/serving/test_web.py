"""The page at / in a real headless browser (Debian chromium + chromedriver via selenium)."""

from __future__ import annotations

from pathlib import Path

import pytest
from serving_helpers import THEMES, LiveServer
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
            assert wait_for(drv, "return document.body.dataset.ready") == "error"
            assert "api key" in drv.find_element(By.ID, "status").text.lower()
            key = drv.find_element(By.ID, "apikey")
            key.send_keys(KEYS["reader"])
            drv.execute_script("document.getElementById('apikey').dispatchEvent(new Event('change'))")
            drv.refresh()  # the key is kept in localStorage
            assert wait_for(drv, "return document.body.dataset.ready") == "1"
            assert len(cards(drv, "recs")) == 12
        finally:
            drv.quit()
