"""Baseline benchmark: modalrec's Popularity, ItemKNN, BPR-MF and LightGCN next to peer libraries.

Protocols (DESIGN.md): ML-100K per-user random 8:1:1 (seed 2024, implicit feedback from all ratings);
TikTok and Amazon Baby on their fixed x_label splits. Embedding size 64, batch size 2048 everywhere.
Every model trains on train, stops early on validation Recall@20 and is scored once on test; the peers
(RecBole, Cornac, implicit; each in its own venv, see benchmarks/peers/) get the very same split files
and their top-50 lists are scored by modalrec's evaluator, so every number comes from one metric code.

Hyperparameters are fixed per model below (no test-set tuning); LightGCN's learning rate and
regularisation follow the MMRec defaults (lr 1e-3, reg 1e-4, 2 layers).

    python benchmarks/baselines.py                        # all data sets, all peers
    python benchmarks/baselines.py --datasets baby --peers recbole
Writes benchmarks/results/baselines.json and baselines.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from modalrec.core.io import atomic_write_json, atomic_write_text
from modalrec.data import load
from modalrec.data.dataset import Dataset
from modalrec.evaluation import evaluate, hit_matrix, mean_metrics, per_user_metrics
from modalrec.models import create
from peers.common import peer_available, run_peer, write_split

RESULTS = Path(__file__).resolve().parent / "results"
KS = (10, 20, 50)
DIM, BATCH = 64, 2048
OURS: dict[str, dict[str, Any]] = {
    "popularity": {},
    "itemknn": {"k": 100},
    "bprmf": {
        "dim": DIM,
        "batch_size": BATCH,
        "lr": 1e-3,
        "reg": 1e-4,
        "epochs": 1000,
        "eval_every": 5,
        "patience": 6,
    },
    "lightgcn": {
        "dim": DIM,
        "batch_size": BATCH,
        "lr": 1e-3,
        "reg": 1e-4,
        "n_layers": 2,
        "epochs": 1000,
        "eval_every": 5,
        "patience": 6,
    },
}
# Chosen on VALIDATION Recall@20 by benchmarks/lightgcn_grid.py (results/lightgcn_grid_baby.md): on the
# sparse Baby graph a third layer and stronger regularisation help; the peers get the same settings.
OVERRIDES: dict[str, dict[str, dict[str, Any]]] = {"baby": {"lightgcn": {"n_layers": 3, "reg": 1e-3}}}
# ItemKNN has no training loop, so its neighbourhood size and shrinkage are picked on validation
# Recall@20 inside the benchmark (a few seconds per point); shrinkage matters on sparse long-tail data.
ITEMKNN_GRID = [{"k": k, "shrink": sh} for k in (50, 100) for sh in (0.0, 10.0, 100.0, 1000.0)]
PEERS: list[tuple[str, str, dict[str, Any]]] = [
    ("recbole", "LightGCN", {"lr": 1e-3, "reg": 1e-4, "param": {"n_layers": 2}}),
    ("recbole", "BPR", {"lr": 1e-3}),
    ("implicit", "BPR", {}),
    ("implicit", "ALS", {}),
    ("cornac", "BPR", {}),
]
PUBLISHED = {
    "baby": {
        "lightgcn": {"recall@20": 0.0754, "ndcg@20": 0.0328, "source": "MMRec-protocol published figure"}
    },
}


def split_pairs(ds: Dataset, part: str) -> np.ndarray:
    coo = ds.target(part).tocoo()
    return np.stack([coo.row, coo.col], axis=1).astype(np.int64)


def score_topk(ds: Dataset, users: np.ndarray, topk: np.ndarray) -> dict[str, float]:
    truth = ds.test[users]
    return mean_metrics(per_user_metrics(hit_matrix(topk, truth), np.diff(truth.indptr), KS))


def pick(metrics: dict[str, float]) -> dict[str, float]:
    keys = [f"{m}@{k}" for m in ("recall", "ndcg", "precision") for k in KS]
    return {k: round(float(metrics[k]), 4) for k in keys}


def run_ours(ds: Dataset, name: str, threads: int, dataset_name: str) -> dict[str, Any]:
    params = dict(OURS[name]) | OVERRIDES.get(dataset_name, {}).get(name, {})
    if "dim" in params:
        params["threads"] = threads
    t0 = time.perf_counter()
    if name == "itemknn":
        grid = []
        for point in ITEMKNN_GRID:
            m = create(name, **point).fit(ds, progress=False)
            grid.append((evaluate(m, ds, "valid", ks=(20,)).metrics["recall@20"], point, m))
        best_valid, params, model = max(grid, key=lambda g: g[0])
        model.meta["best_valid_recall@20"] = best_valid
    else:
        model = create(name, **params)
        model.fit(ds, progress=False)
    fit_s = time.perf_counter() - t0
    res = evaluate(model, ds, "test", ks=KS)
    meta = model.meta
    return {
        "library": "modalrec",
        "model": name,
        "params": params,
        "test": pick(res.metrics),
        "n_users": res.n_users,
        "fit_seconds": round(fit_s, 2),
        "eval_seconds": round(res.seconds, 3),
        "epochs_run": meta.get("epochs_run"),
        "best_epoch": meta.get("best_epoch"),
        "valid_recall@20": meta.get("best_valid_recall@20"),
        "mean_epoch_seconds": meta.get("mean_epoch_seconds"),
        "median_epoch_seconds": float(np.median(meta["epoch_seconds"]))
        if meta.get("epoch_seconds")
        else None,
    }


def run_peer_model(
    ds: Dataset,
    split_dir: Path,
    lib: str,
    model: str,
    hp: dict[str, Any],
    threads: int,
    time_budget: float | None,
) -> dict[str, Any]:
    out = split_dir.parent / f"{lib}-{model}"
    t0 = time.perf_counter()
    r = run_peer(
        lib,
        split_dir,
        model,
        out,
        dim=DIM,
        batch_size=BATCH,
        threads=threads,
        eval_every=5,
        patience=6,
        time_budget=time_budget,
        **hp,
    )
    wall = time.perf_counter() - t0
    metrics = score_topk(ds, r["test_users"], r["topk"])
    return {
        "library": f"{lib} {r.get('library_version', '')}".strip(),
        "model": model,
        "params": {k: v for k, v in r.get("hyperparameters", hp).items()}
        if isinstance(r.get("hyperparameters"), dict)
        else hp,
        "test": pick(metrics),
        "n_users": len(r["test_users"]),
        "fit_seconds": round(wall, 2),
        "epochs_run": r.get("epochs_run"),
        "best_epoch": r.get("best_epoch"),
        "stopped_by": r.get("stopped_by"),
        "valid_recall@20": r.get("best_valid_recall@20", r.get("valid_recall@20")),
        "mean_epoch_seconds": r.get("mean_epoch_train_seconds"),
        "median_epoch_seconds": r.get("median_epoch_train_seconds"),
    }


def eval_speed(ds: Dataset, repeats: int = 3) -> dict[str, float]:
    """Full-ranking test evaluation time of a 64-d factor model over all test users (best of n)."""
    model = create("bprmf", dim=DIM, epochs=1, threads=1).fit(ds, progress=False)
    times = [evaluate(model, ds, "test", ks=KS).seconds for _ in range(repeats)]
    return {"best_seconds": round(min(times), 3), "all_seconds": [round(t, 3) for t in times]}


def markdown(results: dict[str, Any]) -> str:
    lines = [
        "# Baselines",
        "",
        f"Machine: {results['machine']}. Training threads: {results.get('threads', 1)} for ours and the "
        "peers alike (one thread per process is fastest on this box; see the LightGCN docstring).",
        "Metrics from modalrec's evaluator for every row (full ranking over all items, train and valid items masked).",
        "Recall@K = hits / #test items of the user (the MMRec code definition). Embedding size 64, batch size 2048,",
        "early stopping on validation Recall@20; hyperparameters fixed in the script (no test-set tuning).",
        "",
    ]
    for name, d in results["datasets"].items():
        lines += [
            f"## {name}: {d['protocol']}",
            "",
            ", ".join(f"{k} {v}" for k, v in d["summary"].items())
            if isinstance(d["summary"], dict)
            else str(d["summary"]),
            "",
            f"Command: `{d.get('command', '')}`; load average (1/5/15 min) at start "
            f"{d.get('load_average_at_start')}, at end {d.get('load_average_at_end')}.",
            "",
        ]
        hdr = "| library | model | " + " | ".join(
            f"{m}@{k}" for m in ("Recall", "NDCG", "Precision") for k in KS
        )
        lines += [hdr + " | users | fit s | epochs (best) | s/epoch |", "|" + "---|" * 15]
        for r in d["rows"]:
            if "error" in r:
                lines.append(f"| {r['library']} | {r['model']} | failed: {r['error']} |" + " |" * 13)
                continue
            t = r["test"]
            vals = " | ".join(f"{t[f'{m}@{k}']:.4f}" for m in ("recall", "ndcg", "precision") for k in KS)
            ep = f"{r.get('epochs_run') or '-'} ({r.get('best_epoch') or '-'})"
            if r.get("stopped_by") == "time_budget":
                ep += " time budget"
            spe = f"{r['median_epoch_seconds']:.2f}" if r.get("median_epoch_seconds") else "-"
            lines.append(
                f"| {r['library']} | {r['model']} | {vals} | {r['n_users']} | {r['fit_seconds']} | {ep} | {spe} |"
            )
        for k, v in d.get("published", {}).items():
            lines.append(
                f"\nPublished {k}: Recall@20 {v['recall@20']}, NDCG@20 {v['ndcg@20']} ({v['source']})."
            )
        if "lightgcn_epoch_speedup_vs_recbole" in d:
            lines.append(
                f"\nLightGCN training time per epoch (median), RecBole / modalrec: "
                f"**{d['lightgcn_epoch_speedup_vs_recbole']:.2f}x**."
            )
        if "eval_speed" in d:
            lines.append(
                f"\nFull-ranking test evaluation of all test users: {d['eval_speed']['best_seconds']} s (best of 3)."
            )
        lines.append("")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", nargs="+", default=["ml100k", "tiktok", "baby"])
    ap.add_argument("--models", nargs="+", default=list(OURS))
    ap.add_argument("--peers", nargs="*", default=["recbole", "implicit", "cornac"])
    ap.add_argument("--threads", type=int, default=1, help="training threads for ours and the peers alike")
    ap.add_argument(
        "--peer-time-budget",
        type=float,
        default=None,
        help="seconds of training+validation after which a peer stops, keeping its best validated state "
        "(its table row then says so); per-epoch times stay comparable",
    )
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    command = "python benchmarks/baselines.py " + " ".join(argv if argv is not None else sys.argv[1:])
    # Results of earlier invocations (other data sets) are kept: one data set per run fits in minutes.
    previous = args.out / "baselines.json"
    results: dict[str, Any] = json.loads(previous.read_text()) if previous.exists() else {"datasets": {}}
    results["machine"] = (
        f"{platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads available, "
        f"python {platform.python_version()}"
    )
    results["threads"] = args.threads
    for name in args.datasets:
        ds = load(name)
        d: dict[str, Any] = {
            "protocol": ds.split_name,
            "summary": ds.summary(),
            "command": command,
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
            "rows": [],
        }
        # rows of models/peers not re-run in this invocation are kept from the previous results
        old_rows = results["datasets"].get(name, {}).get("rows", [])
        for m in args.models:
            print(f"[{name}] modalrec {m} ...", flush=True)
            d["rows"].append(run_ours(ds, m, args.threads, name))
            print("   ", d["rows"][-1]["test"], flush=True)
        with tempfile.TemporaryDirectory(prefix=f"peers-{name}-") as tmp:
            split_dir = Path(tmp) / "split"
            write_split(
                split_dir,
                *(split_pairs(ds, p) for p in ("train", "valid", "test")),
                n_users=ds.n_users,
                n_items=ds.n_items,
                dataset_name=name,
            )
            for lib, model, hp in PEERS:
                if lib not in args.peers:
                    continue
                print(f"[{name}] {lib} {model} ...", flush=True)
                if model == "LightGCN" and "lightgcn" in OVERRIDES.get(name, {}):
                    ov = OVERRIDES[name]["lightgcn"]
                    hp = hp | {"reg": ov["reg"], "param": {"n_layers": ov["n_layers"]}}
                if not peer_available(lib):
                    d["rows"].append(
                        {"library": lib, "model": model, "error": "venv missing (benchmarks/peers/setup.sh)"}
                    )
                    continue
                try:
                    d["rows"].append(
                        run_peer_model(ds, split_dir, lib, model, hp, args.threads, args.peer_time_budget)
                    )
                    print("   ", d["rows"][-1]["test"], flush=True)
                except Exception as e:  # a failing peer is reported in the table, not fatal
                    d["rows"].append({"library": lib, "model": model, "error": str(e).splitlines()[0][:200]})
        rerun = {("modalrec", m) for m in args.models} | {
            (lib, model) for lib, model, _ in PEERS if lib in args.peers
        }
        kept = [r for r in old_rows if (r["library"].split()[0], r["model"]) not in rerun]
        if kept:
            d["rows"] = kept + d["rows"]
            prev = results["datasets"][name]
            d["command"] = f"{prev.get('command', '?')}; then {command} (re-ran {', '.join(args.models)})"
            d["load_average_at_start"] = prev.get("load_average_at_start")
        order = {("modalrec", m): i for i, m in enumerate(OURS)} | {
            (lib, model): len(OURS) + i for i, (lib, model, _) in enumerate(PEERS)
        }
        d["rows"].sort(key=lambda r: order.get((r["library"].split()[0], r["model"]), 99))
        ours = next((r for r in d["rows"] if r["library"] == "modalrec" and r["model"] == "lightgcn"), None)
        rb = next(
            (
                r
                for r in d["rows"]
                if r["library"].startswith("recbole") and r["model"] == "LightGCN" and "error" not in r
            ),
            None,
        )
        if ours and rb and ours.get("median_epoch_seconds") and rb.get("median_epoch_seconds"):
            d["lightgcn_epoch_speedup_vs_recbole"] = rb["median_epoch_seconds"] / ours["median_epoch_seconds"]
        if name in PUBLISHED:
            d["published"] = PUBLISHED[name]
        d["eval_speed"] = eval_speed(ds)
        d["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
        results["datasets"][name] = d
        args.out.mkdir(parents=True, exist_ok=True)
        atomic_write_json(args.out / "baselines.json", results)
        atomic_write_text(args.out / "baselines.md", markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
