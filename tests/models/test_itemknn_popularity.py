"""ItemKNN's ``pop_weight``: 0 keeps plain ItemKNN bit for bit, > 0 blends in popularity, 1 is Popularity."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from modalrec.core.errors import ConfigError
from modalrec.data.dataset import Dataset
from modalrec.models import Recommender, create
from modalrec.models.itemknn import ItemKNN, cosine_item_similarity


def _tiny() -> Dataset:
    """Item 0 is popular (users 1-5) and never co-seen with item 1 or 2; user 0 has item 1, whose only
    neighbour is the unpopular item 2. Plain ItemKNN puts item 2 first for user 0, popularity item 0."""
    rows = [0, 1, 1, 2, 3, 4, 5, 6, 6]
    cols = [1, 0, 3, 0, 0, 0, 0, 1, 2]
    train = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(7, 4))
    empty = sp.csr_matrix((7, 4), dtype=np.float32)
    return Dataset(
        name="tiny",
        user_ids=np.array([f"u{i}" for i in range(7)]),
        item_ids=np.array([f"i{i}" for i in range(4)]),
        train=train,
        valid=empty,
        test=empty,
    )


def test_default_is_plain_itemknn_bit_for_bit(clustered: Dataset) -> None:
    """pop_weight 0 (the default) scores exactly as ItemKNN always did: train @ sim + tie-breaker."""
    model = create("itemknn", k=20, shrink=10.0).fit(clustered, progress=False)
    assert isinstance(model, ItemKNN) and model.hp.pop_weight == 0.0
    train = clustered.train.astype(np.float32)
    sim = cosine_item_similarity(clustered.train, 20, 10.0).astype(np.float32)
    pop = np.asarray(train.sum(axis=0)).ravel()
    expected = (train @ sim).toarray().astype(np.float32) + (1e-6 * pop / pop.max()).astype(np.float32)
    users = np.arange(clustered.n_users)
    np.testing.assert_array_equal(model.score(users), expected)


def test_pop_weight_moves_the_popular_item_up() -> None:
    """Fails if the option is ignored: with w = 0.9 the popular item outranks the neighbour."""
    ds = _tiny()
    plain = create("itemknn", k=3).fit(ds, progress=False).score(np.array([0]))[0]
    blend = create("itemknn", k=3, pop_weight=0.9).fit(ds, progress=False).score(np.array([0]))[0]
    assert plain[2] > plain[0]
    assert blend[0] > blend[2]
    # the blend is exactly (1 - w) * s / max s + w * pop / max pop (+ the 1e-6 tie-breaker)
    pop = np.array([5, 2, 1, 1], np.float32) / 5
    s = plain - 1e-6 * pop
    np.testing.assert_allclose(blend, 0.1 * s / s.max() + 0.9 * pop + 1e-6 * pop, rtol=1e-6)


def test_pop_weight_one_ranks_like_popularity(clustered: Dataset) -> None:
    users = np.arange(clustered.n_users)
    knn = create("itemknn", k=20, pop_weight=1.0).fit(clustered, progress=False).score(users)
    pop = create("popularity").fit(clustered, progress=False).score(users)
    for u in users[:10]:
        order = np.argsort(-pop[u], kind="stable")
        assert np.all(np.diff(knn[u][order]) <= 0)


def test_user_without_neighbour_scores_is_ranked_by_popularity() -> None:
    """Without item 3, item 0 is co-seen with nothing: user 2 (item 0 only) has no neighbour score and
    gets popularity (item 1, 2 users, first), not a division by zero."""
    ds = _tiny()
    train = sp.csr_matrix(ds.train.toarray() * (np.arange(4) != 3), dtype=np.float32)
    ds = Dataset(
        name="tiny", user_ids=ds.user_ids, item_ids=ds.item_ids, train=train, valid=ds.valid, test=ds.test
    )
    scores = create("itemknn", k=3, pop_weight=0.5).fit(ds, progress=False).score(np.array([2]))[0]
    assert np.all(np.isfinite(scores))
    assert scores[1] > scores[2] > scores[3]


def test_pop_weight_survives_save_and_load(clustered: Dataset, tmp_path: Path) -> None:
    model = create("itemknn", k=20, pop_weight=0.5).fit(clustered, progress=False)
    model.save(tmp_path / "knn")
    again = Recommender.load(tmp_path / "knn")
    users = np.arange(5)
    np.testing.assert_array_equal(again.score(users), model.score(users))


def test_pop_weight_out_of_range_is_refused(clustered: Dataset) -> None:
    with pytest.raises(ConfigError, match="pop_weight"):
        create("itemknn", pop_weight=1.5).fit(clustered, progress=False)
