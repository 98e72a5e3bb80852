"""Train / valid / test splits as pure functions on interaction arrays.

Every function takes per-interaction arrays (dense user index, item index, timestamp, fixed
label) and returns one ``int8`` label per interaction: ``0`` train, ``1`` valid, ``2`` test.
They are vectorised with numpy (a sort and a few ``bincount``; no Python loop over users), so
ML-100K splits in milliseconds, and deterministic: same input order + same seed = same split.
The loaders sort interactions by (user index, item index) before splitting, so a split does
not depend on the row order of the user's file.

Per-user part sizes (``random_split`` and ``temporal_split``), for a user with ``n``
interactions and ratios ``(r_train, r_valid, r_test)``::

    n_test  = floor(n * r_test  + 0.5)
    n_valid = floor(n * r_valid + 0.5)
    n_train = n - n_valid - n_test, and at least 1 (taken back from valid first, then test)

so every user keeps at least one training interaction, equal valid/test ratios give equal
valid/test sizes, and e.g. n=1 -> 1/0/0, n=3 -> 3/0/0, n=5 -> 3/1/1, n=20 -> 16/2/2.

>>> users = np.array([0] * 10 + [1] * 5)
>>> labels = random_split(users, seed=1)
>>> np.bincount(labels[users == 0]).tolist(), np.bincount(labels[users == 1]).tolist()
([8, 1, 1], [3, 1, 1])
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from modalrec.core.errors import ConfigError

TRAIN, VALID, TEST = 0, 1, 2
DEFAULT_RATIOS = (0.8, 0.1, 0.1)


def check_ratios(ratios: Sequence[float]) -> tuple[float, float, float]:
    """Validate (train, valid, test) ratios: three non-negative numbers summing to 1.

    >>> check_ratios([8, 1, 1])
    Traceback (most recent call last):
    ...
    modalrec.core.errors.ConfigError: split ratios must be three non-negative numbers summing to 1, got [8, 1, 1]
    """
    r = tuple(float(x) for x in ratios)
    if len(r) != 3 or min(r) < 0 or abs(sum(r) - 1.0) > 1e-6 or r[0] <= 0:
        raise ConfigError(
            f"split ratios must be three non-negative numbers summing to 1, got {list(ratios)}"
            + (" (train ratio must be > 0)" if len(r) == 3 and r[0] <= 0 and abs(sum(r) - 1) < 1e-6 else "")
        )
    return r[0], r[1], r[2]


def _rank_within_user(
    users: np.ndarray, key: np.ndarray, *, key_is_rank: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """For each interaction: its 0-based rank among its user's interactions ordered by ``key``
    (ties by input position), and the user's interaction count.

    One composite int64 sort key (user * n + rank of key) instead of ``np.lexsort``: several
    times faster on millions of rows.
    """
    users = np.asarray(users, dtype=np.int64)
    n = len(users)
    key = np.asarray(key)
    if key_is_rank:
        key_rank = key.astype(np.int64)  # already a permutation of 0..n-1
    else:
        key_rank = np.empty(n, dtype=np.int64)
        key_rank[np.argsort(key, kind="stable")] = np.arange(n)
    order = np.argsort(users * max(n, 1) + key_rank)
    su = users[order]
    boundary = np.empty(n, dtype=bool)
    if n:
        boundary[0] = True
        boundary[1:] = su[1:] != su[:-1]
    group_start = np.flatnonzero(boundary)
    group_id = np.cumsum(boundary) - 1
    sizes = np.diff(np.append(group_start, n))
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n) - group_start[group_id]
    count = np.empty(n, dtype=np.int64)
    count[order] = sizes[group_id]
    return rank, count


def part_sizes(
    n: np.ndarray, ratios: Sequence[float] = DEFAULT_RATIOS
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-user (n_train, n_valid, n_test) for interaction counts ``n`` (see the module docstring).

    >>> [a.tolist() for a in part_sizes(np.array([1, 2, 3, 5, 10, 20, 25]))]
    [[1, 2, 3, 3, 8, 16, 19], [0, 0, 0, 1, 1, 2, 3], [0, 0, 0, 1, 1, 2, 3]]
    """
    _, r_valid, r_test = check_ratios(ratios)
    n = np.asarray(n, dtype=np.int64)
    n_test = np.floor(n * r_test + 0.5).astype(np.int64)
    n_valid = np.floor(n * r_valid + 0.5).astype(np.int64)
    n_train = n - n_valid - n_test
    deficit = np.maximum(0, np.minimum(n, 1) - n_train)
    take_valid = np.minimum(deficit, n_valid)
    n_valid -= take_valid
    n_test -= deficit - take_valid
    return n - n_valid - n_test, n_valid, n_test


