"""docs/web.png: the web page at / on the ML-100K run, in headless Debian chromium.

The page shows a user's recommendations and history (posters and titles), a text search and the
items similar to a clicked search result. Needs chromium + chromium-driver (apt) and selenium.

Usage: ``python benchmarks/serving_screenshot.py --run /tmp/modalrec-serving/ml100k-lightgcn``
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "serving"))
sys.path.insert(0, str(ROOT / "benchmarks"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", type=Path, default=Path("/tmp/modalrec-serving/ml100k-lightgcn"))
    ap.add_argument("--work", type=Path, default=Path("/tmp/modalrec-serving/shot"))
    ap.add_argument("--user", default="13")
    ap.add_argument("--query", default="space adventure with aliens")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "web.png")
    ap.add_argument("--width", type=int, default=1680, help="window width (1680 px: 12 cards a row)")
    a = ap.parse_args()
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select
    from web_browser import chromium_paths, headless_chromium, severe_console_errors, wait_for

    from serving import KEY, Server, write_config

    paths = chromium_paths()
    if paths is None:
        raise SystemExit(
            "needs Debian's chromium and chromium-driver (apt-get install -y chromium chromium-driver)"
        )
    a.work.mkdir(parents=True, exist_ok=True)
    srv = Server(a.run, write_config(a.work, text_encoder="minilm"), workers=1)
    drv = headless_chromium(*paths, width=a.width, height=900)
    try:
        drv.get(srv.url + "/")
        assert wait_for(drv, "return document.body.dataset.ready", 60) == "1"
        # the user list is private by default: the page keeps its key in localStorage
        drv.execute_script("localStorage.setItem('modalrec-key', arguments[0])", KEY)
        drv.get_log("browser")  # the keyless first load's refused /users (401)
        drv.refresh()
        assert wait_for(drv, "return document.body.dataset.ready", 60) == "1"
        Select(drv.find_element(By.ID, "user")).select_by_value(a.user)
        wait_for(drv, f"return document.getElementById('recs-title').textContent.endsWith(' {a.user}')")
        q = drv.find_element(By.ID, "q")
        q.send_keys(a.query)
        q.submit()
        wait_for(drv, "return document.querySelectorAll('#results .card').length > 0", 60)
        drv.find_element(By.CSS_SELECTOR, "#results .card").click()
        wait_for(drv, "return document.querySelectorAll('#similar .card').length > 0", 60)
        drv.execute_script("window.scrollTo(0, 0)")
        wait_for(drv, "return [...document.images].every(i => i.complete)", 60)
        for _ in range(3):  # grow the window to the whole page (its height changes with the width)
            h = drv.execute_script(
                "return document.documentElement.scrollHeight + window.outerHeight - window.innerHeight"
            )
            drv.set_window_size(a.width, min(int(h), 4000))
        wait_for(drv, "return [...document.images].every(i => i.complete)", 60)
        time.sleep(1.0)  # let the smooth scroll to the similar panel finish, then back to the top
        drv.execute_script("window.scrollTo({top: 0, behavior: 'instant'})")
        wait_for(drv, "return window.scrollY === 0")
        errors = severe_console_errors(drv)
        if errors:
            raise SystemExit(f"browser console errors: {errors}")
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
