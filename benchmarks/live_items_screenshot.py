"""docs/live_items.png: the web page's live-items form on an ML-100K ``coldstart`` run, in headless chromium.

A film that is not in the catalogue is added through the form (title, genres, overview and a poster,
with a write key); the page answers with the vectors the run's encoders made and shows the items the
new film is now similar to. The recommendation and history panels are hidden in the picture (they do
not change when an item is added). Needs chromium + chromium-driver (apt), selenium, and a run of the
``coldstart`` model, e.g. one of ``benchmarks/coldstart.py``'s (``--scratch``/run-2025).

Usage: ``python benchmarks/live_items_screenshot.py --run /tmp/modalrec-coldstart-bench/run-2025``
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "serving"))
sys.path.insert(0, str(ROOT / "benchmarks"))

NEW_FILM = {
    "item_id": "toy-story-4",
    "title": "Toy Story 4 (2019)",
    "genres": "Animation|Children's|Comedy",
    "overview": "Woody, Buzz and the toys go on a road trip with Bonnie and a new toy, Forky, "
    "who does not believe he is a toy.",
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", type=Path, default=Path("/tmp/modalrec-coldstart-bench/run-2025"))
    ap.add_argument("--work", type=Path, default=Path("/tmp/modalrec-serving/shot-live"))
    ap.add_argument("--poster-of", default="1", help="catalogue item whose poster the new film uses")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "live_items.png")
    ap.add_argument("--width", type=int, default=1680)
    a = ap.parse_args()
    import httpx
    from selenium.webdriver.common.by import By
    from web_browser import chromium_paths, headless_chromium, severe_console_errors, wait_for

    from serving import KEY, Server, write_config

    paths = chromium_paths()
    if paths is None:
        raise SystemExit(
            "needs Debian's chromium and chromium-driver (apt-get install -y chromium chromium-driver)"
        )
    shutil.rmtree(a.work / "state", ignore_errors=True)  # a fresh live-items store: the film is new
    a.work.mkdir(parents=True, exist_ok=True)
    srv = Server(a.run, write_config(a.work, text_encoder="minilm"), workers=1)
    drv = headless_chromium(*paths, width=a.width, height=900)
    try:
        poster = a.work / "poster.jpg"
        poster.write_bytes(httpx.get(f"{srv.url}/items/{a.poster_of}/image", timeout=30).content)
        drv.get(srv.url + "/")
        assert wait_for(drv, "return document.body.dataset.ready", 60) == "1"
        drv.execute_script("localStorage.setItem('modalrec-key', arguments[0])", KEY)
        drv.get_log("browser")  # the keyless first load's refused /users (401)
        drv.refresh()
        assert wait_for(drv, "return document.body.dataset.ready", 60) == "1"
        wait_for(drv, "return document.querySelector('#item-fields input[data-field=overview]')", 60)
        drv.find_element(By.ID, "item-id").send_keys(NEW_FILM["item_id"])
        for name in ("title", "genres", "overview"):
            drv.find_element(By.CSS_SELECTOR, f"#item-fields input[data-field={name}]").send_keys(
                NEW_FILM[name]
            )
        drv.find_element(By.ID, "item-image").send_keys(str(poster))
        drv.find_element(By.CSS_SELECTOR, "#item-form button[type=submit]").click()
        wait_for(drv, "return document.getElementById('item-result').className === 'ok'", 300)
        wait_for(drv, "return document.querySelectorAll('#similar .card').length > 0", 60)
        # the picture: header, controls, the new film's similar items and the form with its answer
        drv.execute_script(
            "for (const id of ['recs', 'history']) document.getElementById(id).closest('section').hidden = true;"
            "document.getElementById('panel-ab').hidden = true;"
        )
        for _ in range(3):  # grow the window to the whole page
            h = drv.execute_script(
                "return document.documentElement.scrollHeight + window.outerHeight - window.innerHeight"
            )
            drv.set_window_size(a.width, min(int(h), 4000))
        wait_for(drv, "return [...document.images].every(i => i.complete)", 60)
        time.sleep(1.0)  # the smooth scroll to the similar panel, then back to the top
        drv.execute_script("window.scrollTo({top: 0, behavior: 'instant'})")
        wait_for(drv, "return window.scrollY === 0")
        errors = severe_console_errors(drv)
        if errors:
            raise SystemExit(f"browser console errors: {errors}")
        print(drv.find_element(By.ID, "item-result").text)
        a.out.parent.mkdir(parents=True, exist_ok=True)
        drv.save_screenshot(str(a.out))
    finally:
        drv.quit()
        srv.stop()
    try:  # a smaller file for the repository (same pixels, palette PNG)
        from PIL import Image

        img = Image.open(a.out).convert("RGB")
        img.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(a.out, optimize=True)
    except ImportError:
        pass
    print(f"wrote {a.out} ({a.out.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
