"""Every registered recommender must pass the same checks (scikit-learn's check_estimator spirit)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from modalrec.core.errors import ConfigError
from modalrec.data.dataset import Dataset
from modalrec.evaluation import evaluate
from modalrec.models import REGISTRY, Recommender, create

FAST = {
    "popularity": {},
    "itemknn": {"k": 20},
    "ease": {"l2": 10.0},
    "ease_content": {"l2": 10.0, "content_weight": 0.5},
    "blend": {
        "members": [
            {"model": "itemknn", "params": {"k": 20}},
            {"model": "ease_content", "params": {"l2": 10.0}},
        ],
        "weight_steps": 3,
    },
    "bprmf": {"epochs": 30, "lr": 0.01, "dim": 16, "batch_size": 256, "patience": 5},
    "lightgcn": {"epochs": 30, "lr": 0.01, "dim": 16, "batch_size": 256, "patience": 5},
    "vbpr": {"epochs": 30, "lr": 0.01, "dim": 16, "content_dim": 16, "batch_size": 256, "patience": 5},
    "graphmm": {"epochs": 30, "lr": 0.01, "dim": 16, "batch_size": 256, "patience": 5, "content_bpr": 0.1},
}
# Models learning the user clusters must beat popularity on this data.
PERSONALISED = {"itemknn", "ease", "bprmf", "lightgcn"}


@pytest.fixture(params=sorted(set(REGISTRY) & set(FAST)))
def name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_every_builtin_model_is_checked() -> None:
    assert {"popularity", "itemknn", "bprmf", "lightgcn"} <= set(REGISTRY)
    missing = {n for n in REGISTRY if not getattr(REGISTRY[n], "uses_features", False)} - set(FAST)
    assert not missing, f"add fast settings for {missing}"


def test_conformance(name: str, clustered: Dataset, featured: Dataset, tmp_path: Path) -> None:
    model = create(name, **FAST[name])
    if model.uses_features:
        clustered = featured  # same interactions, plus item features
    assert model.get_params() == {**type(model).default_params(), **FAST[name]}
    clone = model.clone()
    assert clone.get_params() == model.get_params() and not clone.is_fitted
    with pytest.raises(RuntimeError):
        model.recommend([0], 5)
    model.fit(clustered, progress=False)

    scores = model.score([0, 1, 2])
    assert scores.shape == (3, clustered.n_items) and scores.dtype == np.float32

    idx, val = model.recommend(np.arange(clustered.n_users), 10, exclude=clustered.train)
    assert idx.shape == (clustered.n_users, 10)
    assert np.all(np.diff(val, axis=1) <= 0), "scores must be sorted descending"
    seen = clustered.train
    for u in range(clustered.n_users):
        assert not set(idx[u]) & set(seen[u].indices), "seen items must be excluded"

    with pytest.raises(IndexError):
        model.recommend([clustered.n_users], 5)

    # Save / load round trip gives identical scores.
    model.save(tmp_path / "m")
    assert not list(tmp_path.rglob("*.pkl"))
    loaded = Recommender.load(tmp_path / "m")
    assert type(loaded) is type(model)
    np.testing.assert_allclose(loaded.score([0, 5]), model.score([0, 5]), rtol=1e-5, atol=1e-6)

    # Seeded training is deterministic.
    again = create(name, **FAST[name]).fit(clustered, progress=False)
    np.testing.assert_allclose(again.score([1]), model.score([1]), rtol=1e-4, atol=1e-5)


def test_personalised_models_beat_popularity(clustered: Dataset) -> None:
    pop = evaluate(create("popularity").fit(clustered, progress=False), clustered, "test", ks=(10,))
    for n in sorted(PERSONALISED):
        m = create(n, **FAST[n]).fit(clustered, progress=False)
        res = evaluate(m, clustered, "test", ks=(10,))
        assert res.metrics["recall@10"] > 1.5 * pop.metrics["recall@10"], n


def test_early_stopping_records_validation_curve(clustered: Dataset) -> None:
    m = create("bprmf", **{**FAST["bprmf"], "epochs": 200, "patience": 3}).fit(clustered, progress=False)
    meta = m.meta
    assert meta["epochs_run"] < 200, "should stop early on this small data"
    assert meta["best_epoch"] == max(meta["valid_curve"], key=lambda r: r["valid_recall@20"])["epoch"]
    assert len(meta["epoch_seconds"]) == meta["epochs_run"]


def test_unknown_model_and_bad_params() -> None:
    with pytest.raises(ConfigError, match="unknown model"):
        create("nope")
    with pytest.raises(ConfigError, match="unknown hyperparameter 'dimension'"):
        create("bprmf", dimension=3)
