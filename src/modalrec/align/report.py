"""Alignment quality report: cross-modal retrieval before and after each aligner, as JSON + Markdown.

Why: "the loss went down" says nothing about whether a text finds its own poster. For every ordered
pair of modalities present (text -> image and image -> text, ...), on evaluation items the aligners
never trained on, the report gives Recall@1/10, the median rank and the mean cosine of true pairs vs
random pairs. "Before alignment" is the raw feature space when both modalities share it (same
dimension), otherwise chance level -- raw text and image vectors of different sizes cannot be compared
at all, which is the reason to align.

Run-directory layout written here (read by ``modalrec align-report RUN_DIR``)::

    RUN_DIR/align/aligner.json + aligner.safetensors   the fitted aligner
    RUN_DIR/align/aligned/<modality>.npy               aligned item vectors (zeros where missing)
    RUN_DIR/align/aligned/<modality>.mask.npy          presence masks
    RUN_DIR/align/align_report.json + align_report.md  this report
"""

from __future__ import annotations

import json
from itertools import permutations
from pathlib import Path
from typing import Any

import numpy as np

from modalrec.align.base import Aligner, check_views
from modalrec.align.metrics import retrieval_metrics
from modalrec.core.errors import RunDirError
from modalrec.core.io import atomic_save_npy, atomic_write_json, atomic_write_text

ALIGN_DIR = "align"


def _pair_rows(masks: dict[str, np.ndarray], items: np.ndarray, a: str, b: str) -> np.ndarray:
    return items[masks[a][items] & masks[b][items]]


