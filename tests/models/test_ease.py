"""EASE and content EASE: the closed form solves its regression, content reaches cold items, masks hold."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from modalrec.core.errors import ConfigError
from modalrec.data.dataset import Dataset
from modalrec.evaluation import evaluate
from modalrec.models import Recommender, create
from modalrec.models.blend import standardise_rows
from modalrec.models.ease import ease_weights
from synthetic import make_clustered


def test_closed_form_equals_per_column_ridge() -> None:
    """Column j of B is the ridge regression of item j on the other items (diag(B) = 0 by construction)."""
    rng = np.random.default_rng(0)
    x = (rng.random((40, 7)) < 0.3).astype(np.float64)
    l2 = 2.0
    b = ease_weights(x.T @ x, l2)
    for j in range(7):
        others = [k for k in range(7) if k != j]
        a = x[:, others]
        w = np.linalg.solve(a.T @ a + l2 * np.eye(6), a.T @ x[:, j])
        np.testing.assert_allclose(b[others, j], w, atol=1e-10)
        assert b[j, j] == 0.0


def test_ease_ranks_well_and_rejects_bad_settings(clustered: Dataset) -> None:
    pop = evaluate(create("popularity").fit(clustered, progress=False), clustered, "test", ks=(10,))
    m = create("ease", l2=10.0).fit(clustered, progress=False)
    assert evaluate(m, clustered, "test", ks=(10,))["recall@10"] > 1.5 * pop["recall@10"]
    with pytest.raises(ConfigError, match=r"hyperparameter 'l2' = 0\.0: Input should be greater than 0"):
        create("ease", l2=0.0).fit(clustered, progress=False)
    with pytest.raises(ConfigError, match="max_items"):
        create("ease", max_items=10).fit(clustered, progress=False)


def test_content_weight_zero_is_plain_ease(featured: Dataset) -> None:
    plain = create("ease", l2=10.0).fit(featured, progress=False)
    zero = create("ease_content", l2=10.0, content_weight=0.0).fit(featured, progress=False)
    np.testing.assert_allclose(zero.score([0, 3]), plain.score([0, 3]), rtol=1e-5, atol=1e-6)
    some = create("ease_content", l2=10.0, content_weight=0.5).fit(featured, progress=False)
    assert some.meta["modalities"] == ["image", "text"]
    assert not np.allclose(some.score([0]), plain.score([0]))


def test_cold_items_reached_through_content() -> None:
    ds = make_clustered(with_features=True, cold_share=0.2)
    assert ds.cold_items is not None and ds.train[:, ds.cold_items].nnz == 0
    plain = create("ease", l2=10.0).fit(ds, progress=False)
    assert np.all(plain.score(np.arange(ds.n_users))[:, ds.cold_items] == 0)
    m = create("ease_content", l2=10.0, content_weight=0.5).fit(ds, progress=False)
    cold = evaluate(m, ds, "test", ks=(10,), candidate_items=ds.cold_items)
    pop = evaluate(
        create("popularity").fit(ds, progress=False), ds, "test", ks=(10,), candidate_items=ds.cold_items
    )
    assert cold["ndcg@10"] > 1.5 * pop["ndcg@10"]


def test_missing_rows_do_not_leak_into_scores(featured: Dataset) -> None:
    a = create("ease_content", l2=10.0, content_weight=0.5).fit(featured, progress=False)
    other = make_clustered(with_features=True)
    missing = ~other.feature_masks["image"]
    assert missing.any()
    other.features["image"][missing] = 1e3
    b = create("ease_content", l2=10.0, content_weight=0.5).fit(other, progress=False)
    np.testing.assert_allclose(a.score([0, 1]), b.score([0, 1]), rtol=1e-4, atol=1e-4)


def test_blend_picks_weights_on_validation_and_round_trips(featured: Dataset, tmp_path: Path) -> None:
    members = [
        {"model": "popularity", "params": {}},
        {"model": "ease_content", "params": {"l2": 10.0, "content_weight": 0.5}},
    ]
    m = create("blend", members=members, weight_steps=5, weight_users="all").fit(featured, progress=False)
    grid = m.meta["weights_grid"]
    assert len(grid) == 5 and m.meta["best_valid_recall@20"] == max(g["valid_recall@20"] for g in grid)
    assert m.weights == next(
        g["weights"] for g in grid if g["valid_recall@20"] == m.meta["best_valid_recall@20"]
    )
    # The search scored cached member scores: the fitted blend must reproduce its recorded value.
    assert evaluate(m, featured, "valid", ks=(20,))["recall@20"] == pytest.approx(
        m.meta["best_valid_recall@20"]
    )
    # Popularity alone is much worse than content EASE here: the search must not pick it.
    assert m.weights[1] > 0
    pure = create("blend", members=members, weights=[0.0, 1.0]).fit(featured, progress=False)
    ease = create("ease_content", l2=10.0, content_weight=0.5).fit(featured, progress=False)
    order = np.argsort(-pure.score([2]))[0, :10]
    np.testing.assert_array_equal(order, np.argsort(-ease.score([2]))[0, :10])
    loaded = Recommender.load(m.save(tmp_path / "b"))
    np.testing.assert_allclose(loaded.score([0, 4]), m.score([0, 4]), rtol=1e-5, atol=1e-6)
    with pytest.raises(ConfigError, match="members"):
        create("blend").fit(featured, progress=False)
    with pytest.raises(ConfigError, match="weights"):
        create("blend", members=members, weights=[1.0]).fit(featured, progress=False)


def test_a_blend_nests_as_a_seed_bag_and_round_trips(featured: Dataset, tmp_path: Path) -> None:
    """A blend member may itself be a blend with fixed weights (a seed bag: one setting fitted with
    several seeds, averaged), the shape the TikTok benchmark's seed-bag rows use."""
    bag = {
        "weights": [1.0, 1.0],
        "members": [{"model": "bprmf", "params": {"epochs": 3, "dim": 8, "seed": s}} for s in (1, 2)],
    }
    members = [{"model": "blend", "params": bag}, {"model": "popularity", "params": {}}]
    m = create("blend", members=members, weights=[1.0, 0.0]).fit(featured, progress=False)
    a, b = (create("bprmf", epochs=3, dim=8, seed=s).fit(featured, progress=False) for s in (1, 2))
    expected = standardise_rows(a._score(np.array([0, 3]))) + standardise_rows(b._score(np.array([0, 3])))
    np.testing.assert_allclose(m._score(np.array([0, 3])), standardise_rows(expected), rtol=1e-4, atol=1e-5)
    loaded = Recommender.load(m.save(tmp_path / "bag"))
    np.testing.assert_allclose(loaded.score([0, 3]), m.score([0, 3]), rtol=1e-5, atol=1e-6)
