"""Cold start as a model (issue 17 item 1): the ``coldstart`` recommender through ``modalrec fit`` + ``evaluate``.

Reproduces ``benchmarks/results/coldstart.{json,md}`` from the plan ``benchmarks/plans/coldstart.toml``
(rows, grids, seeds; committed before the run, its commit is recorded)::

    nice -n 10 python benchmarks/coldstart.py            # ~30-60 min on 2 busy cores
    python benchmarks/coldstart.py --add-seeds 2025 2026  # only the missing model seeds, merged into the results

Protocol (DESIGN.md): ML-100K raw pipeline, per-user random 8:1:1 split seed 2024, cold-start variant
(10% of items, seeded, removed from training; test ranks the cold items only, train + valid masked).
Rows: the ``coldstart`` model (one TOML config per model seed, fitted and evaluated by the CLI), the
expected random ranking, ItemKNN on exactly the same raw content features, and on warm items the
collaborative models (each with a validation grid). Never against popularity (every cold item has
popularity 0). Selection on validation only.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import tomli_w
import torch

from modalrec.core.io import atomic_write_json, atomic_write_text

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import float_fingerprint, host_line, host_record  # benchmarks/machine.py

ROOT = Path(__file__).resolve().parents[1]
PLAN = ROOT / "benchmarks" / "plans" / "coldstart.toml"
CACHE = Path.home() / ".cache" / "modalrec"
KS = (10, 20, 50)


def log(*a: Any) -> None:
    print(f"[{time.strftime('%H:%M:%S')}]", *a, flush=True)


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()


def environment(command: str) -> dict[str, Any]:
    """What a re-run needs to match: versions, the host (its float fingerprint: trained numbers can
    differ in the last digits between CPUs, see benchmarks/machine.py) and the command."""
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "host": host_record(),
        "command": command,
    }


def run_config(plan: dict[str, Any], seed: int, l2: float) -> dict[str, Any]:
    """The TOML run configuration of one model seed (what ``modalrec fit`` reads)."""
    f = plan["features"]
    return {
        "data": {
            "name": plan["split"]["dataset"],
            "split": plan["split"]["split"],
            "seed": plan["split"]["split_seed"],
        },
        "encode": {
            "modalities": list(f["modalities"]),
            "cache_dir": str(CACHE),
            "options": {m: dict(f[m]) for m in f["modalities"]},
        },
        "model": {
            "name": "coldstart",
            "params": {
                **plan["coldstart"]["params"],
                "seed": seed,
                "collaborative": {"model": plan["coldstart"]["collaborative"], "params": {"l2": l2}},
            },
        },
        "evaluate": {"ks": list(KS)},
    }


def cli(*args: str) -> str:
    """Run ``modalrec ARGS`` (the installed CLI); its stdout."""
    t0 = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-c", "from modalrec.cli import main; main()", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    if out.returncode != 0:
        raise RuntimeError(f"modalrec {' '.join(args)} failed ({out.returncode}): {out.stderr[-2000:]}")
    log(f"  modalrec {args[0]} ... {time.perf_counter() - t0:.0f}s")
    return out.stdout


def expected_random(ds: Any, cand: np.ndarray, split: str = "test") -> dict[str, float]:
    """Expected Recall/Precision@K of a uniformly random order of each user's unmasked candidates."""
    truth = ds.target(split)[:, cand].tocsr()
    seen = ds.seen(split)[:, cand].tocsr()
    users = np.flatnonzero(np.diff(truth.indptr) > 0)
    n_c = len(cand) - np.diff(seen.indptr)[users]
    n_rel = np.diff(truth.indptr)[users]
    out = {}
    for k in KS:
        kk = np.minimum(k, n_c)
        out[f"recall@{k}"] = float(np.mean(kk / n_c))  # each relevant item is in the top k w.p. k / n_c
        out[f"precision@{k}"] = float(np.mean(n_rel * (kk / n_c) / k))
    out["n_users"] = len(users)
    return out


def content_knn_scorer(ds: Any, modalities: list[str], warm: np.ndarray, cold: np.ndarray, k: int) -> Any:
    """ItemKNN on raw content: score(u, cold i) = sum over the user's training items j among the k
    warm items most similar to i (cosine of L2-normalised feature rows; missing modality = zero block)."""
    blocks = []
    for m in modalities:
        x = np.asarray(ds.features[m], np.float32)
        x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
        mask = ds.feature_masks.get(m, np.ones(len(x), bool))
        blocks.append(np.where(mask[:, None], x, 0.0))
    X = np.concatenate(blocks, axis=1) / np.sqrt(len(modalities))
    S = X[warm] @ X[cold].T  # warm x cold cosine
    if 0 < k < S.shape[0]:
        thr = -np.partition(-S, k - 1, axis=0)[k - 1]
        S = np.where(thr <= S, S, 0.0)
    full = np.zeros((ds.n_items, ds.n_items), np.float32)
    full[np.ix_(warm, cold)] = S
    R = sp.csr_matrix(ds.train, dtype=np.float32)

    def score(users: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.asarray(R[users] @ full, dtype=np.float32))

    return score


