"""Graph models whose epoch is linear in the data (issue 15 item 3): quality and epoch time, old vs new.

Old = ``propagation="per_batch"``: one whole-graph propagation per mini-batch of 2048 (the original
path), so an epoch costs (interactions / 2048) x (graph size). New = ``propagation="shared"``:
``steps_per_epoch`` groups of mini-batches share one propagation each (gradient accumulation with
sparse row gradients, see ``modalrec.models.embedding``), so an epoch costs a fixed number of
propagations plus work proportional to the interactions.

Parts (the plan, ``benchmarks/plans/graph_linear.toml``, fixes rows, seeds and sizes; it is committed
before the run and its commit is recorded):

* ``quality``: ML-100K, TikTok, Amazon Baby; the new path trained with 3 seeds per planned row, scored
  once on test after early stopping on validation; the old rows are the committed per-seed runs of
  ``benchmarks/results/multimodal.json`` (same settings, per-batch path), plus a control re-run.
* ``timing``: synthetic S and M catalogues (``modalrec synth``); one epoch of each model, new path at
  1 and 2 threads, old path extrapolated from its first steps (hours per epoch at M).

    python benchmarks/graph_linear.py --part timing --sizes S M --data-root /tmp/graph_linear
    python benchmarks/graph_linear.py --part quality --only "tiktok/LightGCN"
    python benchmarks/graph_linear.py --render
Writes benchmarks/results/graph_linear.json and graph_linear.md (each part merges into the JSON).
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path
from typing import Any

# modalrec before torch: its import turns on torch's huge-page allocation (src/modalrec/__init__.py), which
# only takes effect before torch's first allocation, as in the `modalrec` CLI
import modalrec  # noqa: F401

# isort: split
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from modalrec.core.io import atomic_write_json, atomic_write_text
from modalrec.core.threads import torch_threads
from modalrec.data import load
from modalrec.data.dataset import Dataset
from modalrec.evaluation import evaluate
from modalrec.models import create

HERE = Path(__file__).resolve().parent
PLAN = HERE / "plans" / "graph_linear.toml"
RESULTS = HERE / "results"
OUT_JSON = RESULTS / "graph_linear.json"
OUT_MD = RESULTS / "graph_linear.md"


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=HERE, capture_output=True, text=True).stdout.strip()


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def read_results() -> dict[str, Any]:
    return json.loads(OUT_JSON.read_text()) if OUT_JSON.exists() else {}


def merge(section: str, key: str, value: dict[str, Any]) -> None:
    """Read-modify-write one entry under a file lock (parts run as separate processes at once)."""
    with open(Path(tempfile.gettempdir()) / "modalrec-graph_linear.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        results = read_results()
        results.setdefault(section, {})[key] = value
        save(results)


def save(results: dict[str, Any]) -> None:
    results["plan_commit"] = git("log", "-1", "--format=%H", "--", str(PLAN))
    results["machine"] = {
        "platform": platform.platform(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    atomic_write_json(OUT_JSON, results)
    atomic_write_text(OUT_MD, markdown(results))


# ---------------------------------------------------------------------------------------------- quality
def load_benchmark(name: str) -> Dataset:
    """The data sets exactly as benchmarks/multimodal.py loads them (ML-100K: no features needed here)."""
    if name == "ml100k":
        return load("ml100k", split=None, seed=2024)
    return load(name)


def fit_and_score(
    ds: Dataset, model: str, params: dict[str, Any], seed: int, ks: list[int]
) -> dict[str, Any]:
    """Train with early stopping on validation, score once on test (multimodal.py's protocol)."""
    m = create(model, **{**params, "seed": seed})
    t0 = time.perf_counter()
    m.fit(ds, progress=False)
    fit_s = time.perf_counter() - t0
    res = evaluate(m, ds, "test", ks=tuple(ks))
    keys = [f"{k}@{n}" for k in ("recall", "ndcg", "precision") for n in ks]
    return {
        "seed": seed,
        "test": {k: float(res.metrics[k]) for k in keys},
        "fit_seconds": round(fit_s, 2),
        "epochs_run": m.meta.get("epochs_run"),
        "best_epoch": m.meta.get("best_epoch"),
        "valid_recall@20": m.meta.get("best_valid_recall@20"),
        "mean_epoch_seconds": m.meta.get("mean_epoch_seconds"),
        "loadavg_end": loadavg(),
    }


def old_runs(source: Path, dataset: str, label: str) -> list[dict[str, Any]]:
    data = json.loads(source.read_text())
    rows = data["sections"][dataset]["rows"]
    row = next(r for r in rows if r["label"] == label and r.get("runs"))
    return row["runs"]


def compare(old: list[dict[str, Any]], new: list[dict[str, Any]], metric: str) -> dict[str, Any]:
    """Means, stds and the plan's noise rule (two standard errors of the difference of means)."""
    a = np.array([r["test"][metric] for r in old], dtype=np.float64)
    b = np.array([r["test"][metric] for r in new], dtype=np.float64)
    sa = float(a.std(ddof=1)) if len(a) > 1 else 0.0
    sb = float(b.std(ddof=1)) if len(b) > 1 else 0.0
    se = float(np.sqrt(sa**2 / len(a) + sb**2 / len(b)))
    diff = float(b.mean() - a.mean())
    return {
        "old_mean": float(a.mean()),
        "old_std": sa,
        "new_mean": float(b.mean()),
        "new_std": sb,
        "diff": diff,
        "two_se": 2 * se,
        "within_noise": abs(diff) <= 2 * se,
        "new_better_or_within": diff >= -2 * se,
    }


def run_quality(plan: dict[str, Any], only: list[str] | None, seeds: list[int] | None) -> None:
    q = plan["quality"]
    source = HERE.parent / q["old_source"]
    loaded: dict[str, Dataset] = {}
    for row in q["rows"]:
        key = f"{row['dataset']}/{row['label']}"
        if only and key not in only:
            continue
        ds = loaded.setdefault(row["dataset"], load_benchmark(row["dataset"]))
        params = {**row["params"], **q["new"]}
        old = old_runs(source, row["dataset"], row["label"])
        runs: list[dict[str, Any]] = []
        for seed in seeds or q["seeds"]:
            runs.append(fit_and_score(ds, row["model"], params, seed, q["ks"]))
            print(key, "new", seed, runs[-1]["test"]["recall@20"], runs[-1]["best_epoch"], flush=True)
            # After every seed (a stopped run keeps what it finished), merged by seed with the runs
            # other processes already wrote for this row.
            with open(Path(tempfile.gettempdir()) / "modalrec-graph_linear.lock", "w") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                results = read_results()
                before = results.get("quality", {}).get(key, {}).get("new_runs", [])
                done = {r["seed"]: r for r in [*before, *runs]}
                merged = [done[k] for k in sorted(done)]
                results.setdefault("quality", {})[key] = {
                    "dataset": row["dataset"],
                    "model": row["model"],
                    "params_new": params,
                    "old_runs": old,
                    "new_runs": merged,
                    "compare": {m: compare(old, merged, m) for m in ("recall@20", "ndcg@20")},
                }
                save(results)
    for c in q.get("controls", []):
        key = f"{c['dataset']}/{c['label']}"
        if only and f"control:{key}" not in only:
            continue
        row = next(r for r in q["rows"] if r["dataset"] == c["dataset"] and r["label"] == c["label"])
        ds = loaded.setdefault(row["dataset"], load_benchmark(row["dataset"]))
        rerun = fit_and_score(
            ds, row["model"], {**row["params"], "propagation": "per_batch"}, c["seed"], q["ks"]
        )
        committed = next(r for r in old_runs(source, c["dataset"], c["label"]) if r["seed"] == c["seed"])
        control = {
            "seed": c["seed"],
            "rerun_test": rerun["test"],
            "committed_test": committed["test"],
            "identical": all(abs(rerun["test"][k] - committed["test"][k]) < 1e-12 for k in committed["test"]),
        }
        merge("controls", key, control)


# ----------------------------------------------------------------------------------------------- timing
def synth_data(root: Path, size: str, spec: dict[str, int]) -> Path:
    """The planned synthetic catalogue under ``root`` (generated once; never inside the repository)."""
    out = root / size
    if not (out / "dataset.toml").exists():
        from modalrec.data.synth import make_synthetic

        make_synthetic(
            out,
            n_users=spec["users"],
            n_items=spec["items"],
            n_interactions=spec["interactions"],
            modalities={"image": 64},
            seed=0,
        )
    return out / "dataset.toml"


def mode_params(mode: str) -> dict[str, str]:
    """Model settings of a timing mode: ``old`` (per-batch path), ``new-tN`` (shared propagation, items
    renumbered for cache locality, the default ``item_order="local"``) or ``new-tN-given`` (shared, items in
    the data set's order: the before of the renumbering).

    >>> mode_params("old"), mode_params("new-t2"), mode_params("new-t1-given")["item_order"]
    ({'propagation': 'per_batch'}, {'propagation': 'shared'}, 'given')
    """
    if mode == "old":
        return {"propagation": "per_batch"}
    return {"propagation": "shared", **({"item_order": "given"} if mode.endswith("-given") else {})}


def time_epoch(
    ds: Dataset, model: str, params: dict[str, Any], threads: int, max_steps: int | None
) -> dict[str, Any]:
    """Build the model and time one training epoch (or its first ``max_steps`` steps, extrapolated)."""
    from modalrec.models.content import WarmSampler
    from modalrec.models.training import BPRSampler

    with torch_threads(threads):
        m = create(model, **{**params, "threads": threads})
        t0 = time.perf_counter()
        run = m.start_training(ds, WarmSampler if model == "graphmm" else BPRSampler)
        build_s = time.perf_counter() - t0
        n_batches = -(-ds.train.nnz // m.hp.batch_size)
        n_steps = len(m.step_groups([None] * n_batches))  # type: ignore[list-item]
        load0 = loadavg()
        t0, c0 = time.perf_counter(), time.process_time()
        loss = m.train_epoch(run, 1, max_steps=max_steps)
        secs, cpu = time.perf_counter() - t0, time.process_time() - c0
    done = min(max_steps, n_steps) if max_steps else n_steps
    return {
        "threads": threads,
        "build_seconds": round(build_s, 2),
        "steps_per_epoch": n_steps,
        "steps_timed": done,
        "timed_seconds": round(secs, 2),
        "epoch_seconds": round(secs * n_steps / done, 2),
        # CPU seconds of this process (all its threads): on a loaded machine, the wall time of an
        # unloaded one-thread run is close to this, the wall time above is not.
        "epoch_cpu_seconds": round(cpu * n_steps / done, 2),
        "extrapolated": done < n_steps,
        "loss": loss,
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
        "loadavg_start": load0,
        "loadavg_end": loadavg(),
    }


def run_timing(
    plan: dict[str, Any], sizes: list[str], models: list[str], modes: list[str], root: Path
) -> None:
    t = plan["timing"]
    for size in sizes:
        path = synth_data(root, size, t["sizes"][size])
        t0 = time.perf_counter()
        ds = load(str(path))
        load_s = time.perf_counter() - t0
        for model in models:
            for mode in modes:
                base = {**t["params"], **mode_params(mode)}
                if mode == "old":
                    r = time_epoch(ds, model, base, t["old_threads"], t["old_steps"][size])
                else:
                    r = time_epoch(ds, model, base, int(mode.split("-t")[1].split("-")[0]), None)
                r.update(
                    {"size": size, "model": model, "mode": mode, "train_interactions": int(ds.train.nnz)}
                )
                r["load_seconds"] = round(load_s, 1)
                print(json.dumps(r), flush=True)
                merge("timing", f"{size}/{model}/{mode}", r)


def run_pairs(plan: dict[str, Any], models: list[str], root: Path) -> None:
    """S then M epoch, alternately, ``reps`` times per model (plan ``[pairs]``): each pair's slope
    shares the host's speed of those minutes (it moves by up to 2x on this machine)."""
    t, pp = plan["timing"], plan["pairs"]
    data = {size: load(str(synth_data(root, size, t["sizes"][size]))) for size in ("S", "M")}
    params = {**t["params"], **mode_params(f"new-t{pp['threads']}")}
    x = np.log(data["M"].train.nnz / data["S"].train.nnz)
    merge("pairs", "runs", [])  # a new run replaces the last one's pairs
    merge("pairs", "code_commit", git("rev-parse", "HEAD"))
    runs: list[dict[str, Any]] = []
    for rep in range(int(pp["reps"])):
        for model in models:
            pair = {
                size: time_epoch(ds, model, params, int(pp["threads"]), None) for size, ds in data.items()
            }
            runs.append(
                {
                    "rep": rep,
                    "model": model,
                    "threads": int(pp["threads"]),
                    "S_epoch_seconds": pair["S"]["epoch_seconds"],
                    "M_epoch_seconds": pair["M"]["epoch_seconds"],
                    "slope": round(
                        float(np.log(pair["M"]["epoch_seconds"] / pair["S"]["epoch_seconds"]) / x), 3
                    ),
                    "log_interactions_ratio": float(x),
                    "loadavg": [pair["S"]["loadavg_start"][0], pair["M"]["loadavg_end"][0]],
                }
            )
            print(json.dumps(runs[-1]), flush=True)
            merge("pairs", "runs", runs)


def pair_summary(runs: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per model: median, min and max pair slope, and the slope of the per-size minimum epochs.

    >>> r = [{"model": "a", "slope": s, "S_epoch_seconds": e, "M_epoch_seconds": 10 ** s * e,
    ...       "log_interactions_ratio": float(np.log(10))} for s, e in ((1.0, 2.0), (1.2, 1.0))]
    >>> pair_summary(r)["a"]["median"], pair_summary(r)["a"]["of_minima"]
    (1.1, 1.2)
    """
    out = {}
    for model in dict.fromkeys(r["model"] for r in runs):
        rs = [r for r in runs if r["model"] == model]
        s = [r["slope"] for r in rs]
        lo_s, lo_m = min(r["S_epoch_seconds"] for r in rs), min(r["M_epoch_seconds"] for r in rs)
        out[model] = {
            "median": round(float(np.median(s)), 3),
            "min": min(s),
            "max": max(s),
            "of_minima": round(float(np.log(lo_m / lo_s) / rs[0]["log_interactions_ratio"]), 3),
        }
    return out


def slopes(timing: dict[str, Any]) -> dict[str, float]:
    """log-log slope of epoch seconds against training interactions, S -> M, per model and mode."""
    out = {}
    for key, m in timing.items():
        size, model, mode = key.split("/")
        if size != "S" or f"M/{model}/{mode}" not in timing:
            continue
        big = timing[f"M/{model}/{mode}"]
        x = np.log(big["train_interactions"] / m["train_interactions"])
        out[f"{model}/{mode}"] = round(float(np.log(big["epoch_seconds"] / m["epoch_seconds"]) / x), 3)
    return out


# --------------------------------------------------------------------------------------------- markdown
def mean_std(mean: float, std: float, n: int) -> str:
    """``mean ± std`` over n seeds; a single run prints its value alone (no "± 0.0000").

    >>> mean_std(0.36812, 0.0, 1), mean_std(0.36561, 0.01212, 3)
    ('0.3681', '0.3656 ± 0.0121')
    """
    return f"{mean:.4f}" if n < 2 else f"{mean:.4f} ± {std:.4f}"


def quality_md(results: dict[str, Any]) -> list[str]:
    lines = [
        "## Quality: new (shared propagation) vs old (per-batch propagation)",
        "",
        "Test metrics after early stopping on validation Recall@20 (all validation users); mean ± std over the n seeds run (of 2024-2026). Old: the "
        "committed per-seed runs of benchmarks/results/multimodal.json (per-batch path, same settings). Within "
        "noise: |new - old| <= 2 standard errors of the difference of means.",
        "",
        "| data set / row | R@20 old | R@20 new | within noise | N@20 old | N@20 new | within noise "
        "| best epoch old | best epoch new | s/epoch old | s/epoch new | fit s new |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key, q in results.get("quality", {}).items():
        r, n = q["compare"]["recall@20"], q["compare"]["ndcg@20"]

        def mean(runs: list[dict[str, Any]], k: str) -> str:
            v = [x[k] for x in runs if x.get(k) is not None]
            return f"{np.mean(v):.1f}" if v else "-"

        n_old, n_new = len(q["old_runs"]), len(q["new_runs"])
        lines.append(
            f"| {key} | {mean_std(r['old_mean'], r['old_std'], n_old)} (n={n_old}) "
            f"| {mean_std(r['new_mean'], r['new_std'], n_new)} (n={n_new}) "
            f"| {'yes' if r['within_noise'] else 'no'} ({r['diff']:+.4f}, 2SE {r['two_se']:.4f}) "
            f"| {mean_std(n['old_mean'], n['old_std'], n_old)} | {mean_std(n['new_mean'], n['new_std'], n_new)} "
            f"| {'yes' if n['within_noise'] else 'no'} ({n['diff']:+.4f}) "
            f"| {mean(q['old_runs'], 'best_epoch')} | {mean(q['new_runs'], 'best_epoch')} "
            f"| {mean(q['old_runs'], 'mean_epoch_seconds')} | {mean(q['new_runs'], 'mean_epoch_seconds')} "
            f"| {mean(q['new_runs'], 'fit_seconds')} |"
        )
    for key, c in results.get("controls", {}).items():
        lines += [
            "",
            f"Control {key} seed {c['seed']} (per-batch path re-run): identical to the committed "
            f"run: **{c['identical']}** (R@20 {c['rerun_test']['recall@20']:.6f} vs "
            f"{c['committed_test']['recall@20']:.6f}).",
        ]
    return lines


def timing_md(results: dict[str, Any]) -> list[str]:
    timing = results.get("timing", {})
    lines = [
        "## Epoch time on synthetic catalogues",
        "",
        "One training epoch (all training interactions, batch 2048). old = per-batch propagation, timed on "
        "its first steps and extrapolated (marked *); new-tN = shared propagation with N threads. Load "
        "average of the machine (shared with other jobs) at start and end of each epoch.",
        "",
        "| size | model | mode | train interactions | optimiser steps | epoch s | build s | peak RSS GB "
        "| load (start → end) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in timing.values():
        star = "*" if r["extrapolated"] else ""
        lines.append(
            f"| {r['size']} | {r['model']} | {r['mode']} | {r['train_interactions']:,} | {r['steps_per_epoch']} "
            f"| {r['epoch_seconds']:.1f}{star} | {r['build_seconds']:.1f} | {r['peak_rss_gb']} "
            f"| {r['loadavg_start'][0]} → {r['loadavg_end'][0]} |"
        )
    s = slopes(timing)
    if s:
        lines += [
            "",
            "Cost slope S -> M (log-log, epoch seconds vs training interactions): "
            + ", ".join(f"{k} **{v}**" for k, v in s.items())
            + ".",
        ]
    return lines + pairs_md(results)


def pairs_md(results: dict[str, Any]) -> list[str]:
    """The alternated S/M epochs (``--part pairs``) and their slopes."""
    p = results.get("pairs")
    if not p:
        return []
    lines = [
        "",
        f"### S and M alternated (code {p['code_commit'][:7]}; plan [pairs])",
        "",
        "Each row: one S epoch, then one M epoch right after it (default settings, both cores), so both "
        "see the host's speed of the same minutes.",
        "",
        "| rep | model | S epoch s | M epoch s | slope | load (start → end) |",
        "|---|---|---|---|---|---|",
    ]
    for r in p["runs"]:
        lines.append(
            f"| {r['rep']} | {r['model']} | {r['S_epoch_seconds']:.1f} | {r['M_epoch_seconds']:.1f} "
            f"| {r['slope']} | {r['loadavg'][0]} → {r['loadavg'][1]} |"
        )
    lines.append("")
    for model, s in pair_summary(p["runs"]).items():
        lines.append(
            f"- {model}: median slope **{s['median']}** (range {s['min']}-{s['max']}); slope of the "
            f"per-size minimum epochs {s['of_minima']}."
        )
    return lines


def markdown(results: dict[str, Any]) -> str:
    m = results.get("machine", {})
    head = [
        "# Graph models with an epoch linear in the data (issue 15 item 3)",
        "",
        f"Plan: benchmarks/plans/graph_linear.toml at commit {results.get('plan_commit', '?')}. Machine: "
        f"{m.get('platform')}, {m.get('cores')} cores, torch {m.get('torch')}.",
        "",
    ]
    notes = [line for n in results.get("notes", []) for line in (n, "")]
    return (
        "\n".join(head + quality_md(results) + [""] + timing_md(results) + ["", "## Notes", ""] + notes)
        + "\n"
    )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--part", choices=["quality", "timing", "pairs"], default=None)
    ap.add_argument("--only", nargs="*", default=None, help="quality rows 'dataset/label' (or control:...)")
    ap.add_argument("--seeds", nargs="*", type=int, default=None, help="a subset of the plan's seeds")
    ap.add_argument("--sizes", nargs="*", default=["S", "M"])
    ap.add_argument("--models", nargs="*", default=None)
    ap.add_argument(
        "--modes",
        nargs="*",
        default=None,
        help="old, new-tN (N threads; items renumbered for locality, the default), new-tN-given (items in the given order)",
    )
    ap.add_argument("--data-root", type=Path, default=Path("/tmp/graph_linear"))
    ap.add_argument("--render", action="store_true", help="rewrite the Markdown from the JSON")
    ap.add_argument(
        "--note", action="append", default=[], help="add a note (a Markdown paragraph) to the results"
    )
    args = ap.parse_args(argv)
    plan = tomllib.loads(PLAN.read_text())
    if args.part == "quality":
        run_quality(plan, args.only, args.seeds)
    elif args.part == "timing":
        t = plan["timing"]
        modes = args.modes or ["old", *[f"new-t{n}" for n in t["new_threads"]]]
        run_timing(plan, args.sizes, args.models or t["models"], modes, args.data_root)
    elif args.part == "pairs":
        run_pairs(plan, args.models or plan["pairs"]["models"], args.data_root)
    if args.note:
        results = read_results()
        results["notes"] = [*results.get("notes", []), *args.note]
        save(results)
    if args.render or args.part is None:
        save(read_results())


if __name__ == "__main__":
    main()
