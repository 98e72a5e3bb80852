"""`modalrec report` as people read it: tables (not dicts), legends that match the bars, labels that do
not collide, one HTML file that carries its plots, checked in headless chromium.

One real ablation (VBPR on the clustered check data set with cold items: every plot has data) is
shared by the tests of this file.
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path
from typing import Any

import pytest

from modalrec.workflows.ablation import run_ablations
from modalrec.workflows.report import figures, table_rows, write_report
from synthetic import make_clustered

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "serving"))
from web_browser import chromium_paths, headless_chromium, severe_console_errors, wait_for

FAST = {
    "dim": 16,
    "batch_size": 256,
    "epochs": 12,
    "patience": 3,
    "eval_every": 2,
    "lr": 0.01,
    "content_dim": 8,
}


@pytest.fixture(scope="module")
def result() -> dict[str, Any]:
    ds = make_clustered(with_features=True, cold_share=0.3)
    res = run_ablations(ds, "vbpr", FAST, ks=(10, 20, 50))
    res["source"] = "tests/workflows/test_report_html.py"
    res["dataset"] = str(ds.summary())  # what `modalrec report` stores
    return res


def _drawn_labels(ax: Any) -> list[str]:
    """Labels of the bar groups and lines that actually have something on the axes."""
    out = [c.get_label() for c in ax.containers if any(p.get_width() > 0 for p in c.patches)]
    return out + [ln.get_label() for ln in ax.lines if len(ln.get_xdata())]


def test_legends_name_exactly_what_is_drawn(result: dict[str, Any]) -> None:
    import matplotlib.pyplot as plt

    figs = figures(result)
    assert set(figs) == {"metrics_per_ablation", "recall_at_k", "modality_weights", "training_curves"}
    for name, fig in figs.items():
        ax = fig.axes[0]
        legend = [t.get_text() for t in ax.get_legend().get_texts()]
        assert legend == _drawn_labels(ax), name
    warm_cold = [t.get_text() for t in figs["metrics_per_ablation"].axes[0].get_legend().get_texts()]
    assert any("cold items" in t for t in warm_cold)
    plt.close("all")
    # without cold items the warm/cold series are neither drawn nor listed
    no_cold = {
        **result,
        "variants": [
            {k: v for k, v in x.items() if k not in ("test_warm", "test_cold")} for x in result["variants"]
        ],
    }
    ax = figures(no_cold)["metrics_per_ablation"].axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["Recall@20", "NDCG@20"]
    plt.close("all")


def test_tick_labels_do_not_overlap(result: dict[str, Any]) -> None:
    import matplotlib.pyplot as plt

    long_names = {
        **result,
        "variants": [{**v, "variant": v["variant"] + " (a long variant name)"} for v in result["variants"]],
    }
    for name, fig in figures(long_names).items():
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
        boxes = [
            t.get_window_extent(renderer)
            for t in fig.axes[0].get_yticklabels() + fig.axes[0].get_xticklabels()
            if t.get_text()
        ]
        for a, b in itertools.combinations(boxes, 2):
            assert not a.overlaps(b), name
    plt.close("all")


def test_tables_not_dicts(result: dict[str, Any], tmp_path: Path) -> None:
    paths = write_report(result, tmp_path)
    md = paths["markdown"].read_text()
    page = paths["html"].read_text()
    for text in (md, page):
        assert "{'" not in text and "{&#x27;" not in text
    assert "| interactions | " in md and "| content_dim | 8 |" in md
    hdr, rows = table_rows(result)
    assert "cold R@20" in hdr and all(r[hdr.index("cold R@20")] != "-" for r in rows)
    # a variant without cold items has no warm/cold columns at all
    hdr2, _ = table_rows(
        {**result, "variants": [{k: v for k, v in x.items() if k != "test_cold"} for x in result["variants"]]}
    )
    assert not any("cold" in h for h in hdr2)


PATHS = chromium_paths()


@pytest.mark.skipif(PATHS is None, reason="Debian's chromium and chromium-driver are not installed")
def test_html_report_in_a_browser(result: dict[str, Any], tmp_path: Path) -> None:
    paths = write_report(result, tmp_path / "rep")
    alone = tmp_path / "mailed" / "report.html"  # the page alone, nothing next to it
    alone.parent.mkdir()
    alone.write_bytes(paths["html"].read_bytes())
    assert PATHS is not None
    drv = headless_chromium(*PATHS, width=1280, height=900)
    try:
        drv.get(alone.as_uri())
        wait_for(drv, "return document.readyState === 'complete'")
        imgs = drv.execute_script(
            "return [...document.images].map(i => [i.src.slice(0, 22), i.naturalWidth])"
        )
        assert len(imgs) == 4 and all(src == "data:image/png;base64," and w > 300 for src, w in imgs)
        external = drv.execute_script(
            "return performance.getEntriesByType('resource').map(e => e.name)"
            ".concat([...document.querySelectorAll('link,script[src],iframe')].map(e => e.outerHTML))"
        )
        assert external == []
        # nothing wider than the window (no horizontal scrolling), and the best row is highlighted
        assert drv.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")
        assert drv.execute_script("return document.querySelectorAll('tr.best').length") == 1
        text = drv.execute_script("return document.body.innerText")
        assert "Learned modality weights" in text and "content_dim" in text and "{'" not in text
        assert severe_console_errors(drv) == []
        assert drv.save_screenshot(str(tmp_path / "report.png"))
    finally:
        drv.quit()