def metrics_of(res: Any) -> dict[str, Any]:
    return {"test": res.metrics, "users": res.n_users}


def part_warm(plan: dict[str, Any], ds: Any, warm: np.ndarray) -> tuple[dict[str, Any], float]:
    """Collaborative models on warm items, each with its validation grid (full-ranking valid R@20)."""
    from modalrec.evaluation.protocol import evaluate
    from modalrec.models import create

    W = plan["warm"]
    als = dict(W["als"])
    grids = {
        "EASE": [("ease", {"l2": v}) for v in W["ease_l2"]],
        "ItemKNN (interactions)": [("itemknn", {"k": v}) for v in W["itemknn_k"]],
        "ALS (implicit)": [
            ("als", {**{k: v for k, v in als.items() if k != "reg_grid"}, "reg": r}) for r in als["reg_grid"]
        ],
    }
    rows: dict[str, Any] = {}
    for label, grid in grids.items():
        trials = []
        for name, params in grid:
            t0 = time.perf_counter()
            m = create(name, **params).fit(ds, progress=False)
            v = evaluate(m, ds, "valid", ks=(20,))["recall@20"]
            trials.append(
                {
                    "params": params,
                    "valid_recall@20": v,
                    "fit_seconds": round(time.perf_counter() - t0, 1),
                    "model": m,
                }
            )
        best = max(trials, key=lambda t: t["valid_recall@20"])
        m = best.pop("model")
        rows[label] = {
            **metrics_of(evaluate(m, ds, "test", ks=KS, candidate_items=warm)),
            "selected": best["params"],
            "grid": [{k: v for k, v in t.items() if k != "model"} for t in trials],
        }
        log(f"  warm {label}: {best['params']} test warm R@20 {rows[label]['test']['recall@20']:.4f}")
    l2 = float(rows["EASE"]["selected"]["l2"])
    return rows, l2


def _same_config(run_dir: Path, raw: dict[str, Any]) -> bool:
    """Whether ``run_dir`` is a finished run of exactly this configuration."""
    from modalrec.workflows.config import config_from_dict

    manifest = run_dir / "manifest.json"
    if not manifest.exists():
        return False
    return bool(json.loads(manifest.read_text()).get("config") == config_from_dict(raw).model_dump())


def part_coldstart(
    plan: dict[str, Any], l2: float, scratch: Path, warm: np.ndarray, reuse: bool = False
) -> list[dict[str, Any]]:
    """One ``modalrec fit`` + ``modalrec evaluate --cold`` per model seed; warm metrics from the run."""
    from modalrec.evaluation.protocol import evaluate
    from modalrec.workflows.rundir import load_run

    out = []
    for seed in plan["coldstart"]["seeds"]:
        cfg = scratch / f"coldstart-{seed}.toml"
        cfg.write_text(tomli_w.dumps(run_config(plan, seed, l2)))
        run_dir = scratch / f"run-{seed}"
        t0 = time.perf_counter()
        fit_s: float | None = None
        if reuse and _same_config(run_dir, run_config(plan, seed, l2)):
            log(f"  reusing {run_dir} (fitted by `modalrec fit {cfg} --out {run_dir}` in a parallel process)")
        else:
            cli("fit", str(cfg), "--out", str(run_dir), "--overwrite", "--quiet")
            fit_s = round(time.perf_counter() - t0, 1)
        cold = json.loads(cli("evaluate", str(run_dir), "--cold", "--json"))
        valid_cold = json.loads(cli("evaluate", str(run_dir), "--cold", "--split", "valid", "--json"))
        run = load_run(run_dir)
        w = evaluate(run.model, run.dataset, "test", ks=KS, candidate_items=warm)
        allr = evaluate(run.model, run.dataset, "test", ks=KS)
        meta = run.model.meta
        out.append(
            {
                "seed": seed,
                "config": str(cfg.name),
                "test_cold": cold["metrics"],
                "test_cold_users": cold["n_users"],
                "valid_cold_recall@20": valid_cold["metrics"]["recall@20"],
                "test_warm": w.metrics,
                "test_warm_users": w.n_users,
                "test_all": allr.metrics,
                "blend_weight": meta.get("blend_grid")
                and max(meta["blend_grid"], key=lambda g: g["valid"])["tower_weight"],
                "tower_best_steps": [h["best_step"] for h in meta["towers"]],
                "fit_seconds": fit_s,
                "fitted": "by this script"
                if fit_s is not None
                else "reused: same config, fitted in parallel",
            }
        )
        log(
            f"  coldstart seed {seed}: cold R@20 {cold['metrics']['recall@20']:.4f}, warm R@20 {w['recall@20']:.4f}"
        )
    return out


