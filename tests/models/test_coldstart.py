"""The cold-start recommender: cold items placed by content, warm items blended, selection on validation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from modalrec.core.errors import DataError
from modalrec.data.dataset import Dataset
from modalrec.evaluation import evaluate
from modalrec.models import create
from modalrec.models.coldstart import ColdStart
from synthetic import make_clustered

FAST = {"dim": 16, "hidden": 32, "max_steps": 120, "eval_every": 10, "patience": 3, "seeds": 2, "threads": 1}


def _cold_in_valid(ds: Dataset) -> Dataset:
    """The same data with half of each cold item's (test) interactions moved to valid, seeded: the
    cold-start protocol, where validation users interact with cold items too."""
    test = ds.test.tocoo()
    rng = np.random.default_rng(0)
    move = np.isin(test.col, ds.cold_items) & (rng.random(test.nnz) < 0.5)
    shape = ds.test.shape

    def part(keep: np.ndarray) -> sp.csr_matrix:
        return sp.csr_matrix((test.data[keep], (test.row[keep], test.col[keep])), shape=shape)

    return Dataset(
        name=ds.name + "-cold-valid",
        user_ids=ds.user_ids,
        item_ids=ds.item_ids,
        train=ds.train,
        valid=(ds.valid + part(move)).tocsr(),
        test=part(~move),
        features=ds.features,
        feature_masks=ds.feature_masks,
        cold_items=ds.cold_items,
        split_name="cold_start",
    )


@pytest.fixture(scope="module")
def cold_ds() -> Dataset:
    return _cold_in_valid(make_clustered(with_features=True, cold_share=0.2))


@pytest.fixture(scope="module")
def fitted(cold_ds: Dataset) -> ColdStart:
    model = create("coldstart", **FAST, collaborative={"model": "ease", "params": {"l2": 10.0}})
    assert isinstance(model, ColdStart)
    return model.fit(cold_ds, progress=False)


def test_cold_items_ranked_by_content_far_above_chance(cold_ds: Dataset, fitted: ColdStart) -> None:
    cold = cold_ds.cold_items
    assert cold is not None and cold_ds.train[:, cold].nnz == 0
    # default validation: the validation users' recall over items without training interactions
    assert fitted.meta["tower_validation"].startswith("validator")
    r = evaluate(fitted, cold_ds, "test", ks=(5,), candidate_items=cold)["recall@5"]
    assert r > 2.5 * 5 / len(cold), r  # chance: 5 / 16 candidates


def test_cold_ranking_is_the_towers_and_warm_ranking_blends(cold_ds: Dataset, fitted: ColdStart) -> None:
    cold = np.asarray(cold_ds.cold_items)
    users = np.arange(cold_ds.n_users)
    tower = fitted.user_vectors @ fitted.item_vectors.T
    blended = fitted.score(users)
    # among cold items the collaborative z-score is constant (0): the order is the tower's
    np.testing.assert_array_equal(
        np.argsort(-blended[:, cold], axis=1, kind="stable"),
        np.argsort(-tower[:, cold], axis=1, kind="stable"),
    )
    grid = fitted.meta["blend_grid"]
    assert [g["tower_weight"] for g in grid][-1] == 1.0 and min(g["tower_weight"] for g in grid) > 0
    best = max(grid, key=lambda g: g["valid"])
    assert fitted.blend_weight == best["tower_weight"] < 1.0
    # the collaborative model wins on warm items here: the blend beats the tower alone on validation
    assert best["valid"] > next(g["valid"] for g in grid if g["tower_weight"] == 1.0)


def test_without_cold_validation_the_tower_validates_on_pseudo_cold_items() -> None:
    ds = make_clustered(with_features=True, cold_share=0.2)  # cold items only in test
    m = create("coldstart", **FAST, collaborative=None).fit(ds, progress=False)
    assert m.meta["tower_validation"].startswith("pseudo-cold")
    assert m.blend_weight == 1.0 and "blend_grid" not in m.meta
    cold = ds.cold_items
    assert cold is not None
    r = evaluate(m, ds, "test", ks=(5,), candidate_items=cold)["recall@5"]
    assert r > 2.5 * 5 / len(cold), r


def test_place_items_matches_fitted_vectors_and_handles_missing(cold_ds: Dataset, fitted: ColdStart) -> None:
    feats, masks = cold_ds.features, cold_ds.feature_masks
    placed = fitted.place_items(dict(feats), dict(masks))
    np.testing.assert_allclose(placed, fitted.item_vectors, rtol=1e-5, atol=1e-5)
    # no image (left out, or NaN rows masked False): placed from the text alone, finite
    no_image = fitted.place_items({"text": feats["text"][:5]})
    assert no_image.shape == (5, fitted.item_vectors.shape[1]) and np.isfinite(no_image).all()
    nan_rows = fitted.place_items(
        {"text": feats["text"][:5], "image": np.full((5, feats["image"].shape[1]), np.nan, np.float32)},
        {"image": np.zeros(5, bool)},
    )
    np.testing.assert_allclose(nan_rows, no_image, atol=1e-6)
    with pytest.raises(DataError, match="expected 16 features"):
        fitted.place_items({"text": np.zeros((2, 3), np.float32)})


def test_save_load_keeps_blend_and_collaborative_member(tmp_path: Path, fitted: ColdStart) -> None:
    back = ColdStart.load(fitted.save(tmp_path / "m"))
    assert back.blend_weight == fitted.blend_weight
    np.testing.assert_allclose(back.score([0, 1, 2]), fitted.score([0, 1, 2]), rtol=1e-5, atol=1e-6)


def test_fit_and_evaluate_from_a_config_encodes_features(tmp_path: Path) -> None:
    """``modalrec fit`` path: a TOML config with [encode] gives the model its features."""
    from modalrec.workflows.config import load_config
    from modalrec.workflows.pipeline import fit

    rng = np.random.default_rng(0)
    words = [
        ["red", "wool", "chair", "sofa"],
        ["blue", "steel", "lamp", "light"],
        ["green", "oak", "desk", "shelf"],
    ]
    items = ["item_id,title"] + [f"i{i},{' '.join(rng.choice(words[i % 3], 3))} {i}" for i in range(60)]
    (tmp_path / "items.csv").write_text("\n".join(items) + "\n")
    rows = ["user,item"]
    for u in range(90):
        own = [i for i in range(60) if i % 3 == u % 3]
        rows += [f"u{u},i{i}" for i in rng.choice(own, 12, replace=False)]
    (tmp_path / "inter.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "run.toml").write_text(
        f"""[data]
