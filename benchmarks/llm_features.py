"""LLM item features vs MiniLM inside content EASE and graphmm, warm and cold (issue 19 item 3).

Reproduces ``benchmarks/results/llm_features.{json,md}`` from the plan ``benchmarks/plans/llm_features.toml``
(committed before the run; its commit is recorded)::

    nice -n 10 python benchmarks/llm_features.py                 # encode, choose the layer, all rows
    python benchmarks/llm_features.py --parts encode,knn,ease    # without the graphmm fits

Parts: ``encode`` (MiniLM and the LLM layers of the plan, shared feature cache ~/.cache/modalrec),
``knn`` (content ItemKNN on cold items; also chooses the LLM layer on validation), ``ease`` (content EASE
grid, chosen on validation separately for warm and cold), ``graphmm`` (one fit per encoder). Results of
the parts that ran are merged into the JSON, so parts can run one at a time.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from modalrec.core.io import atomic_write_json, atomic_write_text

ROOT = Path(__file__).resolve().parents[1]
PLAN = ROOT / "benchmarks" / "plans" / "llm_features.toml"
RESULTS = ROOT / "benchmarks" / "results"
CACHE = Path.home() / ".cache" / "modalrec"
KS = (10, 20)


def log(*a: Any) -> None:
    print(f"[{time.strftime('%H:%M:%S')}]", *a, flush=True)


def git(*args: str) -> str:
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.strip()


def machine() -> dict[str, Any]:
    import torch

    return {
        "load_avg": [round(x, 2) for x in os.getloadavg()],
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
    }


def modality_names(plan: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """``{modality name: encoder spec}``: MiniLM and one LLM modality per planned layer."""
    f = plan["features"]
    out = {"text_minilm": {**f["minilm"], "fields": f["fields"]}}
    for layer in f["llm_layers"]:
        name = f"text_llm_L{layer}" if layer != -1 else "text_llm_last"
        out[name] = {**f["llm"], "layer": layer, "fields": f["fields"]}
    return out


def load_data(plan: dict[str, Any], R: dict[str, Any]) -> tuple[Any, np.ndarray, np.ndarray]:
    """The cold-start split with every planned text modality encoded (one at a time, timed)."""
    from modalrec.data import load
    from modalrec.encoders import encode_dataset

    s = plan["split"]
    ds = load(s["dataset"], split=s["split"], seed=s["seed"], cold_share=s["cold_share"])
    enc = R.setdefault("encode", {})
    for name, spec in modality_names(plan).items():
        t0, load0 = time.perf_counter(), machine()["load_avg"]
        fs = encode_dataset(ds, {name: spec}, cache_dir=CACHE, progress=False, apply=False)
        ds.features[name] = fs.features[name]
        ds.feature_masks[name] = fs.masks[name]
        rep = fs.report.modalities[name]
        if rep.encoded or name not in enc:  # keep the timing of the run that really encoded
            enc[name] = {
                "seconds": round(time.perf_counter() - t0, 1),
                "encoded": rep.encoded,
                "cached": rep.cached,
                "dim": int(fs.features[name].shape[1]),
                "present": int(fs.masks[name].sum()),
                "load_avg_before": load0,
                "load_avg_after": machine()["load_avg"],
            }
        log(f"encoded {name}: {enc[name]}")
    cold = np.asarray(ds.cold_items, dtype=np.int64)
    warm = np.setdiff1d(np.arange(ds.n_items), cold)
    return ds, warm, cold


def part_knn(plan: dict[str, Any], ds: Any, warm: np.ndarray, cold: np.ndarray) -> dict[str, Any]:
    """Content ItemKNN on cold items per text modality (k on validation); chooses the LLM layer."""
    from coldstart import content_knn_scorer
    from modalrec.evaluation.protocol import evaluate
    from modalrec.models import create

    anchor = create("popularity").fit(ds, progress=False)
    out: dict[str, Any] = {}
    for m in modality_names(plan):
        trials = []
        for k in plan["content_knn"]["k"]:
            sc = content_knn_scorer(ds, [m], warm, cold, k)
            v = evaluate(anchor, ds, "valid", ks=(20,), candidate_items=cold, scorer=sc)["recall@20"]
            trials.append({"k": k, "valid_recall@20": float(v)})
        best = max(trials, key=lambda t: t["valid_recall@20"])
        out[m] = {"grid": trials, "k": best["k"], "valid_recall@20": best["valid_recall@20"]}
    llm = {m: r for m, r in out.items() if m.startswith("text_llm")}
    chosen = max(llm, key=lambda m: llm[m]["valid_recall@20"])
    log(f"LLM layer chosen on validation: {chosen} ({ {m: r['valid_recall@20'] for m, r in llm.items()} })")
    for m in out:  # test only now, after the choice
        sc = content_knn_scorer(ds, [m], warm, cold, out[m]["k"])
        res = evaluate(anchor, ds, "test", ks=KS, candidate_items=cold, scorer=sc)
        out[m]["test_cold"] = {k: float(res[k]) for k in ("recall@20", "ndcg@20")}
    return {"rows": out, "chosen_llm": chosen}


def _compared(R: dict[str, Any]) -> list[str]:
    return ["text_minilm", R["knn"]["chosen_llm"]]


def part_ease(
    plan: dict[str, Any], ds: Any, warm: np.ndarray, cold: np.ndarray, R: dict[str, Any]
) -> dict[str, Any]:
    """Content EASE per encoder: grid on validation, warm and cold columns chosen separately."""
    from modalrec.evaluation.protocol import evaluate
    from modalrec.models import create

    g = plan["content_ease"]
    out: dict[str, Any] = {}
    for m in _compared(R):
        trials = []
        for l2 in g["l2"]:
            for cw in g["content_weight"]:
                model = create("ease_content", l2=l2, content_weight=cw, modalities=[m]).fit(
                    ds, progress=False
                )
                row: dict[str, Any] = {"l2": l2, "content_weight": cw}
                for col, cand in (("warm", warm), ("cold", cold)):
                    row[f"valid_{col}_recall@20"] = float(
                        evaluate(model, ds, "valid", ks=(20,), candidate_items=cand)["recall@20"]
                    )
                trials.append(row)
        res: dict[str, Any] = {"grid": trials}
        for col, cand in (("warm", warm), ("cold", cold)):
            best = max(trials, key=lambda t: t[f"valid_{col}_recall@20"])
            model = create(
                "ease_content", l2=best["l2"], content_weight=best["content_weight"], modalities=[m]
            ).fit(ds, progress=False)
            t = evaluate(model, ds, "test", ks=KS, candidate_items=cand)
            res[col] = {
                "chosen": {"l2": best["l2"], "content_weight": best["content_weight"]},
                "valid_recall@20": best[f"valid_{col}_recall@20"],
                "test": {k: float(t[k]) for k in ("recall@20", "ndcg@20")},
            }
        out[m] = res
        log(f"content EASE {m}: warm {res['warm']['test']} cold {res['cold']['test']}")
    return out


def part_graphmm(
    plan: dict[str, Any],
    ds: Any,
    warm: np.ndarray,
    cold: np.ndarray,
    R: dict[str, Any],
    only: list[str] | None = None,
) -> dict[str, Any]:
    """graphmm ("ours" settings) with one text modality, per encoder and seed; warm and cold test.

    ``only``: fit these text modalities only (one queue job per encoder keeps each job short);
    rows of earlier runs are kept.
    """
    from modalrec.evaluation.protocol import evaluate
    from modalrec.models import create

    out: dict[str, Any] = R.get("graphmm", {})
    for m in _compared(R):
        if only and m not in only:
            continue
        for seed in plan["graphmm"]["seeds"]:
            t0 = time.perf_counter()
            model = create("graphmm", **plan["graphmm"]["params"], modalities=[m], seed=seed).fit(
                ds, progress=False
            )
            row: dict[str, Any] = {
                "seed": seed,
                "fit_seconds": round(time.perf_counter() - t0, 1),
                "best_epoch": model.meta.get("best_epoch"),
                "machine": machine(),
            }
            for col, cand in (("warm", warm), ("cold", cold)):
                row[f"valid_{col}_recall@20"] = float(
                    evaluate(model, ds, "valid", ks=(20,), candidate_items=cand)["recall@20"]
                )
                t = evaluate(model, ds, "test", ks=KS, candidate_items=cand)
                row[col] = {k: float(t[k]) for k in ("recall@20", "ndcg@20")}
            out.setdefault(m, {})[str(seed)] = row
            log(f"graphmm {m} seed {seed}: {row}")
            R["graphmm"] = out
            save(R)
    return out


def _cell(x: dict[str, Any] | None, key: str) -> str:
    return "-" if not x else f"{x[key]:.4f}"


def markdown(R: dict[str, Any]) -> str:
    """The report of the parts that ran."""
    out = [
        "# LLM item features vs MiniLM (issue 19 item 3)",
        "",
        f"Produced by `benchmarks/llm_features.py` from `benchmarks/plans/llm_features.toml` (plan commit "
        f"{R.get('plan_commit')}, code commit {R.get('code_commit')}). ML-100K cold-start split (10% of items, seed "
        "2024, removed from training); warm columns rank the warm items only, cold columns the cold items only; "
        "text only (title | genres | overview) on both sides; every choice on validation.",
        "",
    ]
    if R.get("encode"):
        out += [
            "## Encoding (1,682 items)",
            "",
            "| modality | dim | seconds | encoded / cached | load avg before, after |",
            "|---|---|---|---|---|",
        ]
        for m, e in R["encode"].items():
            out.append(
                f"| {m} | {e['dim']} | {e['seconds']} | {e['encoded']} / {e['cached']} | {e['load_avg_before']}, {e['load_avg_after']} |"
            )
        out.append("")
    if R.get("knn"):
        k = R["knn"]
        out += [
            f"LLM layer chosen on validation (content ItemKNN, cold valid R@20): `{k['chosen_llm']}`.",
            "",
        ]
        out += [
            "## Content ItemKNN (cold items; reference)",
            "",
            "| text modality | k | valid R@20 | test R@20 | test NDCG@20 |",
            "|---|---|---|---|---|",
        ]
        for m, r in k["rows"].items():
            out.append(
                f"| {m} | {r['k']} | {r['valid_recall@20']:.4f} | {_cell(r['test_cold'], 'recall@20')} | {_cell(r['test_cold'], 'ndcg@20')} |"
            )
        out.append("")
    rows = []
    for m, r in R.get("ease", {}).items():
        rows.append(
            f"| content EASE | {m} | {_cell(r['warm']['test'], 'recall@20')} | {_cell(r['warm']['test'], 'ndcg@20')} | {_cell(r['cold']['test'], 'recall@20')} | {_cell(r['cold']['test'], 'ndcg@20')} | warm {r['warm']['chosen']}, cold {r['cold']['chosen']} |"
        )
    for m, seeds in R.get("graphmm", {}).items():
        for s, r in seeds.items():
            rows.append(
                f"| graphmm (ours, seed {s}) | {m} | {_cell(r['warm'], 'recall@20')} | {_cell(r['warm'], 'ndcg@20')} | {_cell(r['cold'], 'recall@20')} | {_cell(r['cold'], 'ndcg@20')} | best epoch {r['best_epoch']}, fit {r['fit_seconds']} s, load {r['machine']['load_avg']} |"
            )
    if rows:
        out += [
            "## Warm and cold items",
            "",
            "| model | text modality | warm R@20 | warm NDCG@20 | cold R@20 | cold NDCG@20 | notes |",
            "|---|---|---|---|---|---|---|",
            *rows,
            "",
        ]
    if R.get("notes"):
        out += ["## Notes", "", *[f"- {n}" for n in R["notes"]], ""]
    return "\n".join(out) + "\n"


def save(R: dict[str, Any]) -> None:
    atomic_write_json(RESULTS / "llm_features.json", R)
    atomic_write_text(RESULTS / "llm_features.md", markdown(R))


def main(argv: list[str] | None = None) -> int:
    import json

    import torch

    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--parts", default="encode,knn,ease,graphmm")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--note", action="append", default=[])
    ap.add_argument(
        "--graphmm-only", default="", help="comma-separated text modalities (default: all compared)"
    )
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    plan = tomllib.loads(PLAN.read_text())
    path = RESULTS / "llm_features.json"
    R = json.loads(path.read_text()) if path.is_file() else {}
    R.update(
        plan_commit=git("log", "-1", "--format=%H", "--", str(PLAN)), code_commit=git("rev-parse", "HEAD")
    )
    R["notes"] = [*R.get("notes", []), *args.note]
    parts = args.parts.split(",")
    ds, warm, cold = load_data(plan, R)
    log(f"cold-start split: {len(cold)} cold, {len(warm)} warm items")
    save(R)
    if "knn" in parts or "knn" not in R:
        R["knn"] = part_knn(plan, ds, warm, cold)
        save(R)
    if "ease" in parts:
        R["ease"] = part_ease(plan, ds, warm, cold, R)
        save(R)
    if "graphmm" in parts:
        only = [m for m in args.graphmm_only.split(",") if m] or None
        R["graphmm"] = part_graphmm(plan, ds, warm, cold, R, only)
    R["machine_end"] = machine()
    save(R)
    return 0


if __name__ == "__main__":
    sys.exit(main())