def part_content_knn(plan: dict[str, Any], ds: Any, warm: np.ndarray, cold: np.ndarray) -> dict[str, Any]:
    """ItemKNN on the plan's raw content features, k chosen on validation (cold items)."""
    from modalrec.evaluation.protocol import evaluate
    from modalrec.models import create

    anchor = create("popularity").fit(ds, progress=False)  # evaluate() needs a model; the scorer ranks
    mods = list(plan["features"]["modalities"])
    trials = []
    for k in plan["itemknn_content"]["k_grid"]:
        sc = content_knn_scorer(ds, mods, warm, cold, k)
        v = evaluate(anchor, ds, "valid", ks=(20,), candidate_items=cold, scorer=sc)["recall@20"]
        trials.append({"k": k, "valid_recall@20": v})
    best = max(trials, key=lambda t: t["valid_recall@20"])
    res = evaluate(
        anchor,
        ds,
        "test",
        ks=KS,
        candidate_items=cold,
        scorer=content_knn_scorer(ds, mods, warm, cold, best["k"]),
    )
    log(f"  itemknn content {mods}: k {best['k']} test cold R@20 {res['recall@20']:.4f}")
    return {**metrics_of(res), "selected_k": best["k"], "grid": trials, "modalities": mods}


def summarise(plan: dict[str, Any], R: dict[str, Any]) -> dict[str, Any]:
    """Means and std over the model seeds, ratios and the verdict against the plan's targets."""
    runs = R["coldstart"]
    agg: dict[str, Any] = {}
    for part in ("test_cold", "test_warm", "test_all"):
        agg[part] = {
            key: {
                "mean": float(np.mean([r[part][key] for r in runs])),
                "std": float(np.std([r[part][key] for r in runs])),
            }
            for key in runs[0][part]
        }
    T = plan["targets"]
    cold20 = agg["test_cold"]["recall@20"]["mean"]
    knn20 = R["itemknn_content"]["test"]["recall@20"]
    warm_mean, warm_std = agg["test_warm"]["recall@20"]["mean"], agg["test_warm"]["recall@20"]["std"]
    best_warm = max(R["warm"].items(), key=lambda kv: kv[1]["test"]["recall@20"])
    gap = best_warm[1]["test"]["recall@20"] - warm_mean
    return {
        "aggregate": agg,
        "ratio_vs_itemknn_content": cold20 / max(knn20, 1e-12),
        "ratio_vs_random": cold20 / max(R["random"]["recall@20"], 1e-12),
        "verdict": {
            "cold_recall@20": cold20,
            "cold_met": cold20 >= T["cold_recall20"],
            "ratio_vs_itemknn_content": cold20 / max(knn20, 1e-12),
            "ratio_met": cold20 / max(knn20, 1e-12) >= T["ratio_vs_itemknn_content"],
            "best_warm_row": best_warm[0],
            "warm_gap": gap,
            "warm_allowed_gap": T["warm_noise_std"] * warm_std,
            "warm_met": gap <= T["warm_noise_std"] * warm_std,
        },
    }


def mean_std(a: dict[str, float], n: int) -> str:
    """``mean ± std`` over seeds; one seed prints its value alone (no "± 0.0000").

    >>> mean_std({"mean": 0.5, "std": 0.0}, 1), mean_std({"mean": 0.5, "std": 0.01}, 3)
    ('0.5000', '0.5000 ± 0.0100')
    """
    return f"{a['mean']:.4f}" if n < 2 else f"{a['mean']:.4f} ± {a['std']:.4f}"


def mean_label(n: int) -> str:
    return "one seed" if n < 2 else f"mean ± std over {n} seeds"


def _pair(t: dict[str, Any] | None) -> str:
    """``R@20 | NDCG@20`` cells of a metrics dict ("-" when the row has no such column)."""
    return "- | -" if not t else f"{t['recall@20']:.4f} | {t['ndcg@20']:.4f}"


def _epoch(e: int | None) -> str:
    """`` (epoch N)`` of a trained row's early-stopped fit; nothing for closed-form rows."""
    return "" if e is None else f" (epoch {e})"


