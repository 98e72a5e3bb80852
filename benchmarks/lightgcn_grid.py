"""Validation-only grid for LightGCN (layers x regularisation) on one data set.

The baseline benchmark uses one fixed LightGCN configuration per data set; this script is how it was
chosen: every grid point trains with early stopping on validation Recall@20 and the configuration with
the best *validation* Recall@20 wins. Test metrics are recorded for transparency but never used to
pick. Grid points run in parallel worker processes (one torch thread each).

    python benchmarks/lightgcn_grid.py --dataset baby --layers 2 3 --regs 1e-4 1e-3 --workers 2
Writes benchmarks/results/lightgcn_grid_<dataset>.json and .md.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from modalrec.core.io import atomic_write_json, atomic_write_text
from modalrec.data import load
from modalrec.evaluation import evaluate
from modalrec.models import create

RESULTS = Path(__file__).resolve().parent / "results"


def run_point(dataset: str, layers: int, reg: float, lr: float, dim: int, batch: int) -> dict[str, Any]:
    ds = load(dataset)
    params = {
        "dim": dim,
        "batch_size": batch,
        "lr": lr,
        "reg": reg,
        "n_layers": layers,
        "epochs": 1000,
        "eval_every": 5,
        "patience": 6,
        "threads": 1,
    }
    t0 = time.perf_counter()
    model = create("lightgcn", **params).fit(ds, progress=False)
    fit_s = time.perf_counter() - t0
    test = evaluate(model, ds, "test", ks=(10, 20, 50)).metrics
    meta = model.meta
    return {
        "params": params,
        "best_valid_recall@20": meta["best_valid_recall@20"],
        "best_epoch": meta["best_epoch"],
        "epochs_run": meta["epochs_run"],
        "median_epoch_seconds": float(np.median(meta["epoch_seconds"])),
        "fit_seconds": round(fit_s, 1),
        "test": {k: round(float(test[k]), 4) for k in ("recall@20", "ndcg@20", "recall@50", "ndcg@50")},
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="baby")
    ap.add_argument("--layers", type=int, nargs="+", default=[2, 3])
    ap.add_argument("--regs", type=float, nargs="+", default=[1e-4, 1e-3])
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--batch", type=int, default=2048)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument("--render", action="store_true", help="only rewrite the Markdown from the JSON")
    args = ap.parse_args(argv)
    if args.render:
        res = json.loads((args.out / f"lightgcn_grid_{args.dataset}.json").read_text())
        atomic_write_text(args.out / f"lightgcn_grid_{args.dataset}.md", markdown(res))
        return
    grid = list(itertools.product(args.layers, args.regs))
    load_start = [round(x, 2) for x in os.getloadavg()]
    with ProcessPoolExecutor(args.workers) as pool:
        futs = [
            pool.submit(run_point, args.dataset, la, reg, args.lr, args.dim, args.batch) for la, reg in grid
        ]
        rows = [f.result() for f in futs]
    best = max(rows, key=lambda r: r["best_valid_recall@20"])
    out = {
        "dataset": args.dataset,
        "selection": "best validation Recall@20 (test metrics shown, never used to choose)",
        "load_average_at_start": load_start,
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "rows": rows,
        "chosen": best["params"],
    }
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / f"lightgcn_grid_{args.dataset}.json", out)
    md = markdown(out)
    atomic_write_text(args.out / f"lightgcn_grid_{args.dataset}.md", md)
    print(md)


def markdown(out: dict[str, Any]) -> str:
    """The grid table from the JSON (``--render`` rewrites it without training)."""
    lines = [
        f"# LightGCN grid on {out['dataset']} (selection on validation Recall@20 of all validation users)",
        "",
        f"Load average at start {out['load_average_at_start']}, at end {out['load_average_at_end']} (2 cores; "
        "epoch times include contention from other jobs).",
        "",
        "| layers | reg | valid R@20 (all validation users) | best epoch | s/epoch | test R@20 | test NDCG@20 |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in sorted(out["rows"], key=lambda r: -r["best_valid_recall@20"]):
        p = r["params"]
        mark = " **chosen**" if p == out["chosen"] else ""
        lines.append(
            f"| {p['n_layers']} | {p['reg']:g} | {r['best_valid_recall@20']:.4f}{mark} | {r['best_epoch']} | "
            f"{r['median_epoch_seconds']:.2f} | {r['test']['recall@20']:.4f} | {r['test']['ndcg@20']:.4f} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