def alignment_report(
    views: dict[str, np.ndarray],
    masks: dict[str, np.ndarray] | None,
    aligners: dict[str, Aligner],
    items: np.ndarray | None = None,
    *,
    ks: tuple[int, ...] = (1, 10),
    seed: int = 0,
    context: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Retrieval metrics for every ordered modality pair, raw ("before") and per aligner ("after").

    Args:
        views, masks: raw item features and presence masks (row i = item i).
        aligners: fitted aligners by display name.
        items: evaluation item indices (default: all); use items the aligners did not train on.
        context: extra facts recorded in the report (data set, split, commands).

    >>> rng = np.random.default_rng(0)
    >>> t = rng.normal(size=(60, 4)).astype(np.float32); i = t @ rng.normal(size=(4, 5)).astype(np.float32)
    >>> from modalrec.align.linear import RidgeAligner
    >>> al = RidgeAligner(reference="image", reg=1e-6, l2_input=False).fit({"text": t, "image": i})
    >>> rep = alignment_report({"text": t, "image": i}, None, {"ridge": al})
    >>> [(r["aligner"], r["query"], r["recall@1"]) for r in rep["rows"]][-2:]
    [('ridge', 'text', 1.0), ('ridge', 'image', 1.0)]
    """
    views, masks, n = check_views(views, masks)
    items = np.arange(n) if items is None else np.asarray(items, dtype=np.int64)
    rows: list[dict[str, Any]] = []
    mods = list(views)
    for a, b in permutations(mods, 2):
        idx = _pair_rows(masks, items, a, b)
        if len(idx) < 2:
            continue
        if views[a].shape[1] == views[b].shape[1]:
            m: dict[str, Any] = dict(retrieval_metrics(views[a][idx], views[b][idx], ks, seed=seed))
            m["space"] = "raw"
        else:
            m = {f"recall@{k}": min(1.0, k / len(idx)) for k in ks}
            m.update(
                {"median_rank": (len(idx) + 1) / 2, "cos_true": None, "cos_random": None, "cos_gap": None}
            )
            m["space"] = "chance (raw spaces differ in dimension)"
        rows.append({"aligner": "before", "query": a, "gallery": b, "n": len(idx), **m})
    for name, al in aligners.items():
        Z = {m: al.transform(m, views[m]) for m in al.modalities if m in views}
        for a, b in permutations([m for m in mods if m in Z], 2):
            idx = _pair_rows(masks, items, a, b)
            if len(idx) < 2:
                continue
            m = retrieval_metrics(Z[a][idx], Z[b][idx], ks, seed=seed)
            rows.append({"aligner": name, "query": a, "gallery": b, "n": len(idx), "space": "aligned", **m})
    for r in rows:
        r.pop("chance_recall@10", None)
    return {
        "n_items_evaluated": len(items),
        "ks": list(ks),
        "rows": rows,
        "aligners": {
            name: {"class": type(al).__name__, "params": al.get_params(), "meta": _jsonable(al.meta)}
            for name, al in aligners.items()
        },
        "context": context or {},
    }


def _jsonable(o: Any) -> Any:
    return json.loads(json.dumps(o, default=lambda x: x.tolist() if hasattr(x, "tolist") else str(x)))


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}" if abs(v) < 1000 else f"{v:.0f}"
    return str(v)


def report_markdown(report: dict[str, Any], title: str = "Alignment quality") -> str:
    """The report as a Markdown table (one row per aligner and direction)."""
    ks = report.get("ks", [1, 10])
    lines = [f"# {title}", ""]
    ctx = report.get("context") or {}
    for k, v in ctx.items():
        lines.append(f"- {k}: {v}")
    lines.append(
        f"- items evaluated: {report['n_items_evaluated']} (cosine retrieval among them; chance Recall@10 = 10/n)"
    )
    lines.append("")
    head = [
        "aligner",
        "query -> gallery",
        "n",
        *[f"R@{k}" for k in ks],
        "median rank",
        "cos true",
        "cos random",
    ]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "---|" * len(head))
    for r in report["rows"]:
        vals = [
            r["aligner"],
            f"{r['query']} -> {r['gallery']}",
            str(int(r["n"])),
            *[_fmt(r.get(f"recall@{k}")) for k in ks],
            _fmt(r.get("median_rank"), 1),
            _fmt(r.get("cos_true")),
            _fmt(r.get("cos_random")),
        ]
        lines.append("| " + " | ".join(vals) + " |")
    lines.append("")
    lines.append('"before": raw features when both modalities share a space, else chance level.')
    return "\n".join(lines) + "\n"


def write_report(directory: str | Path, report: dict[str, Any], title: str = "Alignment quality") -> Path:
    """Write ``align_report.json`` and ``align_report.md`` into ``directory`` (atomically)."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    atomic_write_json(d / "align_report.json", _jsonable(report))
    atomic_write_text(d / "align_report.md", report_markdown(report, title))
    return d


def save_alignment(
    run_dir: str | Path,
    aligner: Aligner,
    views: dict[str, np.ndarray],
    masks: dict[str, np.ndarray] | None = None,
    report: dict[str, Any] | None = None,
) -> Path:
    """Persist an aligner, the aligned item matrices and (optionally) its report under ``RUN_DIR/align``."""
    d = Path(run_dir) / ALIGN_DIR
    aligner.save(d)
    views, masks, _ = check_views({m: views[m] for m in aligner.modalities if m in views}, masks)
    for m, Z in aligner.transform_all(views, masks).items():
        atomic_save_npy(d / "aligned" / f"{m}.npy", Z)
        atomic_save_npy(d / "aligned" / f"{m}.mask.npy", masks[m])
    if report is not None:
        write_report(d, report)
    return d


def load_aligned(run_dir: str | Path) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Aligned item matrices and masks saved by :func:`save_alignment`."""
    d = Path(run_dir) / ALIGN_DIR / "aligned"
    if not d.is_dir():
        raise RunDirError(f"{run_dir}: no aligned item vectors ({d} is missing); run an aligner first")
    vecs, masks = {}, {}
    for f in sorted(d.glob("*.npy")):
        if f.name.endswith(".mask.npy"):
            continue
        m = f.stem
        vecs[m] = np.load(f, allow_pickle=False)
        mf = d / f"{m}.mask.npy"
        masks[m] = np.load(mf, allow_pickle=False) if mf.exists() else np.ones(len(vecs[m]), bool)
    return vecs, masks


def align_report(run_dir: str | Path, *, recompute: bool = False) -> str:
    """Markdown alignment report of a run (what ``modalrec align-report RUN_DIR`` prints).

    Uses the stored report unless ``recompute`` is set or none exists; recomputing evaluates the
    saved aligner on the run's features (``RUN_DIR/features/<m>.npy``) over the items listed in
    ``align/eval_items.npy`` when present (else all items, which includes training items: said so in
    the report).
    """
    d = Path(run_dir) / ALIGN_DIR
    md = d / "align_report.md"
    if md.exists() and not recompute:
        return md.read_text()
    if not (d / "aligner.json").exists():
        raise RunDirError(f"{run_dir}: no alignment in this run ({d / 'aligner.json'} is missing)")
    al = Aligner.load(d)
    fdir = Path(run_dir) / "features"
    views, masks = {}, {}
    for m in al.modalities:
        f = fdir / f"{m}.npy"
        if not f.exists():
            raise RunDirError(f"{run_dir}: features of modality {m!r} are missing ({f})")
        views[m] = np.load(f, allow_pickle=False)
        mf = fdir / f"{m}.mask.npy"
        if mf.exists():
            masks[m] = np.load(mf, allow_pickle=False).astype(bool)
    ev = d / "eval_items.npy"
    items = np.load(ev, allow_pickle=False) if ev.exists() else None
    ctx = {
        "evaluation items": "held-out items (align/eval_items.npy)"
        if items is not None
        else "all items (includes training items)"
    }
    rep = alignment_report(views, masks or None, {al.name: al}, items, context=ctx)
    write_report(d, rep)
    return report_markdown(rep)