def content_rows_md(R: dict[str, Any]) -> list[str]:
    """The side-by-side table of every content-capable row (plan amendment), cold and warm columns.

    Why one table: issue 18 asks that each content row be read against the random and content-ItemKNN
    references on the same split; the ratios are computed here from the same stored numbers.
    """
    if "amendment" not in R:
        return []
    rnd = R["random"]["recall@20"]
    knn = R["itemknn_content"]["test"]["recall@20"]
    agg = R["summary"]["aggregate"]
    n = len(R["coldstart"])
    L = [
        "## Every content-capable row, cold and warm (rows added by plan amendment "
        f"{R['amendment']['plan_commit'][:7]}, after the coldstart rows' test numbers were committed)",
        "",
        "Cold columns rank the 168 cold items only, warm columns the warm items only (test; train + valid masked). "
        "New rows: the four MiniLM modalities of the coldstart model, one seed (2024); each grid point fitted once, "
        "the cold column reports the point best on validation R@20 over the cold items, the warm column the point "
        "best over the warm items (all validation users). Imported rows: committed results of "
        "benchmarks/llm_features.py on exactly this split (same CSR matrices and cold items, checked), MiniLM of "
        "the joined text only, not re-run.",
        "",
        "| row | seeds | cold R@20 | cold NDCG@20 | warm R@20 | warm NDCG@20 | cold / random | cold / content ItemKNN "
        "| selected on validation: cold; warm | provenance |",
        "|---|---|---|---|---|---|---|---|---|---|",
        f"| expected random ranking | - | {rnd:.4f} | - | - | - | 1.00x | {rnd / knn:.2f}x | - | analytic |",
        f"| ItemKNN on the same raw content | deterministic | {_pair(R['itemknn_content']['test'])} | - | - | "
        f"{knn / rnd:.2f}x | 1.00x | k {R['itemknn_content']['selected_k']} | plan {R['plan_commit'][:7]} |",
        f"| coldstart (mean of {n} seeds) | {', '.join(str(r['seed']) for r in R['coldstart'])} | "
        f"{agg['test_cold']['recall@20']['mean']:.4f} | {agg['test_cold']['ndcg@20']['mean']:.4f} | "
        f"{agg['test_warm']['recall@20']['mean']:.4f} | {agg['test_warm']['ndcg@20']['mean']:.4f} | "
        f"{ratio(agg['test_cold']['recall@20']['mean'], rnd)} | {ratio(agg['test_cold']['recall@20']['mean'], knn)} "
        f"| tower steps, blend weight (table above) | plan {R['plan_commit'][:7]} |",
    ]
    for r in R.get("imported_rows", []):
        L.append(
            f"| {r['label']} (imported) | {r['seeds']} | {_pair(r['test_cold'])} | {_pair(r['test_warm'])} | "
            f"{ratio(r['test_cold']['recall@20'], rnd)} | {ratio(r['test_cold']['recall@20'], knn)} | "
            f"{r['selected_cold']}; {r['selected_warm']} | {r['source']} |"
        )
    for name, r in R.get("content_rows", {}).items():
        if "not_run" in r:
            L.append(f"| {name} (added) | - | not run: {r['not_run']} | | | | | | | |")
            continue
        c = r["test_cold"]["recall@20"]
        L.append(
            f"| {name} (added) | {'deterministic' if r['best_epoch_cold'] is None else 2024} | {_pair(r['test_cold'])} | {_pair(r['test_warm'])} | {ratio(c, rnd)} | "
            f"{ratio(c, knn)} | {r['selected_cold']}{_epoch(r['best_epoch_cold'])}; {r['selected_warm']}"
            f"{_epoch(r['best_epoch_warm'])} | plan {r.get('plan_commit', R['amendment']['plan_commit'])[:7]}, code "
            f"{r['code_commit'][:7]}, {r['ran']}, {r['seconds']} s, load {r['load_average_at_start'][0]:.1f}"
            f"-{r['load_average_at_end'][0]:.1f} |"
        )
    L += ["", "Grids (validation R@20 over cold items / over warm items, fit seconds):", ""]
    for name, r in R.get("content_rows", {}).items():
        pts = "; ".join(
            f"{t['params']}: {t['valid_cold_recall@20']:.4f} / {t['valid_warm_recall@20']:.4f}, {t['fit_seconds']} s"
            for t in r.get("grid", [])
        )
        L.append(f"- {name}: {pts or 'not run'}")
        for p in r.get("replaces", []):
            L.append(
                f"  - replaces its run of {p['ran']} under plan {p['plan_commit'][:7]} (narrower grid): selected "
                f"{p['selected_cold']} / {p['selected_warm']}, valid R@20 {p['valid_cold_recall@20']:.4f} / "
                f"{p['valid_warm_recall@20']:.4f}, test cold {_pair(p['test_cold'])}, warm {_pair(p['test_warm'])} "
                "(R@20 | NDCG@20)"
            )
    return [*L, ""]


def ratio(x: float, ref: float) -> str:
    """``x / ref`` as ``1.23x`` (the ratio columns of the content table)."""
    return f"{x / max(ref, 1e-12):.2f}x"


