"""One step of the scale benchmark, run in its own process by benchmarks/scale.py.

Why a separate process per step: peak memory (``ru_maxrss`` of the child, read by the parent with
``os.wait4``) then belongs to that step alone, and a step that runs out of time or memory is killed
without taking the harness with it.

Usage (the parent passes one JSON object; the last stdout line is the result as JSON)::

    python benchmarks/scale_step.py '{"step": "fit", "data": "/tmp/.../dataset.toml", "model": "als", ...}'
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import numpy as np


def _load(spec: dict[str, Any]) -> tuple[Any, float]:
    from modalrec.data import load

    t0 = time.perf_counter()
    ds = load(spec["data"], seed=int(spec.get("split_seed", 2024)))
    return ds, time.perf_counter() - t0


def step_load(spec: dict[str, Any]) -> dict[str, Any]:
    """Load + validate + split (what `modalrec validate` does), and the split sizes."""
    ds, secs = _load(spec)
    return {
        "load_s": round(secs, 3),
        "users": int(ds.n_users),
        "items": int(ds.n_items),
        "train": int(ds.train.nnz),
        "valid": int(ds.valid.nnz),
        "test": int(ds.test.nnz),
        "report_issues": len(getattr(ds.report, "issues", []) or []),
    }


def _sampled_validator(ds: Any, n: int, seed: int) -> Any:
    """Recall@20 on a seeded sample of validation users (per-epoch rows: one cheap validation)."""
    from modalrec.evaluation.protocol import evaluate

    users = np.flatnonzero(np.diff(ds.valid.tocsr().indptr) > 0)
    if len(users) > n:
        users = np.sort(np.random.default_rng(seed).choice(users, n, replace=False))
    return lambda model: evaluate(model, ds, "valid", ks=(20,), users=users).metrics["recall@20"]


def _fit_meta(model: Any) -> dict[str, Any]:
    meta = getattr(model, "meta", {}) or {}
    keep = ("epochs_run", "best_epoch", "best_valid_recall@20", "epoch_seconds", "mean_epoch_seconds")
    out = {k: meta[k] for k in keep if k in meta}
    if "epoch_seconds" in out:
        out["epoch_seconds"] = [round(float(x), 3) for x in out["epoch_seconds"]]
    return out


def step_fit(spec: dict[str, Any]) -> dict[str, Any]:
    """Load, fit, evaluate (full ranking of every test user) and optionally write a run directory."""
    from modalrec.core.errors import ModalrecError
    from modalrec.evaluation.protocol import evaluate
    from modalrec.models.base import create

    ds, load_s = _load(spec)
    out: dict[str, Any] = {"load_s": round(load_s, 3), "params": spec.get("params", {})}
    validator = None
    if spec.get("valid_sample"):
        validator = _sampled_validator(ds, int(spec["valid_sample"]), int(spec.get("valid_sample_seed", 0)))
    try:
        from modalrec.models.training import validation_hook

        model = create(spec["model"], **spec.get("params", {}))
        t0 = time.perf_counter()
        curve: list[list[float]] = []

        def progress(epoch: int, value: float) -> None:  # a step killed mid-fit still says how far it got
            curve.append([epoch, round(value, 5), round(time.perf_counter() - t0, 1)])
            print(json.dumps({**out, "status": "partial", "valid_curve_epoch_recall_s": curve}), flush=True)

        with validation_hook(progress):
            model.fit(ds, progress=False, validator=validator)
        out["fit_s"] = round(time.perf_counter() - t0, 3)
        out["valid_curve_epoch_recall_s"] = curve
    except (ModalrecError, MemoryError) as e:
        out.update(status="refused", message=f"{type(e).__name__}: {e}")
        return out
    out.update(_fit_meta(model))
    if spec.get("run_dir"):  # written before the evaluation, so serving can run if evaluation times out
        from modalrec.workflows.pipeline import write_run

        t0 = time.perf_counter()
        write_run(ds, model, spec["run_dir"], config={"scale": spec}, metrics={}, overwrite=True)
        out["write_run_s"] = round(time.perf_counter() - t0, 3)
    print(json.dumps({**out, "status": "partial"}, default=str), flush=True)  # kept if evaluation times out
    if spec.get("evaluate", True):
        t0 = time.perf_counter()
        ks = tuple(spec.get("ks", (10, 20, 50)))
        sample = {"sample_users": int(spec["eval_sample"]), "seed": 0} if spec.get("eval_sample") else {}
        res = evaluate(model, ds, spec.get("split", "test"), ks=ks, **sample)  # type: ignore[arg-type]
        out["eval_s"] = round(time.perf_counter() - t0, 3)
        out["eval_users"] = int(res.n_users)
        out["eval_sampled"] = bool(sample)
        out["metrics"] = {k: round(float(v), 5) for k, v in res.metrics.items()}
        if getattr(res, "confidence", None):
            out["ci95"] = {
                k: [round(float(a), 5), round(float(b), 5)] for k, (a, b) in res.confidence.items()
            }
    return out


def step_engine(spec: dict[str, Any]) -> dict[str, Any]:
    """Build the serving engine in-process (what each server worker does at start-up)."""
    from modalrec.serving.engine import Engine
    from modalrec.serving.settings import load_serve_config

    cfg = load_serve_config(spec.get("config"))
    kwargs = {"index_cache": spec["index_cache"]} if spec.get("index_cache") else {}
    t0 = time.perf_counter()
    eng = Engine(spec["run_dir"], cfg, **kwargs)
    secs = time.perf_counter() - t0
    rec = eng.rec_index.report if eng.rec_index is not None else None
    t0 = time.perf_counter()
    n = min(1000, len(eng.user_ids))
    for u in range(n):
        eng.recommend_index(u, [], 10, exclude_seen=True)
    per_q = (time.perf_counter() - t0) / max(n, 1)
    return {
        "engine_s": round(secs, 3),
        "timings": getattr(eng, "timings", None),
        "index": rec,
        "recommend_ms_in_process": round(per_q * 1000, 3),
    }


STEPS = {"load": step_load, "fit": step_fit, "engine": step_engine}


def main() -> None:
    spec = json.loads(sys.argv[1])
    threads = spec.get("threads")
    if threads:
        import torch

        torch.set_num_threads(int(threads))
    out = STEPS[spec["step"]](spec)
    out.setdefault("status", "ok")
    print(json.dumps(out, default=str))


if __name__ == "__main__":
    main()
