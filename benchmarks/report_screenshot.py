"""docs/report.png: a ``modalrec report`` HTML page as a browser shows it (headless Debian chromium).

The committed picture is the report of the tutorial's catalogue (docs/tutorial.md) with VBPR on a
cold-start split, so that every part of the page has data (warm/cold columns, modality weights,
training curves)::

    # in the tutorial's folder, after its `modalrec encode` step and the [features] table
    cat > shop-vbpr.toml <<'EOF'
    [data]
    name = "shop/dataset.toml"
    split = "cold_start"
    options = { cold_share = 0.25 }
    [model]
    name = "vbpr"
    params = { dim = 32, content_dim = 16, epochs = 60, eval_every = 5, patience = 3, lr = 0.01 }
    EOF
    modalrec report shop-vbpr.toml --out reports/shop-vbpr
    python benchmarks/report_screenshot.py reports/shop-vbpr/report.html

Needs chromium + chromium-driver (apt) and selenium.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "serving"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("report", type=Path, help="a report.html written by `modalrec report`")
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "report.png")
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--max-height", type=int, default=2400, help="crop the page to this height (px)")
    a = ap.parse_args()
    from web_browser import chromium_paths, headless_chromium, severe_console_errors, wait_for

    paths = chromium_paths()
    if paths is None:
        raise SystemExit(
            "needs Debian's chromium and chromium-driver (apt-get install -y chromium chromium-driver)"
        )
    drv = headless_chromium(*paths, width=a.width, height=900)
    try:
        drv.get(a.report.resolve().as_uri())
        wait_for(
            drv, "return document.readyState === 'complete' && [...document.images].every(i => i.complete)"
        )
        h = drv.execute_script(
            "return document.documentElement.scrollHeight + window.outerHeight - window.innerHeight"
        )
        drv.set_window_size(a.width, min(int(h), a.max_height))
        errors = severe_console_errors(drv)
        if errors:
            raise SystemExit(f"browser console errors: {errors}")
        a.out.parent.mkdir(parents=True, exist_ok=True)
        drv.save_screenshot(str(a.out))
    finally:
        drv.quit()
    from PIL import Image  # a smaller file for the repository (same pixels, palette PNG)

    img = Image.open(a.out).convert("RGB")
    img.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(a.out, optimize=True)
    print(f"{a.out}: {img.size[0]}x{img.size[1]}, {a.out.stat().st_size / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
