"""Evaluation at scale: same metrics as the dense reference, memory guards, seeded samples with CIs."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from tests.synthetic import make_clustered

from modalrec.core.memory import MemoryBudgetError
from modalrec.data.dataset import Dataset
from modalrec.evaluation import evaluate
from modalrec.evaluation.metrics import hit_matrix, mean_metrics, per_user_metrics
from modalrec.evaluation.protocol import confidence_intervals, plan_chunk_size, sample_users


class Table:
    """A scorer over a fixed score table (what a model's ``_score`` returns, without a model)."""

    def __init__(self, scores: np.ndarray) -> None:
        self.scores = scores

    def _score(self, users: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(self.scores[users])


def dense_reference(
    scores: np.ndarray, ds: Dataset, split: str, ks: tuple[int, ...], cand: np.ndarray | None
):
    """The protocol as it was: every user at once, a dense hit mask, ``np.unique`` coverage."""
    truth, seen = ds.target(split), ds.seen(split)
    s = scores
    if cand is not None:
        truth, seen, s = truth[:, cand].tocsr(), seen[:, cand].tocsr(), s[:, cand]
    users = np.flatnonzero(np.diff(truth.indptr) > 0)
    s = torch.from_numpy(s[users].copy())
    sub = seen[users]
    s[
        torch.as_tensor(np.repeat(np.arange(len(users)), np.diff(sub.indptr))), torch.as_tensor(sub.indices)
    ] = -np.inf
    top = torch.topk(s, min(max(ks), s.shape[1]), dim=1, sorted=True).indices.numpy()
    t = truth[users]
    dense = t.toarray() > 0
    hits = np.take_along_axis(dense, top, axis=1)
    metrics = mean_metrics(per_user_metrics(hits, np.diff(t.indptr), ks))
    cov = {f"coverage@{k}": len(np.unique(top[:, :k])) / s.shape[1] for k in ks}
    return metrics, cov, len(users)


@pytest.mark.parametrize("ties", [False, True])
def test_chunked_evaluation_equals_the_dense_reference(clustered: Dataset, ties: bool) -> None:
    rng = np.random.default_rng(3)
    scores = rng.random((clustered.n_users, clustered.n_items)).astype(np.float32)
    if ties:  # few distinct values: the tie order of the top-k matters, as for popularity or ItemKNN
        scores = np.floor(scores * 4).astype(np.float32)
    half = np.arange(0, clustered.n_items, 2)
    for split, cand, ks in (("test", None, (10, 20, 50)), ("valid", None, (5,)), ("test", half, (10, 20))):
        want = dense_reference(scores, clustered, split, ks, cand)
        for chunk in (None, 7, 10_000):
            got = evaluate(Table(scores), clustered, split, ks=ks, candidate_items=cand, chunk_size=chunk)
            assert (got.metrics, got.coverage, got.n_users) == want, (split, chunk)


def test_hit_matrix_is_the_dense_lookup_with_duplicates_and_unsorted_indices() -> None:
    rng = np.random.default_rng(0)
    rows, cols = rng.integers(0, 30, 400), rng.integers(0, 500, 400)
    truth = sp.csr_matrix((np.ones(400, np.float32), (rows, cols)), shape=(30, 500))
    truth.has_sorted_indices = False
    messy = sp.csr_matrix((truth.data, truth.indices[::-1].copy(), truth.indptr), shape=truth.shape)
    top = rng.integers(0, 500, (30, 50))
    dense = np.zeros(truth.shape, dtype=bool)
    dense[np.repeat(np.arange(30), np.diff(messy.indptr)), messy.indices] = True
    np.testing.assert_array_equal(hit_matrix(top, messy), np.take_along_axis(dense, top, axis=1))
    assert hit_matrix(np.zeros((2, 3), dtype=np.int64), sp.csr_matrix((2, 5))).sum() == 0
    with pytest.raises(IndexError, match="outside"):
        hit_matrix(np.array([[5]]), sp.csr_matrix((1, 5)))


def test_chunks_are_sized_from_the_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODALREC_MEMORY_BUDGET", "120M")
    # 200k items x 4 bytes x 3 copies = 2.4 MB per user: 52 users fit in 120 MiB
    assert plan_chunk_size(200_000) == 52
    assert plan_chunk_size(1682) == 4096 and plan_chunk_size(1682, n_users=10) == 10
    with pytest.raises(MemoryBudgetError) as e:
        plan_chunk_size(200_000, chunk_size=4096)
    msg = str(e.value)
    assert "4096 users x 200000 items" in msg and "9.2 GiB" in msg and "120.0 MiB" in msg
    assert "smaller chunk_size" in msg
    with pytest.raises(MemoryBudgetError, match="candidate_items"):
        plan_chunk_size(20_000_000)


def test_evaluate_refuses_a_chunk_over_the_budget(
    clustered: Dataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    scores = np.random.default_rng(0).random((clustered.n_users, clustered.n_items)).astype(np.float32)
    monkeypatch.setenv("MODALREC_MEMORY_BUDGET", "100K")
    with pytest.raises(MemoryBudgetError, match="scoring 1000 users x 80 items"):
        evaluate(Table(scores), clustered, "test", chunk_size=1000)
    small = evaluate(Table(scores), clustered, "test")  # sized from the budget: still the same metrics
    monkeypatch.delenv("MODALREC_MEMORY_BUDGET")
    assert (
        small.chunk_size < clustered.n_users and small.metrics == evaluate(Table(scores), clustered).metrics
    )


def test_user_sample_is_seeded_and_its_interval_covers_the_full_value() -> None:
    ds = make_clustered(n_users=1500, n_items=120, seed=1)
    rng = np.random.default_rng(0)
    pop = ds.item_popularity() / ds.item_popularity().max()
    scores = (rng.random((ds.n_users, ds.n_items)) + pop).astype(np.float32)  # popularity-like signal
    full = evaluate(Table(scores), ds, "test")
    a = evaluate(Table(scores), ds, "test", sample_users=300, seed=5, keep_per_user=True)
    b = evaluate(Table(scores), ds, "test", sample_users=300, seed=5, keep_per_user=True)
    assert a.metrics == b.metrics and np.array_equal(a.users, b.users)
    assert a.n_users == 300 and a.population == full.n_users
    lo, hi = a.confidence["recall@20"]
    assert lo <= full.metrics["recall@20"] <= hi
    info = a.as_dict()["sample"]
    assert info["seed"] == 5 and info["population"] == full.n_users and "normal" in info["confidence_method"]
    # over many seeds a 95% interval covers the population value about 95% of the time
    covered = []
    for seed in range(60):
        r = evaluate(Table(scores), ds, "test", ks=(20,), sample_users=100, seed=seed)
        lo, hi = r.confidence["recall@20"]
        covered.append(lo <= full.metrics["recall@20"] <= hi)
    assert 0.85 <= np.mean(covered) <= 1.0
    # the whole population as a "sample": no sampling error, the full value
    whole = evaluate(Table(scores), ds, "test", sample_users=10**6)
    assert whole.metrics == full.metrics and whole.confidence["recall@20"] == (full["recall@20"],) * 2


def test_confidence_interval_shrinks_like_one_over_sqrt_n() -> None:
    rng = np.random.default_rng(0)
    values = rng.random(40_000)
    w = [
        np.diff(confidence_intervals({"m": values[:n]}, population=10**9)["m"])[0] for n in (400, 1600, 6400)
    ]
    assert w[0] / w[1] == pytest.approx(2.0, rel=0.1) and w[1] / w[2] == pytest.approx(2.0, rel=0.1)
    assert sample_users(np.arange(10), 3, seed=1).tolist() == sorted(sample_users(np.arange(10), 3, seed=1))
    with pytest.raises(ValueError, match=">= 1"):
        sample_users(np.arange(10), 0, seed=1)
