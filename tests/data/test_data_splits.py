"""Split and k-core properties: disjoint, ratios, deterministic by seed, time order, cold items."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modalrec.core.errors import ConfigError
from modalrec.data import (
    cold_start_split,
    fixed_split,
    global_temporal_split,
    kcore_mask,
    leave_one_out_split,
    random_split,
    temporal_split,
)
from modalrec.data.splits import part_sizes


def interactions(
    n_users: int = 200, n_items: int = 300, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unique (user, item) pairs, 1..60 per user, with random timestamps."""
    rng = np.random.default_rng(seed)
    us, it = [], []
    for u in range(n_users):
        k = int(rng.integers(1, 61))
        us.append(np.full(k, u))
        it.append(rng.choice(n_items, k, replace=False))
    u, i = np.concatenate(us), np.concatenate(it)
    return u, i, rng.integers(0, 10_000, len(u)).astype(np.float64)


def test_random_split_ratios_and_min_train() -> None:
    u, _, _ = interactions()
    lab = random_split(u, seed=1)
    assert lab.dtype == np.int8 and set(np.unique(lab)) == {0, 1, 2}
    counts = np.bincount(u)
    expect_train, expect_valid, expect_test = part_sizes(counts)
    for k, expect in enumerate((expect_train, expect_valid, expect_test)):
        np.testing.assert_array_equal(np.bincount(u[lab == k], minlength=len(counts)), expect)
    assert (np.bincount(u[lab == 0], minlength=len(counts)) >= 1).all()
    big = counts >= 20
    share = np.bincount(u[lab == 0], minlength=len(counts))[big] / counts[big]
    assert np.all(np.abs(share - 0.8) < 0.06)


def test_random_split_determinism() -> None:
    u, _, _ = interactions()
    a, b, c = random_split(u, seed=3), random_split(u, seed=3), random_split(u, seed=4)
    np.testing.assert_array_equal(a, b)
    assert (a != c).any()


def test_random_split_custom_ratios() -> None:
    u = np.repeat(np.arange(10), 100)
    lab = random_split(u, (0.6, 0.0, 0.4), seed=0)
    assert np.bincount(lab, minlength=3).tolist() == [600, 0, 400]
    with pytest.raises(ConfigError):
        random_split(u, (0.6, 0.3, 0.3))


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(0, 30), min_size=1, max_size=300), st.integers(0, 2**31))
def test_part_sizes_invariants(users: list[int], seed: int) -> None:
    u = np.asarray(users)
    lab = random_split(u, seed=seed)
    counts = np.bincount(u)
    present = counts > 0
    n_train = np.bincount(u[lab == 0], minlength=len(counts))
    assert (n_train[present] >= 1).all()
    assert len(lab) == len(u)
    n_valid = np.bincount(u[lab == 1], minlength=len(counts))
    n_test = np.bincount(u[lab == 2], minlength=len(counts))
    np.testing.assert_array_equal(n_valid, n_test)  # equal ratios -> equal sizes


def test_temporal_split_respects_time() -> None:
    u, _, ts = interactions()
    lab = temporal_split(u, ts)
    for user in range(200):
        m = u == user
        t, lab_u = ts[m], lab[m]
        if (lab_u == 0).any() and (lab_u == 2).any():
            assert t[lab_u == 0].max() <= t[lab_u == 2].min()
        if (lab_u == 1).any():
            assert t[lab_u == 0].max() <= t[lab_u == 1].min() and t[lab_u == 1].max() <= t[lab_u == 2].min()
    counts = np.bincount(u)
    np.testing.assert_array_equal(np.bincount(u[lab == 2], minlength=len(counts)), part_sizes(counts)[2])


def test_global_temporal_split() -> None:
    _, _, ts = interactions()
    lab = global_temporal_split(ts)
    assert ts[lab == 0].max() < ts[lab == 1].min() and ts[lab == 1].max() < ts[lab == 2].min()
    share = np.bincount(lab) / len(lab)
    assert abs(share[0] - 0.8) < 0.01 and abs(share[2] - 0.1) < 0.01
    lab2 = global_temporal_split(ts, cuts=(5000, 9000))
    assert (lab2 == np.where(ts < 5000, 0, np.where(ts < 9000, 1, 2))).all()
    assert (global_temporal_split(np.array([3.0, 3.0, 3.0])) == 0).all()  # ties never empty train


