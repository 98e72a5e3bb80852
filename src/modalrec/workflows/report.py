"""Ablation report writer: ``report.json``, ``report.md`` and one self-contained ``report.html``.

Why this shape: a report is read by people who did not run it, often as a file attached to a ticket
or a mail. So the HTML page embeds its plots as base64 PNGs (data URIs) and its styles inline, and
needs nothing next to it; the data set and the parameters are tables, not Python dicts; columns
that no variant has (cold-item metrics without cold items, epochs of closed-form models) are left
out; a plot's legend names exactly the series it draws; and labels that could collide (long variant
names) sit on the vertical axis, one per row.

Plots (matplotlib, Agg backend): test metrics per ablation, Recall@K curves, learned modality
weights (models that learn them) and training curves (validation Recall@20 per check).
"""

from __future__ import annotations

import ast
import base64
import datetime as _dt
import html
import io
import math
from pathlib import Path
from typing import Any

from modalrec.core.io import atomic_path, atomic_write_json, atomic_write_text

METRICS = ("recall", "ndcg", "precision")

#: Human names of the data summary fields (``Dataset.summary()``), in display order.
DATA_LABELS = {
    "dataset": "data set",
    "split": "split",
    "users": "users",
    "items": "items",
    "interactions": "interactions",
    "train": "train interactions",
    "valid": "validation interactions",
    "test": "test interactions",
    "density": "density",
    "cold_items": "cold items (split)",
    "modalities": "modalities",
}


def _f(v: Any) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4f}"


def _value(v: Any) -> str:
    """A parameter or summary value as people write it (lists joined, floats short, None as '-')."""
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, list | tuple):
        return ", ".join(_value(x) for x in v) or "-"
    if isinstance(v, dict):
        return "; ".join(f"{k} = {_value(x)}" for k, x in v.items()) or "-"
    return str(v)


def data_rows(result: dict[str, Any]) -> list[tuple[str, str]]:
    """The data summary as (label, value) rows.

    ``result["dataset"]`` is ``Dataset.summary()``; reports written before it was stored as a dict
    hold its ``str()``, which is read back as a literal (never evaluated as code).

    >>> data_rows({"dataset": {"dataset": "shop", "users": 1200, "density": 0.0123}})
    [('data set', 'shop'), ('users', '1,200'), ('density', '1.23%')]
    >>> data_rows({"dataset": "demo"})
    [('data set', 'demo')]
    """
    d = result.get("dataset")
    if isinstance(d, str):
        try:
            parsed = ast.literal_eval(d)
        except (ValueError, SyntaxError):
            parsed = None
        d = parsed if isinstance(parsed, dict) else {"dataset": d}
    if not isinstance(d, dict):
        return []
    keys = [k for k in DATA_LABELS if k in d] + [k for k in d if k not in DATA_LABELS]
    rows = []
    for k in keys:
        v = d[k]
        text = f"{100 * v:.2f}%" if k == "density" and isinstance(v, float) else _value(v)
        if k == "modalities" and isinstance(v, str):
            text = ", ".join(v.split(","))
        rows.append((DATA_LABELS.get(k, k.replace("_", " ")), text))
    return rows


def param_rows(result: dict[str, Any]) -> list[tuple[str, str]]:
    """The model's hyperparameters as (name, value) rows, in their declared order."""
    return [(str(k), _value(v)) for k, v in (result.get("params") or {}).items()]


def _has(result: dict[str, Any], key: str) -> bool:
    return any(v.get(key) for v in result["variants"])


def best_variant(result: dict[str, Any]) -> str | None:
    """The variant with the highest validation Recall@20 (selection on validation, never on test)."""
    scored = [
        (v["valid_recall@20"], v["variant"])
        for v in result["variants"]
        if v.get("valid_recall@20") is not None
    ]
    return max(scored, key=lambda t: t[0])[1] if scored else None


def part_k(result: dict[str, Any], key: str = "test_cold") -> int:
    """The K of the warm/cold Recall columns: 20, or the largest K every variant has there.

    A candidate set smaller than K has no metric at K (12 cold items have none at K = 20), so
    the column shows Recall@10 rather than a row of dashes.

    >>> part_k({"variants": [{"test_cold": {"recall@10": 0.5}}]})
    10
    """
    common: set[int] | None = None
    for v in result["variants"]:
        if v.get(key):
            ks = {int(m.split("@")[1]) for m in v[key] if m.startswith("recall@")}
            common = ks if common is None else common & ks
    if not common:
        return 20
    return 20 if 20 in common else max(common)


