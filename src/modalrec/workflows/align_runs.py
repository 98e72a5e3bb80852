"""Fit an aligner on the features of an existing run directory and store it there.

Why a separate step rather than part of ``modalrec fit``: alignment needs only the item features
(``RUN_DIR/features/<m>.npy``), not the recommender, and one usually tries several aligners on the
same run. :func:`align_run` (CLI: ``modalrec align RUN_DIR``) writes ``RUN_DIR/align/`` (see
:mod:`modalrec.align.report`): the fitted aligner, the aligned item vectors that ``modalrec search``
and ``modalrec similar`` use, and the alignment quality report.

Honest report: a seeded ``holdout`` share of the items that have two or more modalities is cut out
before fitting (the aligner never sees them, not even for early stopping, which uses a validation
carve-out of the remaining items) and the report is computed on them only; their indices are kept
in ``align/eval_items.npy``. The run's ``manifest.json`` is not rewritten: ``align/`` is an addition
that later alignments may replace.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from modalrec.align.base import Aligner, create
from modalrec.align.report import ALIGN_DIR, alignment_report, save_alignment
from modalrec.core.errors import ConfigError, RunDirError
from modalrec.core.io import atomic_save_npy
from modalrec.workflows.rundir import read_feature_dir


def read_run_features(run_dir: str | Path) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Item features and presence masks of a run (``RUN_DIR/features``), without loading the model."""
    fdir = Path(run_dir) / "features"
    if not fdir.is_dir():
        raise RunDirError(
            f"{run_dir}: the run has no item features ({fdir} is missing); encode content first"
        )
    views, masks = read_feature_dir(fdir)
    if not views:
        raise RunDirError(f"{run_dir}: {fdir} holds no feature files")
    return views, masks


def holdout_items(masks: dict[str, np.ndarray], share: float, seed: int) -> np.ndarray:
    """A seeded ``share`` of the items with at least two modalities present (sorted indices).

    >>> mk = {"a": np.array([1, 1, 1, 1, 0], bool), "b": np.array([1, 1, 0, 1, 1], bool)}
    >>> holdout_items(mk, 0.5, 0).tolist() in ([0, 1], [0, 3], [1, 3])
    True
    """
    if not 0.0 <= share < 1.0:
        raise ConfigError(f"holdout must be in [0, 1), got {share}")
    present = np.sum([m.astype(np.int64) for m in masks.values()], axis=0)
    paired = np.flatnonzero(present >= 2)
    n = round(share * len(paired))
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(paired, size=n, replace=False)).astype(np.int64)


def align_run(
    run_dir: str | Path,
    aligner: str | Aligner = "contrastive",
    *,
    modalities: list[str] | None = None,
    params: dict[str, Any] | None = None,
    holdout: float = 0.2,
    seed: int = 0,
    progress: bool = False,
) -> dict[str, Any]:
    """Fit ``aligner`` on a run's features, write ``RUN_DIR/align`` and return the quality report.

    Args:
        aligner: a registered aligner name (``ridge``, ``cca``, ``contrastive``, ...) or an instance.
        modalities: feature names to align (default: every feature of the run).
        params: hyperparameters for a named aligner.
        holdout: share of multi-modal items kept out of fitting and used for the report.
    """
    d = Path(run_dir)
    views, masks = read_run_features(d)
    if modalities:
        unknown = [m for m in modalities if m not in views]
        if unknown:
            raise ConfigError(f"{d}: no features for {unknown}; the run has {sorted(views)}")
        views = {m: views[m] for m in modalities}
        masks = {m: masks[m] for m in modalities}
    if len(views) < 2:
        raise ConfigError(f"{d}: alignment needs two or more modalities; the run has {sorted(views)}")
    al = create(aligner, **(params or {})) if isinstance(aligner, str) else aligner
    if params and not isinstance(aligner, str):
        al.set_params(**params)
    test = holdout_items(masks, holdout, seed)
    n = len(next(iter(views.values())))
    seen = np.setdiff1d(np.arange(n), test)
    al.fit(
        {m: v[seen] for m, v in views.items()},
        {m: k[seen] for m, k in masks.items()},
        seed=seed,
        progress=progress,
    )
    ctx = {
        "run": str(d),
        "aligner": f"{al.name} {json.dumps(al.get_params(), default=str)}",
        "evaluation items": f"{len(test)} held-out items (align/eval_items.npy, seed {seed}), never fitted on"
        if len(test)
        else "all items (holdout 0: includes training items)",
    }
    rep = alignment_report(views, masks, {al.name: al}, test if len(test) else None, context=ctx)
    # build the new align/ beside the old one and swap, so a crash never leaves a half-written one
    tmp = Path(tempfile.mkdtemp(prefix=".align-", dir=d))
    try:
        save_alignment(tmp, al, views, masks, report=rep)
        if len(test):
            atomic_save_npy(tmp / ALIGN_DIR / "eval_items.npy", test)
        out = d / ALIGN_DIR
        old = d / f".{ALIGN_DIR}-old"
        if out.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(out, old)
        os.replace(tmp / ALIGN_DIR, out)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return rep
