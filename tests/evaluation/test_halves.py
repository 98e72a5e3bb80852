"""Validation halves: disjoint, covering, deterministic, and the blend chooses its weights on the tune half."""

from __future__ import annotations

import numpy as np
import pytest

from modalrec.evaluation import evaluate, split_users, validation_halves
from modalrec.models import create
from synthetic import make_clustered


def test_halves_are_disjoint_cover_and_balanced() -> None:
    users = np.random.default_rng(3).choice(10_000, size=777, replace=False)
    tune, select = split_users(users, seed=2024)
    assert len(np.intersect1d(tune, select)) == 0
    np.testing.assert_array_equal(np.union1d(tune, select), np.sort(users))
    assert (len(tune), len(select)) == (389, 388)
    assert np.all(np.diff(tune) > 0) and np.all(np.diff(select) > 0)


def test_halves_are_deterministic_and_depend_on_the_seed_only() -> None:
    users = np.arange(0, 3000, 3)
    a = split_users(users, seed=2024)
    b = split_users(users[::-1].copy(), seed=2024)  # order of the input does not matter
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    c = split_users(users, seed=7)
    assert not np.array_equal(a[0], c[0])
    # not a trivial split (e.g. low ids / high ids): both halves span the range
    for half in a:
        assert half.min() < 300 and half.max() > 2700


def test_validation_halves_are_the_users_with_validation_items() -> None:
    ds = make_clustered()
    tune, select = validation_halves(ds)
    has_valid = np.flatnonzero(np.diff(ds.target("valid").indptr) > 0)
    np.testing.assert_array_equal(np.union1d(tune, select), has_valid)
    assert len(np.intersect1d(tune, select)) == 0
    again = validation_halves(make_clustered())
    np.testing.assert_array_equal(tune, again[0])


def test_blend_weights_use_the_tune_half_only() -> None:
    ds = make_clustered(with_features=True)
    members = [
        {"model": "popularity", "params": {}},
        {"model": "ease_content", "params": {"l2": 10.0, "content_weight": 0.5}},
    ]
    m = create("blend", members=members, weight_steps=5).fit(ds, progress=False)
    tune, select = validation_halves(ds)
    assert m.meta["weights_chosen_on"] == {"users": "tune_half", "n_users": len(tune), "halves_seed": 2024}
    on_tune = evaluate(m, ds, "valid", ks=(20,), users=tune)["recall@20"]
    assert on_tune == pytest.approx(m.meta["best_valid_recall@20"])
    assert m.meta["best_valid_recall@20"] == max(g["valid_recall@20"] for g in m.meta["weights_grid"])
    whole = create("blend", members=members, weight_steps=5, weight_users="all").fit(ds, progress=False)
    assert whole.meta["weights_chosen_on"]["n_users"] == len(tune) + len(select)
    assert evaluate(whole, ds, "valid", ks=(20,))["recall@20"] == pytest.approx(
        whole.meta["best_valid_recall@20"]
    )