def table_rows(result: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the main table (one row per variant); absent measurements get no column."""
    ks = result["ks"]
    cold, epochs = _has(result, "test_cold"), _has(result, "epochs_run")
    hdr = ["variant", "model", "valid R@20"]
    hdr += [f"{m[0].upper()}@{k}" for m in ("recall", "ndcg") for k in ks]
    kc = part_k(result)
    hdr += [f"warm R@{kc}", f"cold R@{kc}"] if cold else []
    hdr += ["epochs (best)", "s/epoch"] if epochs else []
    hdr += ["fit (s)"] if _has(result, "fit_seconds") else []
    rows = []
    for v in result["variants"]:
        t = v["test"]
        r = [v["variant"], v["model"], _f(v.get("valid_recall@20"))]
        r += [_f(t.get(f"{m}@{k}")) for m in ("recall", "ndcg") for k in ks]
        if cold:
            r += [_f(v.get(part, {}).get(f"recall@{kc}")) for part in ("test_warm", "test_cold")]
        if epochs:
            r += [f"{v.get('epochs_run') or '-'} ({v.get('best_epoch') or '-'})"]
            r += [f"{v['mean_epoch_seconds']:.2f}" if v.get("mean_epoch_seconds") else "-"]
        if "fit (s)" in hdr:
            r += [f"{v['fit_seconds']:.1f}" if v.get("fit_seconds") is not None else "-"]
        rows.append(r)
    return hdr, rows


def _intro(result: dict[str, Any]) -> list[str]:
    """The sentences above the tables: what was compared and how it was scored."""
    mods = ", ".join(result["modalities"]) or "none"
    cold = result["n_cold_items"]
    parts = [
        f"Modalities: {mods}. Items: {result['n_warm_items']:,} warm, {cold:,} cold"
        + (" (no training interactions)." if cold else "."),
        "Every variant is trained with the same hyperparameters and seed; models trained in epochs stop"
        " early on validation Recall@20. Each variant is scored once on test, ranking all items"
        + (" (warm/cold columns rank only warm/cold items)." if _has(result, "test_cold") else "."),
    ]
    best = best_variant(result)
    if best is not None:
        parts.append(f"Best on validation Recall@20: **{best}**.")
    return parts


def _md_table(hdr: list[str], rows: list[list[str]] | list[tuple[str, str]]) -> list[str]:
    out = ["| " + " | ".join(hdr) + " |", "|" + "---|" * len(hdr)]
    return out + ["| " + " | ".join(r) + " |" for r in rows]


def to_markdown(result: dict[str, Any], plots: dict[str, str] | None = None) -> str:
    """The report as Markdown; ``plots`` maps plot names to PNG files written next to it."""
    hdr, rows = table_rows(result)
    lines = [f"# Ablation report: {result['model']}", "", f"Source: `{result.get('source', '-')}`.", ""]
    for sentence in _intro(result):
        lines += [sentence, ""]
    lines += ["## Results (test)", "", *_md_table(hdr, rows)]
    weights = [(v["variant"], v["modality_weights"]) for v in result["variants"] if v.get("modality_weights")]
    if weights:
        mods = sorted({m for _, w in weights for m in w})
        lines += ["", "## Learned modality weights", ""]
        lines += _md_table(["variant", *mods], [[lab, *(_f(w.get(m)) for m in mods)] for lab, w in weights])
    lines += ["", "## Data", "", *_md_table(["", "value"], data_rows(result))]
    params = param_rows(result)
    if params:
        lines += ["", f"## Parameters of {result['model']}", "", *_md_table(["parameter", "value"], params)]
    if plots:
        lines += ["", "## Plots", ""] + [
            f"![{k.replace('_', ' ')}]({Path(p).name})" for k, p in plots.items()
        ]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------- plots
def _finite(values: list[float]) -> bool:
    return any(isinstance(x, int | float) and math.isfinite(x) for x in values)


def metrics_figure(result: dict[str, Any]) -> Any:
    """Grouped horizontal bars: one row per variant, one bar per series that has any value.

    Warm/cold series are drawn (and named in the legend) only when the split has cold items.
    """
    import matplotlib.pyplot as plt

    variants = result["variants"]
    labels = [v["variant"] for v in variants]
    kc = part_k(result)
    candidates = [("recall@20", "test", "Recall@20"), ("ndcg@20", "test", "NDCG@20")]
    candidates += [(f"recall@{kc}", "test_warm", f"Recall@{kc}, warm items only")]
    candidates += [(f"recall@{kc}", "test_cold", f"Recall@{kc}, cold items only")]
    series = []
    for met, key, name in candidates:
        vals = [v.get(key, {}).get(met, float("nan")) for v in variants]
        if _finite(vals):
            series.append((name, vals))
    n = max(1, len(series))
    height = 0.8 / n
    fig, ax = plt.subplots(figsize=(7.5, 0.5 + len(labels) * (0.2 + 0.18 * n)))
    for j, (name, vals) in enumerate(series):
        ys = [i - 0.4 + height * (j + 0.5) for i in range(len(labels))]
        ax.barh(ys, [0.0 if not math.isfinite(x) else x for x in vals], height, label=name)
    ax.set_yticks(range(len(labels)), labels)
    ax.invert_yaxis()
    ax.set_xlabel("test metric (higher is better)")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax.set_title("Metrics per ablation")
    ax.grid(axis="x", alpha=0.3)
    return fig


def recall_figure(result: dict[str, Any]) -> Any:
    """Test Recall@K per variant; the legend sits outside the axes so it never hides a curve."""
    import matplotlib.pyplot as plt

    ks = result["ks"]
    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    for v in result["variants"]:
        ax.plot(ks, [v["test"].get(f"recall@{k}", float("nan")) for k in ks], marker="o", label=v["variant"])
    ax.set_xlabel("K")
    ax.set_ylabel("test Recall@K")
    ax.set_xticks(ks)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax.set_title("Recall@K")
    ax.grid(alpha=0.3)
    return fig


def weights_figure(result: dict[str, Any]) -> Any | None:
    """Stacked horizontal bars of the learned modality weights (variants with two or more modalities).

    Variant names are the rows (they never overlap, however long); a weight is printed inside its
    segment only when the segment is wide enough to hold the number.
    """
    import matplotlib.pyplot as plt

    weighted = [
        (v["variant"], v["modality_weights"]) for v in result["variants"] if v.get("modality_weights")
    ]
    weighted = [(label, w) for label, w in weighted if len(w) >= 2]
    if not weighted:
        return None
    mods = sorted({m for _, w in weighted for m in w})
    fig, ax = plt.subplots(figsize=(7.5, 0.9 + 0.45 * len(weighted)))
    widest = max(sum(abs(float(x)) for x in w.values()) for _, w in weighted) or 1.0
    left = [0.0] * len(weighted)
    for m in mods:
        vals = [float(w.get(m, 0.0)) for _, w in weighted]
        bars = ax.barh(range(len(weighted)), vals, left=left, label=m, height=0.6)
        for bar, x in zip(bars, vals, strict=True):
            if abs(x) >= 0.08 * widest:
                ax.text(
                    bar.get_x() + x / 2, bar.get_y() + 0.3, f"{x:.2f}", ha="center", va="center", fontsize=8
                )
        left = [a + x for a, x in zip(left, vals, strict=True)]
    ax.set_yticks(range(len(weighted)), [label for label, _ in weighted])
    ax.invert_yaxis()
    ax.set_xlabel("learned weight")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax.set_title("Modality weights")
    return fig


def curves_figure(result: dict[str, Any]) -> Any | None:
    """Validation Recall@20 per check of every variant trained in epochs (None when there is none)."""
    import matplotlib.pyplot as plt

    curves = [(v["variant"], v.get("valid_curve") or []) for v in result["variants"]]
    curves = [(label, c) for label, c in curves if c]
    if not curves:
        return None
    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    for label, c in curves:
        ax.plot([p["epoch"] for p in c], [p["valid_recall@20"] for p in c], label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("valid Recall@20")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax.set_title("Training curves")
    ax.grid(alpha=0.3)
    return fig


def figures(result: dict[str, Any]) -> dict[str, Any]:
    """Every plot of the report as a matplotlib figure (plots without data are left out)."""
    import matplotlib

    matplotlib.use("Agg")
    out = {"metrics_per_ablation": metrics_figure(result), "recall_at_k": recall_figure(result)}
    for name, fig in (
        ("modality_weights", weights_figure(result)),
        ("training_curves", curves_figure(result)),
    ):
        if fig is not None:
            out[name] = fig
    return out


def make_plots(result: dict[str, Any]) -> dict[str, bytes]:
    """PNG bytes of each plot (empty plots are skipped)."""
    import matplotlib.pyplot as plt

    out: dict[str, bytes] = {}
    for name, fig in figures(result).items():
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
        plt.close(fig)
        out[name] = buf.getvalue()
    return out


# ---------------------------------------------------------------------------------------- HTML
STYLE = (
    "body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;max-width:1200px;margin:2em auto;"
    "padding:0 1em;color:#222;line-height:1.45}h1{font-size:1.6em;margin-bottom:.2em}"
    "h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ddd;padding-bottom:.2em}"
    ".meta{color:#666;font-size:.9em}table{border-collapse:collapse;font-size:13px;margin:.6em 0}"
    "td,th{border:1px solid #d5d5d5;padding:4px 8px;text-align:right}th{background:#f3f3f3}"
    "td:first-child,th:first-child,td.l{text-align:left}th,td:first-child{white-space:nowrap}tr.best td{background:#eef6ee;font-weight:600}"
    ".side{display:flex;gap:2em;flex-wrap:wrap}.side>div{flex:1 1 300px}"
    ".scroll{overflow-x:auto}figure{margin:1em 0}figcaption{color:#555;font-size:.9em}img{max-width:100%}"
)


def _html_table(hdr: list[str], rows: list[Any], best: str | None = None, left_cols: int = 1) -> str:
    esc = html.escape
    out = ["<div class='scroll'><table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in hdr) + "</tr>"]
    for r in rows:
        cls = " class='best'" if best is not None and r[0] == best else ""
        cells = "".join(
            f"<td{' class=l' if j < left_cols else ''}>{esc(str(c))}</td>" for j, c in enumerate(r)
        )
        out.append(f"<tr{cls}>{cells}</tr>")
    return "".join(out) + "</table></div>"


CAPTIONS = {
    "metrics_per_ablation": "Test metrics of every variant (all items; warm/cold series only with cold items).",
    "recall_at_k": "Test Recall@K of every variant.",
    "modality_weights": "Weights the model learned for each modality (variants with two or more).",
    "training_curves": "Validation Recall@20 at each check, per variant trained in epochs.",
}


def to_html(result: dict[str, Any], plots: dict[str, bytes]) -> str:
    """One self-contained page: inline styles, tables, plots as ``data:image/png;base64`` URIs."""
    esc = html.escape
    hdr, rows = table_rows(result)
    intro = "".join(f"<p>{esc(p).replace('**', '')}</p>" for p in _intro(result))
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    parts = [
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>Ablation report: {esc(result['model'])}</title><style>{STYLE}</style></head><body>",
        f"<h1>Ablation report: {esc(result['model'])}</h1>",
        f"<p class='meta'>Source: {esc(str(result.get('source', '-')))} &middot; written {stamp}</p>",
        intro,
        "<h2>Results (test)</h2>",
        _html_table(hdr, rows, best_variant(result), left_cols=2),
        "<p class='meta'>Highlighted: the best variant on validation Recall@20.</p>",
    ]
    weights = [(v["variant"], v["modality_weights"]) for v in result["variants"] if v.get("modality_weights")]
    if weights:
        mods = sorted({m for _, w in weights for m in w})
        parts += ["<h2>Learned modality weights</h2>"]
        parts += [
            _html_table(["variant", *mods], [[lab, *(_f(w.get(m)) for m in mods)] for lab, w in weights])
        ]
    parts += [
        "<div class='side'><div><h2>Data</h2>",
        _html_table(["", "value"], data_rows(result), left_cols=2),
    ]
    parts += [f"</div><div><h2>Parameters of {esc(result['model'])}</h2>"]
    parts += [_html_table(["parameter", "value"], param_rows(result), left_cols=2), "</div></div>"]
    parts += ["<h2>Plots</h2>"] if plots else []
    for name, data in plots.items():
        b64 = base64.b64encode(data).decode("ascii")
        parts.append(
            f"<figure><img alt='{esc(name.replace('_', ' '))}' src='data:image/png;base64,{b64}'>"
            f"<figcaption>{esc(CAPTIONS.get(name, ''))}</figcaption></figure>"
        )
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write_report(result: dict[str, Any], out: str | Path) -> dict[str, Path]:
    """Write ``report.json``, ``report.md`` (+ PNGs next to it) and self-contained ``report.html``."""
    d = Path(out)
    d.mkdir(parents=True, exist_ok=True)
    plots = make_plots(result)
    paths: dict[str, str] = {}
    for name, data in plots.items():
        p = d / f"{name}.png"
        with atomic_path(p) as tmp:
            tmp.write_bytes(data)
        paths[name] = str(p)
    atomic_write_json(d / "report.json", result)
    atomic_write_text(d / "report.md", to_markdown(result, paths))
    atomic_write_text(d / "report.html", to_html(result, plots))
    return {"json": d / "report.json", "markdown": d / "report.md", "html": d / "report.html"}
