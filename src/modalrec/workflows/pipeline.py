"""Config -> load -> fit -> evaluate -> run directory. The CLI and the Python API both call these.

>>> # Python API (same code path as ``modalrec fit config.toml --out runs/x``):
>>> # from modalrec.workflows.pipeline import fit, evaluate_run, recommend_for_user
>>> # run = fit(load_config("config.toml"), "runs/x")
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from modalrec.core.io import atomic_write_json, atomic_write_text
from modalrec.data.dataset import Dataset
from modalrec.evaluation.protocol import EvalResult, evaluate
from modalrec.models.base import Recommender, create
from modalrec.workflows.config import RunConfig
from modalrec.workflows.rundir import Run, RunWriter, load_run, seen_matrix, write_dataset, write_manifest


def load_dataset(config: RunConfig) -> Dataset:
    """Load the configured data set with its split (see :func:`modalrec.data.load`)."""
    from modalrec.data import load

    dc = config.data
    opts: dict[str, Any] = dict(dc.options)
    if dc.split is not None:
        opts["split"] = dc.split
    return load(dc.name, root=dc.root, seed=dc.seed, **opts)


def evaluate_both(
    model: Recommender, ds: Dataset, ks: tuple[int, ...], chunk_size: int | None = None
) -> dict[str, Any]:
    """Validation and test metrics (plus cold-item test metrics on a cold-start split)."""
    out: dict[str, Any] = {}
    if ds.valid.nnz:
        out["valid"] = evaluate(model, ds, "valid", ks=ks, chunk_size=chunk_size).as_dict()
    if ds.test.nnz:
        out["test"] = evaluate(model, ds, "test", ks=ks, chunk_size=chunk_size).as_dict()
    if ds.cold_items is not None and len(ds.cold_items) and ds.test.nnz:
        out["test_cold"] = evaluate(
            model, ds, "test", ks=ks, chunk_size=chunk_size, candidate_items=ds.cold_items
        ).as_dict()
    return out


def write_run(
    ds: Dataset,
    model: Recommender,
    out: str | Path,
    *,
    config: dict[str, Any],
    metrics: dict[str, Any] | None = None,
    ks: tuple[int, ...] = (10, 20, 50),
    overwrite: bool = False,
) -> Run:
    """Write a complete run directory for a fitted model (metrics are computed if not given)."""
    metrics = metrics if metrics is not None else evaluate_both(model, ds, ks)
    with RunWriter(out, overwrite=overwrite) as tmp:
        write_dataset(ds, tmp)
        model.save(tmp / "model")
        atomic_write_json(tmp / "metrics.json", metrics)
        atomic_write_json(tmp / "validation_report.json", ds.report.as_dict())
        atomic_write_text(tmp / "validation_report.md", ds.report.to_markdown())
        write_manifest(
            tmp,
            config=config,
            dataset=ds.summary(),
            text_fields=ds.text_fields,
            media_columns=ds.media_columns,
            model={"name": model.name, "params": model.get_params(), "meta_keys": sorted(model.meta)},
        )
    return load_run(out)


def fit_dataset(
    ds: Dataset,
    model_name: str,
    params: dict[str, Any],
    out: str | Path,
    *,
    config: dict[str, Any],
    ks: tuple[int, ...] = (10, 20, 50),
    overwrite: bool = False,
    progress: bool = True,
) -> Run:
    """Fit ``model_name`` on an already-loaded dataset and write a complete run directory."""
    model = create(model_name, **params)
    model.fit(ds, progress=progress)
    return write_run(ds, model, out, config=config, ks=ks, overwrite=overwrite)


def fit(config: RunConfig, out: str | Path, *, overwrite: bool = False, progress: bool = True) -> Run:
    """Load data (encoding the ``[encode]`` modalities, cached), fit the configured model, evaluate it
    and write the run directory ``out``."""
    from modalrec.workflows.tuning import load_with_features

    ds = load_with_features(config)
    return fit_dataset(
        ds,
        config.model.name,
        {**config.model.params},
        out,
        config=config.model_dump(),
        ks=tuple(config.evaluate.ks),
        overwrite=overwrite,
        progress=progress,
    )


def evaluate_run(
    run: Run | str | Path,
    split: str = "test",
    ks: tuple[int, ...] = (10, 20, 50),
    *,
    sample_users: int | None = None,
    seed: int = 0,
) -> EvalResult:
    """Re-evaluate a saved run on its stored split (full ranking, seen items masked).

    ``sample_users=n`` evaluates a seeded uniform sample of n users and reports a 95% confidence
    interval per metric (``result.confidence``; see :mod:`modalrec.evaluation.protocol`).
    """
    r = run if isinstance(run, Run) else load_run(run)
    return evaluate(r.model, r.dataset, split, ks=ks, sample_users=sample_users, seed=seed)


def recommend_for_user(run: Run | str | Path, user_id: str, k: int = 10) -> list[dict[str, Any]]:
    """Top-``k`` items for an external user id, excluding everything the user already interacted with."""
    r = run if isinstance(run, Run) else load_run(run)
    ds = r.dataset
    u = ds.user_index(user_id)
    idx, scores = r.model.recommend(np.array([u]), k, exclude=seen_matrix(ds))
    items = ds.items
    title_col = next((c for c in ("title", "name") if items is not None and c in items.columns), None)
    out = []
    for rank, (i, s) in enumerate(zip(idx[0], scores[0], strict=True), start=1):
        if not np.isfinite(s):
            break
        row: dict[str, Any] = {"rank": rank, "item_id": str(ds.item_ids[i]), "score": float(s)}
        if title_col is not None and items is not None:
            row["title"] = items[title_col][int(i)]
        out.append(row)
    return out
