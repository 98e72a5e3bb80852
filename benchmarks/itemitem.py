"""Item-item benchmark (issue 15 items 4, 5, 8): neighbourhoods without dense item x item matrices.

Plan: benchmarks/plans/itemitem.toml (committed before the run; its commit is recorded). Three parts:

* ``identity``: the sparse ItemKNN similarity, the interaction kNN graph and the exact modality kNN
  graphs against the former dense code (kept below as the reference) on ML-100K, Amazon Baby and
  TikTok; the faiss IVF path forced on, with its recall against the exact search.
* ``quality``: ease_knn vs EASE (and ItemKNN) on the ML-100K raw pipeline and Amazon Baby; every
  setting chosen on validation Recall@20, test scored once.
* ``scale``: fit time and peak memory at the synthetic S and M sizes for itemknn (old vs new), the
  image kNN graph (old exact vs faiss IVF, with recall) and ease_knn (EASE refuses). Each step runs in
  its own process so that its peak RSS is its own.

    python benchmarks/itemitem.py --parts identity quality scale --sizes S M
Writes benchmarks/results/itemitem.json and itemitem.md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import scipy.sparse as sp

from modalrec.core.io import atomic_write_json, atomic_write_text

RESULTS = Path(__file__).resolve().parent / "results"
PLAN = Path(__file__).resolve().parent / "plans" / "itemitem.toml"
SYNTH = {
    "S": ["--users", "100000", "--items", "50000", "--interactions", "1000000"],
    "M": ["--users", "1000000", "--items", "200000", "--interactions", "10000000"],
}
KS = (10, 20, 50)
EASE_L2 = {"ml100k": [100.0, 200.0, 300.0, 500.0, 800.0], "baby": [5.0, 15.0, 30.0, 50.0]}
EASE_KNN_NEIGHBORS = [50, 100, 200]
ITEMKNN_GRID = [{"k": k, "shrink": sh} for k in (50, 100) for sh in (0.0, 10.0, 100.0, 1000.0)]
OLD_SAMPLED_BLOCKS = 8
# modality kNN graph identity: TikTok's given features (ML-100K's encoded features were dropped from the
# plan: encoding its posters under this machine's load took over 10 minutes; see the plan's amendment)
KNN_FEATURES = {"tiktok": ["image", "audio"]}
BLOCK = 2048


# ----------------------------------------------------------------- the former dense code (reference)
def old_topk_sparse_rows(sim: sp.csr_matrix, k: int) -> sp.csr_matrix:
    rows, cols, vals = [], [], []
    for r in range(sim.shape[0]):
        a, b = sim.indptr[r], sim.indptr[r + 1]
        if b - a == 0:
            continue
        v, c = sim.data[a:b], sim.indices[a:b]
        if b - a > k:
            sel = np.argpartition(-v, k - 1)[:k]
            v, c = v[sel], c[sel]
        rows.append(np.full(len(c), r, dtype=np.int64))
        cols.append(c)
        vals.append(v)
    if not rows:
        return sp.csr_matrix(sim.shape, dtype=np.float32)
    out = sp.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
        shape=sim.shape,
        dtype=np.float32,
    )
    out.sort_indices()
    return out


def old_itemknn_blocks(
    train: sp.csr_matrix, k: int, shrink: float, blocks: list[slice]
) -> list[sp.csr_matrix]:
    """The former ``cosine_item_similarity``: a dense ``block x n_items`` slab per block of items."""
    x = train.tocsc().astype(np.float32)
    norms = np.sqrt(np.asarray(x.power(2).sum(axis=0)).ravel())
    xt = x.T.tocsr()
    parts = []
    for sl in blocks:
        s = (xt[sl] @ x).toarray()
        s = s / (norms[sl][:, None] * norms[None, :] + shrink + 1e-12)
        s[np.arange(s.shape[0]), np.arange(sl.start, sl.stop)] = 0.0
        parts.append(old_topk_sparse_rows(sp.csr_matrix(s), k))
    return parts


def old_knn_edges(x: np.ndarray, mask: np.ndarray, k: int, chunks: list[int] | None = None) -> np.ndarray:
    """The former ``knn_graph`` search: ``[n_present, k]`` neighbours (or of the listed chunks only)."""
    n = x.shape[0]
    xn = np.asarray(x, dtype=np.float32)
    xn = xn / np.maximum(np.linalg.norm(xn, axis=1, keepdims=True), 1e-12)
    xn[~mask] = 0.0
    k = max(1, min(k, int(mask.sum()) - 1))
    present = np.flatnonzero(mask)
    starts = range(0, len(present), BLOCK) if chunks is None else [c * BLOCK for c in chunks]
    out = []
    for s in starts:
        r = present[s : s + BLOCK]
        sim = xn[r] @ xn.T
        sim[:, ~mask] = -np.inf
        sim[np.arange(len(r)), r] = -np.inf
        out.append(np.argpartition(-sim, k - 1, axis=1)[:, :k] if k < n else np.argsort(-sim, axis=1)[:, :k])
    return np.concatenate(out)


def same_csr(a: sp.csr_matrix, b: sp.csr_matrix) -> bool:
    return bool(
        np.array_equal(a.indptr, b.indptr)
        and np.array_equal(a.indices, b.indices)
        and np.array_equal(a.data, b.data)
    )


def edge_sets_equal(old_top: np.ndarray, rows: np.ndarray, cols: np.ndarray, mask: np.ndarray) -> bool:
    present = np.flatnonzero(mask)
    k = old_top.shape[1]
    old = set(zip(np.repeat(present, k).tolist(), old_top.ravel().tolist(), strict=True))
    return old == set(zip(rows.tolist(), cols.tolist(), strict=True))


# -------------------------------------------------------------------------------------- identity
def load_named(name: str) -> Any:
    from modalrec.data import load

    return load("ml100k", seed=2024) if name == "ml100k" else load(name)


def part_identity() -> dict[str, Any]:
    from modalrec.models.content import interaction_knn_graph, prepared_features
    from modalrec.models.itemknn import cosine_item_similarity
    from modalrec.models.neighbors import feature_recall, feature_topk

    out: dict[str, Any] = {}
    for name in ("ml100k", "baby", "tiktok"):
        ds = load_named(name)
        d: dict[str, Any] = {"items": ds.n_items}
        blocks = [slice(s, min(s + BLOCK, ds.n_items)) for s in range(0, ds.n_items, BLOCK)]
        for shrink in (0.0, 100.0):
            t0 = time.perf_counter()
            old = sp.vstack(old_itemknn_blocks(ds.train, 100, shrink, blocks)).tocsr()
            t1 = time.perf_counter()
            new = cosine_item_similarity(ds.train, 100, shrink)
            t2 = time.perf_counter()
            d[f"itemknn k=100 shrink={shrink:g}"] = {
                "identical": same_csr(old, new),
                "old_seconds": round(t1 - t0, 2),
                "new_seconds": round(t2 - t1, 2),
            }
        g = interaction_knn_graph(ds.train, 10)
        ref = sp.vstack(old_itemknn_blocks(ds.train, 10, 0.0, blocks)).tocsr()
        d["interaction_knn_graph k=10 identical edges"] = bool(((g != 0) != (ref != 0)).nnz == 0)
        for m in KNN_FEATURES.get(name, []):
            feats, masks = prepared_features(ds, [m])
            x, mask = feats[m], np.asarray(masks[m], bool)
            rows, cols = feature_topk(x, mask, 10)
            d[f"knn_graph {m} k=10"] = {
                "identical_edges": edge_sets_equal(old_knn_edges(x, mask, 10), rows, cols, mask),
                "ivf_recall@10 (forced, all present items as queries)": round(
                    feature_recall(x, mask, 10, sample=int(mask.sum())), 4
                ),
            }
        out[name] = d
        print(name, json.dumps(d), flush=True)
    return out


# --------------------------------------------------------------------------------------- quality
def fit_select(ds: Any, name: str, grid: list[dict[str, Any]]) -> dict[str, Any]:
    """Fit every grid point, keep the best on validation Recall@20, score it once on test."""
    from modalrec.evaluation import evaluate
    from modalrec.models import create

    tried = []
    best: tuple[float, dict[str, Any], Any, float] | None = None
    for point in grid:
        t0 = time.perf_counter()
        model = create(name, **point).fit(ds, progress=False)
        fit_s = time.perf_counter() - t0
        v = float(evaluate(model, ds, "valid", ks=(20,)).metrics["recall@20"])
        tried.append({**point, "valid_recall@20": round(v, 4), "fit_seconds": round(fit_s, 2)})
        if best is None or v > best[0]:
            best = (v, point, model, fit_s)
    assert best is not None
    res = evaluate(best[2], ds, "test", ks=KS)
    test = {
        f"{m}@{k}": round(float(res.metrics[f"{m}@{k}"]), 4)
        for m in ("recall", "ndcg", "precision")
        for k in KS
    }
    return {
        "model": name,
        "chosen": best[1],
        "valid_recall@20": round(best[0], 4),
        "test": test,
        "n_users": res.n_users,
        "fit_seconds_chosen": round(best[3], 2),
        "grid": tried,
    }


def part_quality(datasets: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in datasets:
        from modalrec.data import load

        ds = load("ml100k", seed=2024) if name == "ml100k" else load("baby")
        l2s = EASE_L2[name]
        rows = [
            fit_select(ds, "ease", [{"l2": v} for v in l2s]),
            fit_select(ds, "ease_knn", [{"l2": v, "neighbors": n} for n in EASE_KNN_NEIGHBORS for v in l2s]),
            fit_select(ds, "itemknn", ITEMKNN_GRID),
        ]
        out[name] = {"protocol": ds.split_name, "summary": ds.summary(), "rows": rows}
        print(name, json.dumps([(r["model"], r["chosen"], r["test"]["recall@20"]) for r in rows]), flush=True)
    return out


# ----------------------------------------------------------------------------------------- scale
def prepare(size: str, root: Path) -> Path:
    """Generate the synthetic catalogue (if absent) and cache its train matrix and image features."""
    from modalrec.data import load

    d = root / size
    if not (d / "dataset.toml").exists():
        cmd = ["modalrec", "synth", "--out", str(d), *SYNTH[size], "--modalities", "image:64", "--seed", "0"]
        subprocess.run(cmd, check=True)
    if not (d / "train.npz").exists():
        ds = load(d / "dataset.toml")
        sp.save_npz(d / "train.npz", ds.train.tocsr())
        np.save(d / "image.npy", np.asarray(ds.features["image"], np.float32), allow_pickle=False)
        mask = ds.feature_masks.get("image", np.ones(ds.n_items, bool))
        np.save(d / "image_mask.npy", np.asarray(mask, bool), allow_pickle=False)
    return d


def step(name: str, d: Path) -> dict[str, Any]:
    """One measured step, run in a child process (see :func:`main`)."""
    from modalrec.models.content import prepared_features  # noqa: F401  (import cost outside the timing)
    from modalrec.models.neighbors import (
        cooccurrence_topk,
        feature_recall,
        feature_topk,
        neighbor_ease_weights,
    )

    train = sp.load_npz(d / "train.npz").tocsr()
    x, mask = np.load(d / "image.npy"), np.load(d / "image_mask.npy")
    n = train.shape[1]
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    r: dict[str, Any] = {"step": name, "items": n, "interactions": int(train.nnz)}
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    if name == "itemknn_new":
        r["nnz"] = int(cooccurrence_topk(train, 100).cosine.nnz)
    elif name == "itemknn_old":
        blocks = [slice(s, min(s + BLOCK, n)) for s in range(0, n, BLOCK)]
        # evenly spaced sample of blocks, extrapolated (plan amendment: at S too)
        pick = np.linspace(0, len(blocks) - 1, OLD_SAMPLED_BLOCKS).round().astype(int)
        old_itemknn_blocks(train, 100, 0.0, [blocks[i] for i in pick])
        r["extrapolated_from_blocks"] = f"{len(pick)} of {len(blocks)}"
        r["scale"] = len(blocks) / len(pick)
    elif name == "knn_graph_new":
        rows, _ = feature_topk(x, mask, 10)
        r["path"] = "faiss IVF-Flat" if mask.sum() > 20000 else "exact"
        r["edges"] = len(rows)
    elif name == "knn_graph_old":
        n_chunks = -(-int(mask.sum()) // BLOCK)
        pick = np.linspace(0, n_chunks - 1, OLD_SAMPLED_BLOCKS).round().astype(int).tolist()
        old_knn_edges(x, mask, 10, pick)
        r["extrapolated_from_blocks"] = f"{len(pick)} of {n_chunks}"
        r["scale"] = n_chunks / len(pick)
    elif name == "knn_graph_recall":
        r["ivf_recall@10"] = round(feature_recall(x, mask, 10, sample=1000), 4)
    elif name == "ease_knn":
        co = cooccurrence_topk(train, 100)
        b, fixed = neighbor_ease_weights(co, 100.0)
        r["nnz"], r["indefinite_systems"] = int(b.nnz), fixed
    elif name == "ease":
        from modalrec.core.errors import ModalrecError
        from modalrec.models.ease import EASE

        try:
            EASE(l2=100.0)._fit(SimpleNamespace(n_items=n, train=train), progress=False)  # type: ignore[arg-type]
            r["result"] = "fitted"
        except ModalrecError as e:
            r["result"] = f"refused: {e}"
    r["seconds"] = round(time.perf_counter() - t0, 2)
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    # CPU seconds (user + system, all threads): on a machine shared at load 30-40 the wall time mostly
    # measures the queue; the CPU time is what the step costs
    r["cpu_seconds"] = round(ru1.ru_utime + ru1.ru_stime - ru0.ru_utime - ru0.ru_stime, 2)
    if "scale" in r:
        r["seconds_extrapolated"] = round(r["seconds"] * r["scale"], 1)
    r["peak_rss_gb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2, 2)
    r["rss_after_inputs_gb"] = round(base_rss / 1024**2, 2)
    r["loadavg"] = [round(v, 2) for v in os.getloadavg()]
    return r


SCALE_STEPS = [
    "itemknn_new",
    "itemknn_old",
    "knn_graph_new",
    "knn_graph_recall",
    "knn_graph_old",
    "ease_knn",
    "ease",
]


def part_scale(sizes: list[str], root: Path, steps: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for size in sizes:
        t0 = time.perf_counter()
        d = prepare(size, root)
        out[size] = {"prepare_seconds": round(time.perf_counter() - t0, 1), "steps": []}
        for name in steps:
            cmd = [sys.executable, __file__, "--step", name, "--dir", str(d)]
            p = subprocess.run(cmd, capture_output=True, text=True)
            if p.returncode != 0:
                res = {"step": name, "failed": p.stderr.strip().splitlines()[-1:]}
            else:
                res = json.loads(p.stdout.strip().splitlines()[-1])
            out[size]["steps"].append(res)
            print(size, json.dumps(res), flush=True)
    return out


# ---------------------------------------------------------------------------------------- report
def markdown(res: dict[str, Any]) -> str:
    lines = [
        "# Item-item neighbourhoods and ease_knn (issue 15 items 4, 5, 8)",
        "",
        f"Plan: benchmarks/plans/itemitem.toml at commit {res['plan_commit']}. Command: `{res['command']}`. "
        f"Machine: {res['machine']}. This 2-core machine was shared with other jobs: the load average is "
        "recorded next to every timing; times under load are upper bounds of the unloaded ones.",
        "",
        *(f"- {note}" for note in res.get("notes", [])),
        "",
    ]
    if "identity" in res:
        lines += ["## Identity with the former dense code (benchmark data sets)", ""]
        lines += ["| data set | check | result |", "|---|---|---|"]
        for ds, d in res["identity"].items():
            for key, v in d.items():
                lines.append(f"| {ds} | {key} | {json.dumps(v)} |")
        lines.append("")
    if "quality" in res:
        lines += [
            "## ease_knn vs EASE (and ItemKNN), settings chosen on validation Recall@20, test once",
            "",
            "Recall@K = hits / #test items of the user. Full ranking, train and valid items masked.",
            "",
        ]
        for ds, d in res["quality"].items():
            lines += [f"### {ds}: {d['protocol']}", "", f"{d['summary']}", ""]
            lines += [
                "| model | chosen | valid R@20 (all validation users) | R@10 | R@20 | R@50 | N@10 | N@20 | N@50 | P@20 | users | fit s |",
                "|---|---|---|---|---|---|---|---|---|---|---|---|",
            ]
            for r in d["rows"]:
                t = r["test"]
                lines.append(
                    f"| {r['model']} | {r['chosen']} | {r['valid_recall@20']} | {t['recall@10']} | {t['recall@20']} | "
                    f"{t['recall@50']} | {t['ndcg@10']} | {t['ndcg@20']} | {t['ndcg@50']} | {t['precision@20']} | "
                    f"{r['n_users']} | {r['fit_seconds_chosen']} |"
                )
            lines.append("")
    if "quality_summary" in res:
        lines += [
            "## ease_knn vs EASE: chosen settings and test Recall@20 (summary lines of an interrupted run)",
            "",
        ]
        lines += [
            "| data set | model | chosen on validation (all validation users) | test recall@20 |",
            "|---|---|---|---|",
        ]
        for ds, rows in res["quality_summary"].items():
            lines += [f"| {ds} | {m} | {json.dumps(c)} | {r} |" for m, c, r in rows]
        lines.append("")
    if "scale" in res:
        lines += [
            "## Fit time and peak memory at the synthetic sizes",
            "",
            "Each step in its own process; peak RSS includes the cached inputs (train matrix, image features),",
            "listed separately. `old` rows run 8 evenly spaced blocks (of 2048 items / query rows) at both sizes",
            "and are extrapolated to all blocks (labelled). CPU s = user + system seconds of the step's process.",
            "`interactions` = training interactions (the split's train part).",
            "",
            "| size | step | wall s | CPU s | extrapolated wall s | peak RSS GB | inputs RSS GB | notes | load avg |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for size, d in res["scale"].items():
            for r in d["steps"]:
                notes = {
                    k: v
                    for k, v in r.items()
                    if k
                    not in (
                        "step",
                        "seconds",
                        "cpu_seconds",
                        "seconds_extrapolated",
                        "peak_rss_gb",
                        "rss_after_inputs_gb",
                        "loadavg",
                        "scale",
                    )
                }
                lines.append(
                    f"| {size} | {r['step']} | {r.get('seconds', '-')} | {r.get('cpu_seconds', '-')} | {r.get('seconds_extrapolated', '')} | "
                    f"{r.get('peak_rss_gb', '-')} | {r.get('rss_after_inputs_gb', '-')} | {json.dumps(notes)} | {r.get('loadavg', '')} |"
                )
        lines.append("")
    return "\n".join(lines) + "\n"


def from_logs(logs: list[Path]) -> dict[str, Any]:
    """Results from the lines runs print as they go (``S {...}``, ``ml100k {...}``): what finished."""
    import platform

    res: dict[str, Any] = {
        "plan_commit": subprocess.run(
            ["git", "log", "-1", "--format=%h", "--", str(PLAN)],
            capture_output=True,
            text=True,
            cwd=PLAN.parent,
        ).stdout.strip(),
        "command": "python benchmarks/itemitem.py ... (interrupted at the 12:10 UTC CPU deadline; rebuilt with --from-logs)",
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}",
    }
    for log in logs:
        for line in log.read_text().splitlines():
            head, _, body = line.partition(" ")
            if not body.startswith(("{", "[")):
                continue
            value = json.loads(body)
            if head in SYNTH:
                res.setdefault("scale", {}).setdefault(head, {"steps": []})["steps"].append(value)
            elif isinstance(value, dict):
                res.setdefault("identity", {})[head] = value
            else:
                res.setdefault("quality_summary", {})[head] = value
    return res


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", nargs="+", default=["identity", "quality", "scale"])
    ap.add_argument("--sizes", nargs="+", default=["S", "M"])
    ap.add_argument("--quality-datasets", nargs="+", default=["ml100k", "baby"])
    ap.add_argument("--steps", nargs="+", default=SCALE_STEPS)
    ap.add_argument("--root", type=Path, default=Path("/tmp/iiw"), help="where synthetic data is generated")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--merge", nargs="+", type=Path, help="combine the JSON results of these --out folders")
    ap.add_argument(
        "--from-logs",
        nargs="+",
        type=Path,
        help="rebuild results from the printed lines of interrupted runs (steps that never printed are listed as not run)",
    )
    ap.add_argument(
        "--note", action="append", default=[], help="a line for the results' notes (what did not run)"
    )
    ap.add_argument("--render", action="store_true", help="only rewrite itemitem.md from itemitem.json")
    ap.add_argument("--step", help=argparse.SUPPRESS)
    ap.add_argument("--dir", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.step:
        print(json.dumps(step(args.step, args.dir)))
        return
    if args.render:
        atomic_write_text(
            args.out / "itemitem.md", markdown(json.loads((args.out / "itemitem.json").read_text()))
        )
        return
    if args.from_logs:
        res = from_logs(args.from_logs)
        if args.merge:  # complete parts written by runs that did finish
            for folder in args.merge:
                res.update(
                    {
                        k: v
                        for k, v in json.loads((folder / "itemitem.json").read_text()).items()
                        if k in ("quality", "identity_full")
                    }
                )
        res["notes"] = args.note
        atomic_write_json(args.out / "itemitem.json", res)
        atomic_write_text(args.out / "itemitem.md", markdown(res))
        return
    if args.merge:
        merged: dict[str, Any] = {}
        for folder in args.merge:
            part = json.loads((folder / "itemitem.json").read_text())
            for key, value in part.items():
                if key == "scale":
                    for size, d in value.items():
                        merged.setdefault("scale", {}).setdefault(size, {"steps": []})["steps"] += d["steps"]
                elif key == "command" and "command" in merged:
                    merged["command"] += "; " + value
                else:
                    merged[key] = value
        atomic_write_json(args.out / "itemitem.json", merged)
        atomic_write_text(args.out / "itemitem.md", markdown(merged))
        return
    import platform

    previous = args.out / "itemitem.json"
    res: dict[str, Any] = json.loads(previous.read_text()) if previous.exists() else {}
    plan_commit = subprocess.run(
        ["git", "log", "-1", "--format=%h", "--", str(PLAN)], capture_output=True, text=True, cwd=PLAN.parent
    ).stdout.strip()
    res.update(
        plan_commit=plan_commit,
        command="python benchmarks/itemitem.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        machine=f"{platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}",
    )
    if "identity" in args.parts:
        res["identity"] = part_identity()
    if "quality" in args.parts:
        res["quality"] = part_quality(args.quality_datasets)
    if "scale" in args.parts:
        res.setdefault("scale", {}).update(part_scale(args.sizes, args.root, args.steps))
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / "itemitem.json", res)
    atomic_write_text(args.out / "itemitem.md", markdown(res))


if __name__ == "__main__":
    main()