name = "{tmp_path / "inter.csv"}"
split = "cold_start"
seed = 1
options = {{ items = "{tmp_path / "items.csv"}", cold_share = 0.2 }}

[encode]
modalities = ["text"]
cache_dir = "{tmp_path / "cache"}"
options = {{ text = {{ encoder = "tfidf", fields = ["title"], dim = 8 }} }}

[model]
name = "coldstart"
params = {{ dim = 8, hidden = 16, max_steps = 60, eval_every = 10, seeds = 1, threads = 1, collaborative = {{ model = "itemknn", params = {{ k = 10 }} }} }}
"""
    )
    run = fit(load_config(tmp_path / "run.toml"), tmp_path / "run", progress=False)
    assert run.model.name == "coldstart" and sorted(run.dataset.features) == ["text"]
    metrics = (tmp_path / "run" / "metrics.json").read_text()
    assert "test_cold" in metrics


def test_without_modalities_it_is_its_collaborative_model(cold_ds: Dataset) -> None:
    """The report's "none (CF)" ablation (modalities = []) is the collaborative member alone."""
    m = create("coldstart", modalities=[], collaborative={"model": "itemknn", "params": {"k": 10}}).fit(
        cold_ds, progress=False
    )
    knn = create("itemknn", k=10).fit(cold_ds, progress=False)
    np.testing.assert_allclose(m.score([0, 5, 9]), knn.score([0, 5, 9]))
    with pytest.raises(DataError, match="needs a collaborative model"):
        create("coldstart", modalities=[], collaborative=None).fit(cold_ds, progress=False)
