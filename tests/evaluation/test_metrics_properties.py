"""Properties of the ranking metrics (Hypothesis): bounds, monotonicity in K, the perfect ranking,
invariance to what happens below the cut-off and to the identity and order of irrelevant items.

Definitions under test (module docstring of :mod:`modalrec.evaluation.metrics`): recall = hits /
#relevant, recall_capped = hits / min(K, #relevant), precision = hits / K, NDCG with binary gains and
IDCG over min(K, #relevant) positions, MAP divided by min(K, #relevant), Hit, MRR; a user without
relevant items gets NaN.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from modalrec.evaluation.metrics import METRICS, hit_matrix, mean_metrics, per_user_metrics

PROFILE = settings(deadline=None, max_examples=100)


@st.composite
def hit_lists(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, tuple[int, ...]]:
    """Users' top-L hit rows, their relevant counts (>= hits in the list, maybe 0) and cut-offs K
    (some larger than L: a list shorter than K)."""
    n_users = draw(st.integers(1, 6))
    length = draw(st.integers(1, 25))
    rows = draw(
        st.lists(
            st.lists(st.booleans(), min_size=length, max_size=length), min_size=n_users, max_size=n_users
        )
    )
    hits = np.array(rows, dtype=bool)
    extra = np.array(draw(st.lists(st.integers(0, 10), min_size=n_users, max_size=n_users)))
    n_rel = hits.sum(1) + extra
    ks = tuple(sorted(set(draw(st.lists(st.integers(1, length + 5), min_size=1, max_size=5)))))
    return hits, n_rel, ks


@PROFILE
@given(hit_lists())
def test_every_metric_is_in_unit_interval_and_nan_only_without_relevant_items(
    case: tuple[np.ndarray, np.ndarray, tuple[int, ...]],
) -> None:
    hits, n_rel, ks = case
    m = per_user_metrics(hits, n_rel, ks)
    assert set(m) == {f"{name}@{k}" for name in METRICS for k in ks}
    for key, v in m.items():
        assert v.shape == (len(n_rel),)
        assert np.array_equal(np.isnan(v), n_rel == 0), key
        ok = v[n_rel > 0]
        assert np.all((ok >= 0) & (ok <= 1 + 1e-12)), (key, ok)
    for key, v in mean_metrics(m).items():
        assert np.isnan(v) if (n_rel == 0).all() else 0 <= v <= 1 + 1e-12, key


@PROFILE
@given(hit_lists())
def test_recall_hit_mrr_and_hit_count_never_decrease_with_k(
    case: tuple[np.ndarray, np.ndarray, tuple[int, ...]],
) -> None:
    hits, n_rel, _ = case
    ks = tuple(range(1, hits.shape[1] + 4))
    m = per_user_metrics(hits, n_rel, ks)
    users = n_rel > 0
    for name in ("recall", "hit", "mrr"):
        curve = np.stack([m[f"{name}@{k}"][users] for k in ks], 1)
        assert np.all(np.diff(curve, axis=1) >= -1e-12), name
    hit_count = np.stack([m[f"precision@{k}"][users] * k for k in ks], 1)  # precision@K * K
    assert np.all(np.diff(hit_count, axis=1) >= -1e-9)
    np.testing.assert_allclose(hit_count[:, -1], hits[users].sum(1), rtol=1e-12)
    # DCG = NDCG * IDCG grows with K too (NDCG itself need not: IDCG grows as well).
    ideal = np.concatenate([[0.0], np.cumsum(1 / np.log2(np.arange(2, max(ks) + 2)))])  # IDCG by #positions
    dcg = np.stack([m[f"ndcg@{k}"][users] * ideal[np.minimum(n_rel[users], k)] for k in ks], 1)
    assert np.all(np.diff(dcg, axis=1) >= -1e-9)


@PROFILE
@given(st.integers(1, 30), st.integers(1, 30), st.lists(st.integers(1, 40), min_size=1, max_size=6))
def test_perfect_ranking(n_items: int, n_rel: int, k_list: list[int]) -> None:
    """Every relevant item first: NDCG = MAP = Hit = MRR = recall_capped = 1, recall = min(K, #rel)/#rel,
    precision = min(K, #rel)/K."""
    n_rel = min(n_rel, n_items)
    ks = tuple(sorted(set(k_list)))
    hits = np.zeros((1, n_items), dtype=bool)
    hits[0, :n_rel] = True
    m = per_user_metrics(hits, np.array([n_rel]), ks)
    for k in ks:
        got = min(k, n_rel)
        assert np.isclose(m[f"ndcg@{k}"][0], 1.0)
        assert np.isclose(m[f"map@{k}"][0], 1.0)
        assert np.isclose(m[f"recall_capped@{k}"][0], 1.0)
        assert m[f"hit@{k}"][0] == 1.0 and m[f"mrr@{k}"][0] == 1.0
        assert np.isclose(m[f"recall@{k}"][0], got / n_rel)
        assert np.isclose(m[f"precision@{k}"][0], got / k)


@PROFILE
@given(hit_lists(), st.data())
def test_metrics_at_k_ignore_everything_below_k(
    case: tuple[np.ndarray, np.ndarray, tuple[int, ...]], data: st.DataObject
) -> None:
    hits, n_rel, _ = case
    k = data.draw(st.integers(1, hits.shape[1]))
    changed = hits.copy()
    tail = data.draw(st.lists(st.booleans(), min_size=hits.shape[1] - k, max_size=hits.shape[1] - k))
    changed[:, k:] = np.array(tail, dtype=bool)[None, :]
    # keep #relevant >= hits in the list, as any real ranking has
    n_rel2 = np.maximum(n_rel, changed.sum(1))
    a = per_user_metrics(hits, n_rel2, (k,))
    b = per_user_metrics(changed, n_rel2, (k,))
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


@PROFILE
@given(hit_lists())
def test_a_short_list_equals_the_list_padded_with_misses(
    case: tuple[np.ndarray, np.ndarray, tuple[int, ...]],
) -> None:
    hits, n_rel, ks = case
    padded = np.pad(hits, ((0, 0), (0, max(ks))))
    a, b = per_user_metrics(hits, n_rel, ks), per_user_metrics(padded, n_rel, ks)
    for key in a:
        np.testing.assert_allclose(a[key], b[key], rtol=1e-12, err_msg=key)


@st.composite
def rankings(draw: st.DrawFn) -> tuple[np.ndarray, sp.csr_matrix, tuple[int, ...], int]:
    """Full rankings (item permutations) of U users over n items, their relevant items (CSR), cut-offs,
    and a seed for further permutations."""
    n_items = draw(st.integers(2, 30))
    n_users = draw(st.integers(1, 5))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    ranking = np.stack([rng.permutation(n_items) for _ in range(n_users)])
    rel = rng.random((n_users, n_items)) < draw(st.floats(0.05, 0.9))
    rel[np.arange(n_users), rng.integers(0, n_items, n_users)] = True  # at least one relevant each
    ks = tuple(sorted(set(draw(st.lists(st.integers(1, n_items + 3), min_size=1, max_size=4)))))
    return ranking, sp.csr_matrix(rel.astype(np.float32)), ks, seed


@PROFILE
@given(rankings())
def test_reordering_or_renaming_irrelevant_items_changes_nothing(
    case: tuple[np.ndarray, sp.csr_matrix, tuple[int, ...], int],
) -> None:
    ranking, truth, ks, seed = case
    rng = np.random.default_rng(seed + 1)
    rel = truth.toarray() > 0
    base = per_user_metrics(hit_matrix(ranking, truth), np.diff(truth.indptr), ks)
    # (a) shuffle the irrelevant items among the positions they occupy, per user
    shuffled = ranking.copy()
    for u in range(len(ranking)):
        pos = np.flatnonzero(~rel[u, ranking[u]])
        shuffled[u, pos] = ranking[u, rng.permutation(pos)]
    # (b) rename the items no user finds relevant among themselves (the same renaming for every user)
    never = np.flatnonzero(~rel.any(0))
    rename = np.arange(rel.shape[1])
    rename[never] = rng.permutation(never)
    for other in (shuffled, rename[ranking]):
        got = per_user_metrics(hit_matrix(other, truth), np.diff(truth.indptr), ks)
        for key in base:
            np.testing.assert_array_equal(got[key], base[key], err_msg=key)


@PROFILE
@given(rankings())
def test_relabelling_all_items_and_permuting_users_keeps_the_means(
    case: tuple[np.ndarray, sp.csr_matrix, tuple[int, ...], int],
) -> None:
    ranking, truth, ks, seed = case
    rng = np.random.default_rng(seed + 2)
    n_users, n_items = truth.shape
    perm_items = rng.permutation(n_items)  # item i is called perm_items[i] from now on
    perm_users = rng.permutation(n_users)
    dense = truth.toarray()
    renamed = np.zeros_like(dense)
    renamed[:, perm_items] = dense
    truth2 = sp.csr_matrix(renamed[perm_users])
    ranking2 = perm_items[ranking][perm_users]
    a = per_user_metrics(hit_matrix(ranking, truth), np.diff(truth.indptr), ks)
    b = per_user_metrics(hit_matrix(ranking2, truth2), np.diff(truth2.indptr), ks)
    for key in a:
        np.testing.assert_allclose(b[key], a[key][perm_users], rtol=1e-12, err_msg=key)
    ma, mb = mean_metrics(a), mean_metrics(b)
    assert ma.keys() == mb.keys()
    for key in ma:
        assert np.isclose(ma[key], mb[key], rtol=1e-12, atol=1e-15), key
