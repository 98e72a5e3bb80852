"""docs/ab.png: the web page's experiment panel (GET /admin/ab) over the state that benchmarks/ab.py's
live A/B section left behind (EASE vs Popularity, 300 simulated visitors), in headless Debian chromium.

Usage: ``python benchmarks/ab_screenshot.py --state /tmp/ab-live-ab-XXXX`` (the folder the live
section created; its impressions and attributions are what the panel shows).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "serving"))
sys.path.insert(0, str(ROOT / "benchmarks"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--state", type=Path, required=True)
    ap.add_argument("--runs", type=Path, default=Path("/tmp/modalrec-ab"))
    ap.add_argument("--mode", default="ab", choices=["ab", "interleave"])
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "ab.png")
    a = ap.parse_args()
    from selenium.webdriver.common.by import By
    from web_browser import chromium_paths, headless_chromium, severe_console_errors, wait_for

    from ab import ADMIN_KEY, Server, serve_cfg
    from modalrec.serving.app import create_app

    paths = chromium_paths()
    if paths is None:
        raise SystemExit(
            "needs Debian's chromium and chromium-driver (apt-get install -y chromium chromium-driver)"
        )
    plan = tomllib.loads((ROOT / "benchmarks" / "plans" / "ab.toml").read_text())["tests"]
    tests = {
        k: plan[k] for k in ("alpha", "metric", "tau", "min_users", "srm_alpha", "srm_concentration", "power")
    }
    ab = {"run_b": str(a.runs / "popularity-served"), "mode": a.mode, "share_b": 0.5, **tests}
    work = Path(tempfile.mkdtemp(prefix="ab-shot-"))  # a copy: the page's own /recommend adds an impression
    shutil.copytree(a.state, work, dirs_exist_ok=True)
    with Server(create_app(a.runs / "ease-served", serve_cfg(work, ab))) as srv:
        drv = headless_chromium(*paths, width=1280, height=760)
        try:
            drv.get(f"http://127.0.0.1:{srv.port}/")
            wait_for(drv, "return document.body.dataset.ready")
            drv.get_log("browser")  # the keyless load's refused /users (401: user data are private)
            drv.find_element(By.ID, "apikey").send_keys(ADMIN_KEY)
            drv.find_element(By.ID, "ab-load").click()
            assert wait_for(drv, "return document.getElementById('ab').dataset.loaded") == "1"
            drv.execute_script(
                "document.querySelector('main').replaceChildren(document.getElementById('panel-ab'));"
                "document.activeElement.blur(); window.scrollTo(0, 0);"
            )
            time.sleep(0.5)
            assert not severe_console_errors(drv)
            drv.save_screenshot(str(a.out))
        finally:
            drv.quit()
    print(a.out)


if __name__ == "__main__":
    main()
