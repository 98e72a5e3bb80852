"""Ablation report writer: ``report.json``, ``report.md`` and one self-contained ``report.html``.

Why self-contained: the HTML page embeds its plots as base64 PNGs and its styles inline, so it can be
mailed, attached to a ticket or opened from a CI artefact without the run directory next to it.
Plots (matplotlib, Agg backend): metric bars per ablation, Recall@K curves, learned modality weights
and training curves (validation Recall@20 per check).
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

from modalrec.core.io import atomic_path, atomic_write_json, atomic_write_text

METRICS = ("recall", "ndcg", "precision")


def _f(v: Any) -> str:
    return "-" if v is None else f"{v:.4f}"


def table_rows(result: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the main table (one row per variant)."""
    ks = result["ks"]
    hdr = ["variant", "model", "valid R@20"]
    hdr += [f"{m[0].upper()}@{k}" for m in ("recall", "ndcg") for k in ks]
    hdr += ["warm R@20", "cold R@20", "epochs (best)", "s/epoch"]
    rows = []
    for v in result["variants"]:
        t = v["test"]
        r = [v["variant"], v["model"], _f(v.get("valid_recall@20"))]
        r += [_f(t.get(f"{m}@{k}")) for m in ("recall", "ndcg") for k in ks]
        r += [_f(v.get("test_warm", {}).get("recall@20")), _f(v.get("test_cold", {}).get("recall@20"))]
        r += [f"{v.get('epochs_run') or '-'} ({v.get('best_epoch') or '-'})"]
        r += [f"{v['mean_epoch_seconds']:.2f}" if v.get("mean_epoch_seconds") else "-"]
        rows.append(r)
    return hdr, rows


def to_markdown(result: dict[str, Any], plots: dict[str, str] | None = None) -> str:
    hdr, rows = table_rows(result)
    lines = [
        f"# Ablation report: {result['model']}",
        "",
        f"Source: {result.get('source', '-')}. Data: {result.get('dataset', '-')}.",
        f"Modalities: {', '.join(result['modalities']) or 'none'}; warm items {result['n_warm_items']},"
        f" cold items {result['n_cold_items']}.",
        "Every variant trained with the same hyperparameters and seed, early-stopped on validation Recall@20,"
        " scored once on test (full ranking; warm/cold columns rank only warm/cold items).",
        f"Parameters: `{result['params']}`",
        "",
        "| " + " | ".join(hdr) + " |",
        "|" + "---|" * len(hdr),
    ]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    weights = [(v["variant"], v["modality_weights"]) for v in result["variants"] if v.get("modality_weights")]
    if weights:
        lines += ["", "## Learned modality weights", ""]
        for label, w in weights:
            lines.append(f"- {label}: " + ", ".join(f"{m} {x:.3f}" for m, x in w.items()))
    if plots:
        lines += ["", "## Plots", ""] + [f"![{k}]({Path(p).name})" for k, p in plots.items()]
    return "\n".join(lines) + "\n"


def make_plots(result: dict[str, Any]) -> dict[str, bytes]:
    """PNG bytes of each plot (empty plots are skipped)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out: dict[str, bytes] = {}
    variants = result["variants"]
    labels = [v["variant"] for v in variants]
    ks = result["ks"]

    def png(fig: Any) -> bytes:
        buf = io.BytesIO()
        fig.tight_layout()
        fig.savefig(buf, format="png", dpi=90)
        plt.close(fig)
        return buf.getvalue()

    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(labels)), 3.6))
    width = 0.2
    series = [("recall@20", "all"), ("ndcg@20", "all"), ("recall@20", "warm"), ("recall@20", "cold")]
    for j, (met, part) in enumerate(series):
        key = {"all": "test", "warm": "test_warm", "cold": "test_cold"}[part]
        vals = [v.get(key, {}).get(met, float("nan")) for v in variants]
        ax.bar([i + (j - 1.5) * width for i in range(len(labels))], vals, width, label=f"{met} ({part})")
    ax.set_xticks(range(len(labels)), labels, rotation=20, ha="right")
    ax.set_ylabel("test")
    ax.legend(fontsize=8)
    ax.set_title("Metrics per ablation")
    out["metrics_per_ablation"] = png(fig)

    fig, ax = plt.subplots(figsize=(6, 3.6))
    for v in variants:
        ax.plot(ks, [v["test"].get(f"recall@{k}", float("nan")) for k in ks], marker="o", label=v["variant"])
    ax.set_xlabel("K")
    ax.set_ylabel("test Recall@K")
    ax.set_xticks(ks)
    ax.legend(fontsize=8)
    ax.set_title("Recall@K")
    out["recall_at_k"] = png(fig)

    weighted = [(v["variant"], v["modality_weights"]) for v in variants if v.get("modality_weights")]
    weighted = [(label, w) for label, w in weighted if len(w) >= 2]
    if weighted:
        fig, ax = plt.subplots(figsize=(6, 3.2))
        mods = sorted({m for _, w in weighted for m in w})
        bottom = [0.0] * len(weighted)
        for m in mods:
            vals = [w.get(m, 0.0) for _, w in weighted]
            ax.bar([label for label, _ in weighted], vals, bottom=bottom, label=m)
            bottom = [b + x for b, x in zip(bottom, vals, strict=True)]
        ax.set_ylabel("learned weight")
        ax.legend(fontsize=8)
        ax.set_title("Modality weights")
        out["modality_weights"] = png(fig)

    curves = [(v["variant"], v.get("valid_curve") or []) for v in variants]
    curves = [(label, c) for label, c in curves if c]
    if curves:
        fig, ax = plt.subplots(figsize=(6, 3.6))
        for label, c in curves:
            ax.plot([p["epoch"] for p in c], [p["valid_recall@20"] for p in c], label=label)
        ax.set_xlabel("epoch")
        ax.set_ylabel("valid Recall@20")
        ax.legend(fontsize=8)
        ax.set_title("Training curves")
        out["training_curves"] = png(fig)
    return out


def to_html(result: dict[str, Any], plots: dict[str, bytes]) -> str:
    hdr, rows = table_rows(result)
    esc = html.escape
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>Ablation report: {esc(result['model'])}</title>",
        "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
        "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 7px;"
        "text-align:right}td:first-child,th:first-child{text-align:left}img{max-width:100%}</style>",
        "</head><body>",
        f"<h1>Ablation report: {esc(result['model'])}</h1>",
        f"<p>Source: {esc(str(result.get('source', '-')))}. Data: {esc(str(result.get('dataset', '-')))}.<br>"
        f"Modalities: {esc(', '.join(result['modalities']) or 'none')}; warm items {result['n_warm_items']},"
        f" cold items {result['n_cold_items']}.<br>Every variant trained with the same hyperparameters and"
        " seed, early-stopped on validation Recall@20, scored once on test.</p>",
        f"<p><code>{esc(str(result['params']))}</code></p>",
        "<table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in hdr) + "</tr>",
    ]
    for r in rows:
        parts.append("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>")
    parts.append("</table>")
    for name, data in plots.items():
        b64 = base64.b64encode(data).decode("ascii")
        parts.append(
            f"<h2>{esc(name.replace('_', ' '))}</h2><img alt='{esc(name)}' src='data:image/png;base64,{b64}'>"
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
