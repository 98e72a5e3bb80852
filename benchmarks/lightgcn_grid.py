"""Validation-only grid for LightGCN (layers x regularisation) on the plan's data sets.

The baseline benchmark uses one fixed LightGCN configuration per data set; this script is how it was
chosen: every grid point trains with early stopping on validation Recall@20 and the configuration with
the best *validation* Recall@20 wins. Test metrics are recorded for transparency but never used to
pick. Grid points run in parallel worker processes (one torch thread each).

Data sets, split, grid, training settings and caps, seed and test cut-offs come from the plan
``benchmarks/plans/lightgcn_grid.toml`` (committed before the run, read at run time); each result
records the plan's commit.

    python benchmarks/lightgcn_grid.py --dataset baby --workers 2
Writes benchmarks/results/lightgcn_grid_<dataset>.json and .md.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from modalrec.core.io import atomic_write_json, atomic_write_text
from modalrec.data import load
from modalrec.evaluation import evaluate
from modalrec.models import create
from plan import Plan, code_commit, load_plan
from plan import plan_line as plan_provenance

RESULTS = Path(__file__).resolve().parent / "results"
PLAN_NAME = "lightgcn_grid"
PLAN_FILE = f"benchmarks/plans/{PLAN_NAME}.toml"
#: What this script does without reading it from the plan: the plan must say the same (checked at run time).
MODEL = "lightgcn"
SELECTION = {"metric": "valid recall@20", "validation_users": "all"}
#: Test metrics the Markdown table shows (the plan's [test] report must keep them).
SHOWN = ("recall@20", "ndcg@20")


def run_point(
    dataset: str, split: str, params: dict[str, Any], ks: list[int], report: list[str]
) -> dict[str, Any]:
    """Fit one grid point (early stopping on validation Recall@20 of all validation users), then test it once."""
    ds = load(dataset, split=split)
    t0 = time.perf_counter()
    model = create(MODEL, **params).fit(ds, progress=False)
    fit_s = time.perf_counter() - t0
    test = evaluate(model, ds, "test", ks=tuple(ks)).metrics
    meta = model.meta
    return {
        "params": params,
        "best_valid_recall@20": meta["best_valid_recall@20"],
        "best_epoch": meta["best_epoch"],
        "epochs_run": meta["epochs_run"],
        "median_epoch_seconds": float(np.median(meta["epoch_seconds"])),
        "fit_seconds": round(fit_s, 1),
        "test": {k: round(float(test[k]), 4) for k in report},
    }


def check_plan(data: dict[str, Any]) -> None:
    """Refuse (SystemExit) a plan that says something this script does not do."""
    tr, test = data["training"], data["test"]
    problems = []
    if tr["model"] != MODEL:
        problems.append(f"[training] model is {tr['model']!r}; this script fits {MODEL!r} only")
    if len(tr["seeds"]) != 1:
        problems.append(f"[training] seeds is {tr['seeds']}; this script fits each grid point with one seed")
    if data["selection"] != SELECTION:
        problems.append(f"[selection] is {data['selection']}; this script selects by {SELECTION}")
    for key in ("reg", "n_layers", "seed"):
        if key in tr["params"]:
            problems.append(f"[training] params sets {key!r}, which the grid / seeds set")
    missing_k = [m for m in test["report"] if int(m.split("@")[1]) not in test["ks"]]
    if missing_k:
        problems.append(f"[test] report {missing_k} needs a cut-off missing from ks {test['ks']}")
    if not set(SHOWN) <= set(test["report"]):
        problems.append(f"[test] report must keep {list(SHOWN)} (the Markdown table shows them)")
    for name in data["split"]["datasets"]:
        if name not in data["grid"] or name not in data["split"]["split"]:
            problems.append(f"data set {name!r} has no [grid] or no [split] split entry")
    if problems:
        raise SystemExit(
            f"{PLAN_FILE} does not match what {Path(__file__).name} runs:\n  " + "\n  ".join(problems)
        )


def grid_params(data: dict[str, Any], dataset: str) -> list[dict[str, Any]]:
    """The plan's grid points for ``dataset``, in plan order (layers outer, reg inner), as full parameter sets."""
    grid = data["grid"][dataset]
    base = data["training"]["params"]
    (seed,) = data["training"]["seeds"]
    return [
        {**base, "reg": float(reg), "n_layers": int(layers), "seed": int(seed)}
        for layers, reg in itertools.product(grid["n_layers"], grid["reg"])
    ]


def run_dataset(dataset: str, plan: Plan, workers: int, out_dir: Path) -> None:
    """Run the plan's grid on ``dataset`` and write its JSON and Markdown results."""
    data = plan.data
    split, ks, report = data["split"]["split"][dataset], data["test"]["ks"], data["test"]["report"]
    grid = grid_params(data, dataset)
    load_start = [round(x, 2) for x in os.getloadavg()]
    with ProcessPoolExecutor(workers) as pool:
        futs = [pool.submit(run_point, dataset, split, params, ks, report) for params in grid]
        rows = [f.result() for f in futs]
    best = max(rows, key=lambda r: r["best_valid_recall@20"])  # ties: the first in plan order
    out = {
        "dataset": dataset,
        "split": split,
        "selection": "best validation Recall@20 (test metrics shown, never used to choose)",
        **plan.record(),
        "code_commit": code_commit(),
        "load_average_at_start": load_start,
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "rows": rows,
        "chosen": best["params"],
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out_dir / f"lightgcn_grid_{dataset}.json", out)
    md = markdown(out)
    atomic_write_text(out_dir / f"lightgcn_grid_{dataset}.md", md)
    print(md)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default=None, help="one of the plan's data sets (default: each in turn)")
    ap.add_argument("--workers", type=int, default=2, help="parallel grid points (does not change a number)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument(
        "--render",
        action="store_true",
        help="only rewrite the Markdown from the JSON (--dataset's, default every lightgcn_grid_*.json)",
    )
    ap.add_argument("--allow-uncommitted-plan", action="store_true", help="dry runs only; recorded as such")
    args = ap.parse_args(argv)
    if args.render:
        one = args.out / f"lightgcn_grid_{args.dataset}.json"
        for path in [one] if args.dataset else sorted(args.out.glob("lightgcn_grid_*.json")):
            atomic_write_text(path.with_suffix(".md"), markdown(json.loads(path.read_text())))
        return
    plan = load_plan(PLAN_NAME, allow_uncommitted=args.allow_uncommitted_plan)
    check_plan(plan.data)
    datasets = plan.data["split"]["datasets"]
    if args.dataset is not None and args.dataset not in datasets:
        raise SystemExit(f"data set {args.dataset!r} is not in {PLAN_FILE} (its data sets: {datasets})")
    for name in [args.dataset] if args.dataset else datasets:
        run_dataset(name, plan, args.workers, args.out)


def plan_line(out: dict[str, Any]) -> str:
    """Which plan governed the run: its commit, or 'none' for a result from before plans."""
    return plan_provenance(out, PLAN_NAME)


def markdown(out: dict[str, Any]) -> str:
    """The grid table from the JSON (``--render`` rewrites it without training)."""
    lines = [
        f"# LightGCN grid on {out['dataset']} (selection on validation Recall@20 of all validation users)",
        "",
        plan_line(out),
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