def test_global_temporal_ties_stay_together() -> None:
    ts = np.array([1, 1, 1, 1, 2, 2, 2, 2, 2, 2], dtype=float)
    lab = global_temporal_split(ts, (0.5, 0.25, 0.25))
    for t in (1, 2):
        assert len(np.unique(lab[ts == t])) == 1


def test_leave_one_out() -> None:
    u, _, ts = interactions()
    lab = leave_one_out_split(u, ts)
    counts = np.bincount(u)
    n_test = np.bincount(u[lab == 2], minlength=len(counts))
    n_valid = np.bincount(u[lab == 1], minlength=len(counts))
    assert (n_test == (counts >= 2)).all() and (n_valid == (counts >= 3)).all()
    for user in np.flatnonzero(counts >= 2)[:50]:
        m = u == user
        assert ts[m][lab[m] == 2][0] == ts[m].max()
    # without timestamps: random but seeded
    a, b = leave_one_out_split(u, seed=1), leave_one_out_split(u, seed=1)
    np.testing.assert_array_equal(a, b)
    assert (np.bincount(u[a == 2], minlength=len(counts)) == n_test).all()


def test_fixed_split() -> None:
    assert fixed_split(np.array([0, 1, 2, 2])).tolist() == [0, 1, 2, 2]
    with pytest.raises(ConfigError, match="found 3"):
        fixed_split(np.array([0, 3]))


def test_cold_start_split() -> None:
    u, i, _ = interactions()
    base = random_split(u, seed=2024)
    lab, cold = cold_start_split(i, base, cold_share=0.1, seed=2024)
    n_with = len(np.unique(i))
    assert len(cold) == round(0.1 * n_with) and np.all(np.diff(cold) > 0)
    is_cold = np.isin(i, cold)
    assert not (lab[is_cold] == 0).any()  # cold items absent from train
    assert (lab[~is_cold] == base[~is_cold]).all()  # warm items untouched
    assert (lab[is_cold & (base > 0)] == base[is_cold & (base > 0)]).all()  # valid/test stay
    moved = is_cold & (base == 0)
    assert 0.35 < (lab[moved] == 1).mean() < 0.65
    lab2, cold2 = cold_start_split(i, base, cold_share=0.1, seed=2024)
    np.testing.assert_array_equal(lab, lab2)
    np.testing.assert_array_equal(cold, cold2)
    _, cold3 = cold_start_split(i, base, cold_share=0.1, seed=7)
    assert set(cold3) != set(cold)
    with pytest.raises(ConfigError):
        cold_start_split(i, base, cold_share=1.5)


def test_splits_partition_100k_rows() -> None:
    """Every row lands in exactly one part (speed is measured in benchmarks/eval_scale.py, not here)."""
    rng = np.random.default_rng(0)
    u = rng.integers(0, 1000, 100_000)
    ts = rng.random(100_000)
    for labels in (random_split(u, seed=1), temporal_split(u, ts), leave_one_out_split(u, ts)):
        assert labels.shape == (100_000,)
        assert set(np.unique(labels).tolist()) <= {0, 1, 2}


def test_kcore_reaches_fixed_point() -> None:
    u, i, _ = interactions(n_users=150, n_items=400, seed=3)
    res = kcore_mask(u, i, 5, 4)
    uk, ik = u[res.mask], i[res.mask]
    assert (np.bincount(uk)[np.unique(uk)] >= 5).all()
    assert (np.bincount(ik)[np.unique(ik)] >= 4).all()
    assert res.removed_rows == len(u) - res.mask.sum() > 0
    assert res.removed_users == len(np.unique(u)) - len(np.unique(uk))
    assert res.removed_items == len(np.unique(i)) - len(np.unique(ik))
    # maximality: the k-core is the largest such subset, so adding any removed row back breaks it
    again = kcore_mask(uk, ik, 5, 4)
    assert again.mask.all() and again.rounds == 1


def test_kcore_cascade() -> None:
    # a chain: removing the rare item drops user 2 below k, which drops item 1 below k
    u = np.array([0, 0, 1, 1, 2, 2])
    i = np.array([0, 1, 0, 1, 1, 2])
    res = kcore_mask(u, i, 2, 2)
    assert res.mask.tolist() == [True, True, True, True, False, False] and res.rounds >= 2