def markdown(R: dict[str, Any]) -> str:
    S = R["summary"]
    V = S["verdict"]
    L = [
        "# Cold start as a model (ML-100K cold-start split)",
        "",
        f"Reproduce: `{R['environment']['command']}`. Plan: `benchmarks/plans/coldstart.toml` at commit "
        f"{R['plan_commit']}; code at {R['code_commit']}. Wall time {R['seconds']} s; load average at start "
        f"{R['load_average_at_start']}, at end {R['load_average_at_end']} (2 cores shared with other jobs).",
        "",
        *([f"Host: {host_line(R['environment']['host'])}.", ""] if "host" in R["environment"] else []),
        f"Protocol: {R['protocol']}",
        "",
        *(
            [
                f"**Not run: model seeds {R['seeds_not_run']} of the plan's {R['plan']['coldstart']['seeds']}** "
                "(their fits did not finish before this session's CPU stop; the machine's load average was ~30 "
                "on 2 cores). Seed noise below is therefore unknown (std over one seed is 0).",
                "",
            ]
            if R.get("seeds_not_run")
            else []
        ),
        f"Features (model and content ItemKNN alike): {R['features']}",
        "",
        "## Cold items (test ranks the cold items only)",
        "",
        "| row | R@10 | R@20 | R@50 | NDCG@20 | P@20 | users | selected on validation (all validation users) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    rnd = R["random"]
    L.append(
        f"| expected random ranking | {rnd['recall@10']:.4f} | {rnd['recall@20']:.4f} | {rnd['recall@50']:.4f} | - "
        f"| {rnd['precision@20']:.4f} | {rnd['n_users']} | - |"
    )
    k = R["itemknn_content"]
    t = k["test"]
    L.append(
        f"| ItemKNN on the same raw content | {t['recall@10']:.4f} | {t['recall@20']:.4f} | {t['recall@50']:.4f} | "
        f"{t['ndcg@20']:.4f} | {t['precision@20']:.4f} | {k['users']} | k {k['selected_k']} |"
    )
    for r in R["coldstart"]:
        t = r["test_cold"]
        L.append(
            f"| coldstart, seed {r['seed']} (modalrec fit + evaluate --cold) | {t['recall@10']:.4f} | "
            f"{t['recall@20']:.4f} | {t['recall@50']:.4f} | {t['ndcg@20']:.4f} | {t['precision@20']:.4f} | "
            f"{r['test_cold_users']} | tower steps {r['tower_best_steps']}, blend weight {r['blend_weight']} |"
        )
    a = S["aggregate"]["test_cold"]
    L.append(
        f"| **coldstart, {mean_label(len(R['coldstart']))}** | "
        + " | ".join(
            mean_std(a[m], len(R["coldstart"]))
            for m in ("recall@10", "recall@20", "recall@50", "ndcg@20", "precision@20")
        )
        + " | | |"
    )
    L += [
        "",
        f"coldstart / ItemKNN on the same content (R@20): **{S['ratio_vs_itemknn_content']:.2f}x**; / random expectation: "
        f"{S['ratio_vs_random']:.1f}x.",
        "",
        "Fits: "
        + "; ".join(
            f"seed {r['seed']}: {r.get('fitted', 'by this script')}"
            + (f" ({r['fit_seconds']} s incl. encoding from cache)" if r.get("fit_seconds") else "")
            for r in R["coldstart"]
        )
        + ".",
        "",
        "## Warm items (test ranks the warm items only)",
        "",
        "| row | R@10 | R@20 | R@50 | NDCG@20 | P@20 | users | selected on validation (all validation users) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in R["warm"].items():
        t = r["test"]
        L.append(
            f"| {name} | {t['recall@10']:.4f} | {t['recall@20']:.4f} | {t['recall@50']:.4f} | {t['ndcg@20']:.4f} | "
            f"{t['precision@20']:.4f} | {r['users']} | {r['selected']} |"
        )
    a = S["aggregate"]["test_warm"]
    L.append(
        f"| **coldstart, {mean_label(len(R['coldstart']))}** | "
        + " | ".join(
            mean_std(a[m], len(R["coldstart"]))
            for m in ("recall@10", "recall@20", "recall@50", "ndcg@20", "precision@20")
        )
        + f" | {R['coldstart'][0]['test_warm_users']} | blend with EASE |"
    )
    a = S["aggregate"]["test_all"]
    L += [
        "",
        "coldstart over all items (full ranking, cold and warm together), R@20: "
        f"{mean_std(a['recall@20'], len(R['coldstart']))}.",
        "",
        *content_rows_md(R),
        "## Verdict",
        "",
        f"- cold R@20 {V['cold_recall@20']:.4f} (target >= {R['plan']['targets']['cold_recall20']}): "
        f"{'met' if V['cold_met'] else 'NOT met'}",
        f"- vs ItemKNN on the same content {V['ratio_vs_itemknn_content']:.3f}x (target >= "
        f"{R['plan']['targets']['ratio_vs_itemknn_content']}x): {'met' if V['ratio_met'] else 'NOT met'}",
        f"- warm R@20 gap to the best warm row ({V['best_warm_row']}) {V['warm_gap']:+.4f}, allowed "
        f"{V['warm_allowed_gap']:.4f} (2 std over seeds): {'met' if V['warm_met'] else 'NOT met'}",
        "",
        *(["## Notes", "", *[f"- {n}" for n in R.get("notes", [])], ""] if R.get("notes") else []),
        "Recall definition: hits / #relevant (modalrec default).",
        "",
    ]
    return "\n".join(L)


def finish(args: argparse.Namespace) -> None:
    """Complete an interrupted run: the rows of ``partial.json`` plus the finished seeds' runs."""
    R = json.loads((args.scratch / "partial.json").read_text())
    plan = R["plan"]
    planned = list(plan["coldstart"]["seeds"])
    import modalrec.data as mdata  # noqa: F401  (registers the loaders used by load_run)
    from modalrec.workflows.rundir import load_run

    ds = load_run(args.scratch / f"run-{args.finish[0]}").dataset
    warm = np.setdiff1d(np.arange(ds.n_items), np.asarray(ds.cold_items, dtype=np.int64))
    sub = {**plan, "coldstart": {**plan["coldstart"], "seeds": list(args.finish)}}
    R["coldstart"] = part_coldstart(sub, R["coldstart_collaborative_l2"], args.scratch, warm, reuse=True)
    R["seeds_not_run"] = [s for s in planned if s not in args.finish]
    R["summary"] = summarise(plan, R)
    R["seconds"] = None
    R["load_average_at_end"] = list(os.getloadavg())
    R["environment"] = environment(
        "nice -n 10 python benchmarks/coldstart.py (interrupted), then --finish "
        + " ".join(map(str, args.finish))
    )
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / "coldstart.json", R)
    atomic_write_text(args.out / "coldstart.md", markdown(R))
    log("verdict", R["summary"]["verdict"])


def add_seeds(args: argparse.Namespace) -> None:
    """Fit + evaluate the plan's seeds missing from the committed results, one at a time, and merge them.

    The other rows (random, content ItemKNN, warm models, the EASE l2 of the collaborative member) stay as
    committed: they do not depend on the model seed. The results are rewritten after every finished seed,
    so a run stopped by its timeout keeps the seeds it finished; each new row records its code commit and
    the load average around its fit.
    """
    import modalrec.data as mdata  # noqa: F401  (registers the loaders)
    from modalrec.workflows.config import config_from_dict
    from modalrec.workflows.tuning import load_with_features

    R = json.loads((args.out / "coldstart.json").read_text())
    plan = R["plan"]
    unknown = [s for s in args.add_seeds if s not in plan["coldstart"]["seeds"]]
    if unknown:
        raise SystemExit(f"seeds {unknown} are not in the plan's {plan['coldstart']['seeds']}")
    ds = load_with_features(config_from_dict(run_config(plan, args.add_seeds[0], 1.0)))
    warm = np.setdiff1d(np.arange(ds.n_items), np.asarray(ds.cold_items, dtype=np.int64))
    args.scratch.mkdir(parents=True, exist_ok=True)
    commit, fingerprint = git("rev-parse", "HEAD"), float_fingerprint()
    for seed in args.add_seeds:
        load0 = list(os.getloadavg())
        sub = {**plan, "coldstart": {**plan["coldstart"], "seeds": [seed]}}
        (row,) = part_coldstart(
            sub, R["coldstart_collaborative_l2"], args.scratch, warm, reuse=args.reuse_runs
        )
        row |= {
            "code_commit": commit,
            "host_fingerprint": fingerprint,
            "load_average_at_start": load0,
            "load_average_at_end": list(os.getloadavg()),
        }
        row["fitted"] = (
            f"by `--add-seeds` at {time.strftime('%Y-%m-%d %H:%M')} UTC, code {commit[:7]}, load average "
            f"{load0[0]:.1f} -> {row['load_average_at_end'][0]:.1f}"
        )
        R["coldstart"] = sorted(
            [r for r in R["coldstart"] if r["seed"] != seed] + [row], key=lambda r: r["seed"]
        )
        done = {r["seed"] for r in R["coldstart"]}
        R["seeds_not_run"] = [s for s in plan["coldstart"]["seeds"] if s not in done]
        R["summary"] = summarise(plan, R)
        R["notes"] = [n for n in R.get("notes", []) if not n.startswith("One model seed only")]
        R["environment"]["command"] = (
            R["environment"]["command"].split("; then --add-seeds")[0]
            + "; then --add-seeds "
            + " ".join(str(r["seed"]) for r in R["coldstart"] if "code_commit" in r)
        )
        atomic_write_json(args.out / "coldstart.json", R)
        atomic_write_text(args.out / "coldstart.md", markdown(R))
        log(f"seed {seed} merged; verdict", R["summary"]["verdict"])


def grid_points(grid: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every combination of a plan grid (``{name: values}``), in the plan's order.

    >>> grid_points({"a": [1, 2], "b": [0.5]})
    [{'a': 1, 'b': 0.5}, {'a': 2, 'b': 0.5}]
    """
    import itertools

    names = list(grid)
    return [dict(zip(names, vals, strict=True)) for vals in itertools.product(*grid.values())]


def fit_point(
    spec: dict[str, Any], point: dict[str, Any], ds: Any, warm: np.ndarray, cold: np.ndarray
) -> tuple[Any, dict[str, Any]]:
    """Fit one grid point with the plan's modalities; validation R@20 over cold and over warm items.

    Both validation columns come from the same fit, so the cold and the warm choice cost one grid walk.
    """
    from modalrec.evaluation.protocol import evaluate
    from modalrec.models import create

    mods = list(spec["modalities"])
    t0 = time.perf_counter()
    model = create(spec["model"], **spec["params"], **point, modalities=mods).fit(ds, progress=False)
    trial: dict[str, Any] = {
        "params": point,
        "fit_seconds": round(time.perf_counter() - t0, 1),
        "best_epoch": model.meta.get("best_epoch"),
    }
    for col, cand in (("cold", cold), ("warm", warm)):
        res = evaluate(model, ds, "valid", ks=(20,), candidate_items=cand)
        trial[f"valid_{col}_recall@20"] = float(res["recall@20"])
    log(f"  {spec['label']} {point}: { ({k: v for k, v in trial.items() if k != 'params'}) }")
    return model, trial


def part_content_row(spec: dict[str, Any], ds: Any, warm: np.ndarray, cold: np.ndarray) -> dict[str, Any]:
    """One content-capable row: its grid on validation, then test once per reported point.

    The cold column reports the point with the best validation R@20 over the cold items, the warm
    column the point best over the warm items (the plan amendment's rule; llm_features does the same).
    """
    from modalrec.evaluation.protocol import evaluate

    fitted = [fit_point(spec, point, ds, warm, cold) for point in grid_points(spec["grid"])]
    row: dict[str, Any] = {"grid": [t for _, t in fitted], "modalities": list(spec["modalities"])}
    for col, cand in (("cold", cold), ("warm", warm)):
        model, best = max(fitted, key=lambda mt: mt[1][f"valid_{col}_recall@20"])
        res = evaluate(model, ds, "test", ks=KS, candidate_items=cand)
        row[f"test_{col}"] = res.metrics
        row[f"test_{col}_users"] = res.n_users
        row[f"selected_{col}"] = best["params"]
        row[f"valid_{col}_recall@20"] = best[f"valid_{col}_recall@20"]
        row[f"best_epoch_{col}"] = best["best_epoch"]
    log(
        f"  {spec['label']}: cold R@20 {row['test_cold']['recall@20']:.4f}, warm {row['test_warm']['recall@20']:.4f}"
    )
    return row


def imported_llm_rows(path: Path) -> list[dict[str, Any]]:
    """The committed MiniLM rows of ``llm_features.json`` (same split, checked): shown, not re-run.

    Only R@20 and NDCG@20 exist there; its content EASE rows ran under plan ca2556a (results commit
    85d58fa), its graphmm row under plan d2e1bb8 (results commit 41bfa7a).
    """
    L = json.loads(path.read_text())
    e = L["ease"]["text_minilm"]
    g = L["graphmm"]["text_minilm"]["2024"]
    return [
        {
            "label": "content EASE (pseudo-users), MiniLM joined text only",
            "source": "benchmarks/results/llm_features.json, plan ca2556a, results commit 85d58fa",
            "seeds": "deterministic",
            "test_cold": e["cold"]["test"],
            "test_warm": e["warm"]["test"],
            "selected_cold": e["cold"]["chosen"],
            "selected_warm": e["warm"]["chosen"],
        },
        {
            "label": "graphmm softmax + content + SSL (ours), MiniLM joined text only",
            "source": "benchmarks/results/llm_features.json, plan d2e1bb8, results commit 41bfa7a",
            "seeds": "2024",
            "test_cold": g["cold"],
            "test_warm": g["warm"],
            "selected_cold": f"ssl_weight 0.1 (fixed), best epoch {g['best_epoch']}",
            "selected_warm": "the same fit",
        },
    ]


def replaced(old: dict[str, Any]) -> dict[str, Any]:
    """What a re-run row replaces (its plan, choices, validation and test R@20 / NDCG@20), kept in the results
    so that a grid widened after a first run cannot hide the first run's numbers."""
    keep = (
        "plan_commit",
        "ran",
        "selected_cold",
        "selected_warm",
        "valid_cold_recall@20",
        "valid_warm_recall@20",
    )
    return {k: old.get(k) for k in keep} | {
        f"test_{c}": {m: old[f"test_{c}"][m] for m in ("recall@20", "ndcg@20")} for c in ("cold", "warm")
    }


def add_rows(args: argparse.Namespace) -> None:
    """Run the amended plan's content rows named in ``--add-rows`` and merge them into the results.

    A row whose estimate would end past ``--deadline`` (HH:MM UTC, today) is recorded as not run, so
    a queue job started late never overruns the session. Results are rewritten after each row.
    """
    import modalrec.data as mdata  # noqa: F401  (registers the loaders)
    from modalrec.workflows.config import config_from_dict
    from modalrec.workflows.tuning import load_with_features

    R = json.loads((args.out / "coldstart.json").read_text())
    plan = tomllib.loads(PLAN.read_text())
    specs = {r["label"]: r for r in plan["content_rows"]}
    unknown = [n for n in args.add_rows if n not in specs]
    if unknown:
        raise SystemExit(f"rows {unknown} are not in the plan's {list(specs)}")
    rows = R.setdefault("content_rows", {})
    for r in rows.values():  # rows run under an earlier amendment keep that amendment's commit
        r.setdefault("plan_commit", R["amendment"]["plan_commit"])
    R["amendment"] = {
        "plan_commit": git("log", "-1", "--format=%H", "--", str(PLAN.relative_to(ROOT))),
        "rows": plan["content_rows"],
        "imported": plan["imported"],
    }
    R["imported_rows"] = imported_llm_rows(args.out / "llm_features.json")
    deadline = time.mktime(time.strptime(time.strftime("%Y-%m-%d ") + args.deadline, "%Y-%m-%d %H:%M"))
    ds = None
    for name in args.add_rows:
        spec = {**specs[name], "modalities": plan["features"]["modalities"]}
        if time.time() + 60 * spec["est_minutes"] > deadline:
            rows[name] = {
                "not_run": f"would end past the deadline {args.deadline} UTC (started {time.strftime('%H:%M')})"
            }
            log(f"{name}: not run ({rows[name]['not_run']})")
        else:
            if ds is None:
                ds = load_with_features(config_from_dict(run_config(plan, 2024, 1.0)))
                warm = np.setdiff1d(np.arange(ds.n_items), np.asarray(ds.cold_items, dtype=np.int64))
                cold = np.asarray(ds.cold_items, dtype=np.int64)
                fingerprint = float_fingerprint()  # the host does not change between rows
            load0, t0 = list(os.getloadavg()), time.perf_counter()
            old = rows.get(name, {})
            rows[name] = part_content_row(spec, ds, warm, cold) | {
                "plan_commit": R["amendment"]["plan_commit"],
                "replaces": [*old.get("replaces", []), replaced(old)] if "test_cold" in old else [],
                "code_commit": git("rev-parse", "HEAD"),
                "host_fingerprint": fingerprint,
                "ran": f"{time.strftime('%Y-%m-%d %H:%M')} UTC",
                "seconds": round(time.perf_counter() - t0, 1),
                "load_average_at_start": load0,
                "load_average_at_end": list(os.getloadavg()),
            }
        ran = [n for n, r in rows.items() if "not_run" not in r]
        R["environment"]["command"] = R["environment"]["command"].split("; then --add-rows")[0] + (
            "; then --add-rows " + " ".join(f"'{n}'" for n in ran) if ran else ""
        )
        atomic_write_json(args.out / "coldstart.json", R)
        atomic_write_text(args.out / "coldstart.md", markdown(R))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--scratch", type=Path, default=Path("/tmp/modalrec-coldstart-bench"))
    ap.add_argument("--render", action="store_true", help="only rewrite the Markdown from the JSON")
    ap.add_argument(
        "--reuse-runs",
        action="store_true",
        help="use a finished run in --scratch whose config equals the seed's (fitted in parallel by the same command)",
    )
    ap.add_argument(
        "--finish",
        type=int,
        nargs="+",
        metavar="SEED",
        help="evaluate only these finished seed runs in --scratch, with the other rows from its partial.json "
        "(written by an interrupted run of this script); the missing seeds are recorded as not run",
    )
    ap.add_argument(
        "--add-seeds",
        type=int,
        nargs="+",
        metavar="SEED",
        help="fit and evaluate these planned model seeds and merge them into the committed results in --out "
        "(the seed-independent rows are kept)",
    )
    ap.add_argument(
        "--add-rows",
        nargs="+",
        metavar="LABEL",
        help="run these [[content_rows]] of the amended plan and merge them into the committed results",
    )
    ap.add_argument(
        "--deadline", default="23:59", help="HH:MM UTC today: rows that would end later are not run"
    )
    args = ap.parse_args()
    if args.add_rows:
        add_rows(args)
        return
    if args.add_seeds:
        add_seeds(args)
        return
    if args.finish:
        finish(args)
        return
    if args.render:
        R = json.loads((args.out / "coldstart.json").read_text())
        atomic_write_text(args.out / "coldstart.md", markdown(R))
        return
    import modalrec.data as mdata
    from modalrec.workflows.config import config_from_dict
    from modalrec.workflows.tuning import load_with_features

    plan = tomllib.loads(PLAN.read_text())
    t0 = time.perf_counter()
    load0 = list(os.getloadavg())
    args.scratch.mkdir(parents=True, exist_ok=True)
    # the data set and features exactly as `modalrec fit` builds them from the seed-independent config
    ds = load_with_features(config_from_dict(run_config(plan, plan["coldstart"]["seeds"][0], 1.0)))
    assert isinstance(ds, mdata.Dataset)
    cold = np.asarray(ds.cold_items, dtype=np.int64)
    warm = np.setdiff1d(np.arange(ds.n_items), cold)
    log(f"cold-start split: {len(cold)} cold items, {len(warm)} warm items, features {sorted(ds.features)}")
    R: dict[str, Any] = {
        "plan": plan,
        "plan_commit": git("log", "-1", "--format=%H", "--", str(PLAN.relative_to(ROOT))),
        "code_commit": git("rev-parse", "HEAD"),
        "protocol": "ML-100K raw pipeline, per-user random 8:1:1 split seed 2024; cold-start variant: "
        f"{len(cold)} items (10%, seed 2024) have no training interaction; cold rows rank the cold items "
        "only, warm rows the warm items only (train + valid masked); selection on validation only",
        "features": {m: [int(x) for x in ds.features[m].shape] for m in sorted(ds.features)}
        | {"spec": plan["features"]},
        "load_average_at_start": load0,
    }
    R["random"] = expected_random(ds, cold)
    R["itemknn_content"] = part_content_knn(plan, ds, warm, cold)
    R["warm"], l2 = part_warm(plan, ds, warm)
    R["coldstart_collaborative_l2"] = l2
    atomic_write_json(args.scratch / "partial.json", R)
    R["coldstart"] = part_coldstart(plan, l2, args.scratch, warm, reuse=args.reuse_runs)
    atomic_write_json(args.scratch / "partial.json", R)
    R["summary"] = summarise(plan, R)
    R["seconds"] = round(time.perf_counter() - t0, 1)
    R["load_average_at_end"] = list(os.getloadavg())
    R["environment"] = environment(
        "nice -n 10 python benchmarks/coldstart.py" + (" --reuse-runs" if args.reuse_runs else "")
    )
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out / "coldstart.json", R)
    atomic_write_text(args.out / "coldstart.md", markdown(R))
    log("verdict", R["summary"]["verdict"])


if __name__ == "__main__":
    main()