def _labels_from_rank(rank: np.ndarray, count: np.ndarray, ratios: Sequence[float]) -> np.ndarray:
    n_train, n_valid, _ = part_sizes(count, ratios)
    labels = np.full(len(rank), TEST, dtype=np.int8)
    labels[rank < n_train + n_valid] = VALID
    labels[rank < n_train] = TRAIN
    return labels


def random_split(
    users: np.ndarray, ratios: Sequence[float] = DEFAULT_RATIOS, *, seed: int = 2024
) -> np.ndarray:
    """Per-user random split: each user's interactions are shuffled (seeded) and cut by ``ratios``.

    >>> u = np.repeat(np.arange(3), 10)
    >>> (random_split(u, seed=7) == random_split(u, seed=7)).all()
    np.True_
    """
    users = np.asarray(users)
    key = np.random.default_rng(seed).permutation(len(users))
    rank, count = _rank_within_user(users, key, key_is_rank=True)
    return _labels_from_rank(rank, count, ratios)


def temporal_split(
    users: np.ndarray, timestamps: np.ndarray, ratios: Sequence[float] = DEFAULT_RATIOS
) -> np.ndarray:
    """Per-user temporal split: each user's latest interactions go to test, the ones before to valid.

    Ties in time keep input order (the loaders' order: by item index), so the split is deterministic.

    >>> temporal_split(np.zeros(5, int), np.array([50, 10, 40, 20, 30])).tolist()
    [2, 0, 1, 0, 0]
    """
    rank, count = _rank_within_user(users, np.asarray(timestamps, dtype=np.float64))
    return _labels_from_rank(rank, count, ratios)


def global_temporal_split(
    timestamps: np.ndarray,
    ratios: Sequence[float] = DEFAULT_RATIOS,
    *,
    cuts: tuple[float, float] | None = None,
) -> np.ndarray:
    """One time line for everybody: interactions before the first cut are train, then valid, then test.

    The cuts are the ``r_train`` and ``r_train + r_valid`` quantiles of the timestamps: the part
    boundaries fall after the ``round(n * r_train)``-th and ``round(n * (r_train + r_valid))``-th
    interaction in time, and interactions tied with the last one of a part stay in that part (so
    no two parts share a timestamp, and heavy ties never leave train empty). With explicit
    ``cuts=(valid_start, test_start)``: train is ``t < valid_start``, valid ``t < test_start``,
    test the rest. Users may appear only in valid/test (cold users).

    >>> global_temporal_split(np.array([1, 2, 3, 4, 5, 6, 7, 8, 9, 10])).tolist()
    [0, 0, 0, 0, 0, 0, 0, 0, 1, 2]
    >>> global_temporal_split(np.array([1, 5, 9]), cuts=(5, 9)).tolist()
    [0, 1, 2]
    >>> global_temporal_split(np.array([3, 3, 3, 3])).tolist()
    [0, 0, 0, 0]
    """
    ts = np.asarray(timestamps, dtype=np.float64)
    labels = np.full(len(ts), TEST, dtype=np.int8)
    if cuts is None:
        r_train, r_valid, _ = check_ratios(ratios)
        s = np.sort(ts)
        n = len(s)
        k1 = int(np.floor(n * r_train + 0.5))
        k2 = int(np.floor(n * (r_train + r_valid) + 0.5))
        last_train = s[k1 - 1] if k1 > 0 else -np.inf
        last_valid = s[k2 - 1] if k2 > 0 else -np.inf
        labels[ts <= last_valid] = VALID
        labels[ts <= last_train] = TRAIN
        return labels
    t1, t2 = float(cuts[0]), float(cuts[1])
    if t2 < t1:
        raise ConfigError(
            f"cuts must be (valid_start, test_start) with valid_start <= test_start, got {cuts}"
        )
    labels[ts < t2] = VALID
    labels[ts < t1] = TRAIN
    return labels


