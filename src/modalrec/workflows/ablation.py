"""Modality ablations and warm/cold evaluation of one model configuration (``modalrec report``).

Why retrain per variant: a modality's contribution is only visible by training without it. Variants:
every modality alone, every pair, all fused, and none (pure collaborative filtering), each trained with
the same hyperparameters and seed, stopped on validation Recall@20, and scored once on test:

* over **all** items (the standard protocol),
* over **warm** items only and over **cold** items only (the dataset's ``cold_items`` when it is a
  cold-start split, else items without any training interaction), so content's value for new items
  is measured apart from its value for known ones,
* at every K of ``ks``; plus the learned modality weights and the training curves.

A model that cannot run without content (VBPR) uses its collaborative counterpart for "none"
(:data:`CF_COUNTERPART`); the report names the model each variant used.
"""

from __future__ import annotations

import itertools
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from modalrec.evaluation.protocol import evaluate
from modalrec.models.base import REGISTRY, Recommender, create

if TYPE_CHECKING:
    from modalrec.data.dataset import Dataset

#: Pure-CF stand-in for content-only-capable models when the "none" variant is asked for.
CF_COUNTERPART = {"vbpr": "bprmf", "ease_content": "ease"}


def modality_subsets(modalities: list[str]) -> list[list[str]]:
    """Each modality alone, every pair, all of them (once), then none.

    >>> modality_subsets(["audio", "image", "text"])
    [['audio'], ['image'], ['text'], ['audio', 'image'], ['audio', 'text'], ['image', 'text'], ['audio', 'image', 'text'], []]
    >>> modality_subsets(["image"])
    [['image'], []]
    """
    mods = sorted(modalities)
    out: list[list[str]] = [[m] for m in mods]
    if len(mods) >= 2:
        out += [list(p) for p in itertools.combinations(mods, 2)]
    if len(mods) >= 3:
        out.append(mods)
    out.append([])
    return out


def cold_and_warm(ds: Dataset) -> tuple[np.ndarray, np.ndarray]:
    """Cold items (the split's, else items without training interactions) and the warm rest."""
    n_train = np.diff(ds.train.tocsc().indptr)
    if ds.cold_items is not None and len(ds.cold_items):
        cold = np.asarray(ds.cold_items, dtype=np.int64)
    else:
        cold = np.flatnonzero(n_train == 0)
    warm = np.setdiff1d(np.arange(ds.n_items), cold)
    return cold, warm


def variant_model(
    model_name: str, params: dict[str, Any], modalities: list[str]
) -> tuple[str, dict[str, Any]]:
    """The (model, params) that trains ``model_name`` on exactly ``modalities``."""
    cls = REGISTRY[model_name]
    if not cls.uses_features:
        return model_name, dict(params)
    if not modalities and model_name in CF_COUNTERPART:
        cf = CF_COUNTERPART[model_name]
        known = REGISTRY[cf].default_params()
        return cf, {k: v for k, v in params.items() if k in known}
    return model_name, {**params, "modalities": list(modalities)}


def score_variant(model: Recommender, ds: Dataset, ks: tuple[int, ...]) -> dict[str, Any]:
    """Test metrics over all, warm-only and cold-only candidates, plus validation Recall@20."""
    cold, warm = cold_and_warm(ds)
    out: dict[str, Any] = {"test": evaluate(model, ds, "test", ks=ks).metrics}
    out["valid_recall@20"] = (
        model.meta.get("best_valid_recall@20")
        if model.meta.get("best_valid_recall@20") is not None
        else (evaluate(model, ds, "valid", ks=(20,)).metrics["recall@20"] if ds.valid.nnz else None)
    )
    if len(warm) and len(cold):
        # A candidate set smaller than K has no metric at K (e.g. 12 cold items and K = 50).
        w = evaluate(model, ds, "test", ks=_fit_ks(ks, len(warm)), candidate_items=warm)
        c = evaluate(model, ds, "test", ks=_fit_ks(ks, len(cold)), candidate_items=cold)
        out["test_warm"], out["test_cold"] = w.metrics, c.metrics
        out["n_users_warm"], out["n_users_cold"] = w.n_users, c.n_users
    return out


def _fit_ks(ks: tuple[int, ...], n: int) -> tuple[int, ...]:
    return tuple(k for k in ks if k <= n) or (n,)


def run_ablations(
    ds: Dataset,
    model_name: str,
    params: dict[str, Any],
    *,
    ks: tuple[int, ...] = (10, 20, 50),
    trained: Recommender | None = None,
    progress: bool = False,
    log: Any = None,
) -> dict[str, Any]:
    """Train and score every modality variant; ``trained`` (a fitted model) is scored as-is first."""
    model_name = model_name.lower()
    if model_name not in REGISTRY:
        create(model_name)  # raises the ConfigError listing known models
    cls = REGISTRY[model_name]
    mods = sorted(ds.features)
    cold, warm = cold_and_warm(ds)
    result: dict[str, Any] = {
        "model": model_name,
        "params": params,
        "ks": list(ks),
        "modalities": mods,
        "n_cold_items": len(cold),
        "n_warm_items": len(warm),
        "variants": [],
    }
    if trained is not None:
        row = {
            "variant": "as trained",
            "model": trained.name,
            "modalities": trained.meta.get("modalities", mods),
        }
        row.update(score_variant(trained, ds, ks))
        row.update(_meta(trained, None))
        result["variants"].append(row)
    subsets = modality_subsets(mods) if cls.uses_features and mods else [[]]
    for sub in subsets:
        name, p = variant_model(model_name, params, sub)
        label = " + ".join(sub) if sub else "none (CF)"
        if log:
            log(f"ablation {label}: training {name} ...")
        model = create(name, **p)
        t0 = time.perf_counter()
        model.fit(ds, progress=progress)
        row = {"variant": label, "model": name, "modalities": sub}
        row.update(score_variant(model, ds, ks))
        row.update(_meta(model, time.perf_counter() - t0))
        result["variants"].append(row)
    return result


def _meta(model: Recommender, fit_seconds: float | None) -> dict[str, Any]:
    m = model.meta
    return {
        "fit_seconds": fit_seconds,
        "epochs_run": m.get("epochs_run"),
        "best_epoch": m.get("best_epoch"),
        "mean_epoch_seconds": m.get("mean_epoch_seconds"),
        "modality_weights": m.get("modality_weights"),
        "valid_curve": m.get("valid_curve", []),
        "train_loss": m.get("train_loss", []),
    }