def leave_one_out_split(
    users: np.ndarray, timestamps: np.ndarray | None = None, *, seed: int = 2024
) -> np.ndarray:
    """Each user's last interaction is test and the one before it valid (random order without timestamps).

    A user with 1 interaction keeps it in train; with 2, the last is test and nothing is valid.

    >>> leave_one_out_split(np.array([0, 0, 0, 1, 1, 2]), np.array([3, 1, 2, 5, 4, 9])).tolist()
    [2, 0, 1, 2, 0, 0]
    """
    users = np.asarray(users)
    if timestamps is not None:
        rank, count = _rank_within_user(users, np.asarray(timestamps, dtype=np.float64))
    else:
        perm = np.random.default_rng(seed).permutation(len(users))
        rank, count = _rank_within_user(users, perm, key_is_rank=True)
    from_end = count - 1 - rank
    labels = np.zeros(len(users), dtype=np.int8)
    labels[(from_end == 1) & (count >= 3)] = VALID
    labels[(from_end == 0) & (count >= 2)] = TEST
    return labels


def fixed_split(labels: np.ndarray) -> np.ndarray:
    """Use given split labels (MMRec ``x_label``); they must be 0, 1 or 2.

    >>> fixed_split(np.array([0, 2, 1])).dtype
    dtype('int8')
    """
    lab = np.asarray(labels)
    if lab.size and (lab.min() < 0 or lab.max() > 2 or not np.array_equal(lab, np.round(lab))):
        bad = lab[(lab < 0) | (lab > 2) | (lab != np.round(lab))][0]
        raise ConfigError(f"split labels must be 0 (train), 1 (valid) or 2 (test), found {bad.item()!r}")
    return lab.astype(np.int8)


def cold_start_split(
    items: np.ndarray,
    labels: np.ndarray,
    *,
    cold_share: float = 0.1,
    seed: int = 2024,
    valid_fraction: float = 0.5,
) -> tuple[np.ndarray, np.ndarray]:
    """Hold a seeded share of items out of training entirely (item cold-start).

    Protocol: among the items that have at least one interaction, ``round(cold_share * n)``
    (at least 1) are drawn at random with ``seed``. Every *training* interaction on a cold item
    is moved to valid (probability ``valid_fraction``) or test; valid/test interactions of the
    base split stay where they are. Nothing is dropped: cold items appear in valid and test only,
    and the training matrix has empty columns for them. Evaluate by ranking the cold items only
    (``candidate_items=cold_items``), which masks seen interactions as usual (for test, the cold
    items' valid interactions).

    Returns ``(new_labels, cold_items)`` with ``cold_items`` sorted.

    >>> items = np.array([0, 0, 1, 1, 2, 2, 3, 3, 4, 4])
    >>> lab, cold = cold_start_split(items, np.zeros(10, np.int8), cold_share=0.2, seed=3)
    >>> cold.tolist(), bool((lab[np.isin(items, cold)] > 0).all()), int((lab == 0).sum())
    ([4], True, 8)
    """
    if not 0.0 < cold_share < 1.0:
        raise ConfigError(f"cold_share must be in (0, 1), got {cold_share}")
    if not 0.0 <= valid_fraction <= 1.0:
        raise ConfigError(f"valid_fraction must be in [0, 1], got {valid_fraction}")
    items = np.asarray(items, dtype=np.int64)
    labels = np.asarray(labels, dtype=np.int8).copy()
    candidates = np.unique(items)
    n_cold = max(1, int(np.floor(cold_share * len(candidates) + 0.5))) if len(candidates) else 0
    rng = np.random.default_rng(seed)
    cold = np.sort(rng.permutation(candidates)[:n_cold])
    moved = np.isin(items, cold) & (labels == TRAIN)
    draw = rng.random(len(items))  # drawn for every row so the result does not depend on `moved`'s size
    labels[moved] = np.where(draw[moved] < valid_fraction, VALID, TEST).astype(np.int8)
    return labels, cold


SPLITS = ("random", "temporal", "global_temporal", "leave_one_out", "fixed", "cold_start")
