"""The ranking metrics against independent implementations.

NDCG@K against scikit-learn's ``ndcg_score`` (binary relevance, a full ranking of random scores with
no ties), per user and through the whole :func:`~modalrec.evaluation.evaluate` protocol; recall,
recall_capped, precision, Hit, MRR and MAP against a plain Python reference written from the
definitions in the module docstring.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from modalrec.data.dataset import Dataset
from modalrec.evaluation import evaluate
from modalrec.evaluation.metrics import hit_matrix, per_user_metrics

sklearn_metrics = pytest.importorskip("sklearn.metrics")

PROFILE = settings(deadline=None, max_examples=100)


def reference(ranking: list[int], relevant: set[int], k: int) -> dict[str, float]:
    """Plain Python, one user: ``ranking`` is the ranked item list (maybe shorter than ``k``)."""
    top = ranking[:k]
    flags = [item in relevant for item in top]
    hits = sum(flags)
    capped = min(k, len(relevant))
    precisions = [sum(flags[: r + 1]) / (r + 1) for r in range(len(top))]
    first = next((r + 1 for r, f in enumerate(flags) if f), None)
    dcg = sum(1 / math.log2(r + 2) for r, f in enumerate(flags) if f)
    idcg = sum(1 / math.log2(r + 2) for r in range(capped))
    return {
        "recall": hits / len(relevant),
        "recall_capped": hits / capped,
        "precision": hits / k,
        "hit": float(hits > 0),
        "mrr": 1 / first if first else 0.0,
        "map": sum(p for p, f in zip(precisions, flags, strict=True) if f) / capped,
        "ndcg": dcg / idcg,
    }


@st.composite
def scored_users(draw: st.DrawFn) -> tuple[np.ndarray, np.ndarray, tuple[int, ...]]:
    """Relevance (bool [U, n], >= 1 relevant per user), distinct random scores [U, n], cut-offs."""
    n_items = draw(st.integers(2, 40))
    n_users = draw(st.integers(1, 6))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    rel = rng.random((n_users, n_items)) < draw(st.floats(0.02, 0.8))
    rel[np.arange(n_users), rng.integers(0, n_items, n_users)] = True
    # distinct scores (a permutation of a float grid, with noise well below its step): no ties
    scores = np.stack([rng.permutation(n_items) + 0.1 * rng.random(n_items) for _ in range(n_users)])
    ks = tuple(sorted(set(draw(st.lists(st.integers(1, n_items + 5), min_size=1, max_size=4)))))
    return rel, scores.astype(np.float32), ks


@PROFILE
@given(scored_users())
def test_ndcg_matches_sklearn_per_user(case: tuple[np.ndarray, np.ndarray, tuple[int, ...]]) -> None:
    rel, scores, ks = case
    order = np.argsort(-scores, axis=1, kind="stable")
    hits = np.take_along_axis(rel, order, axis=1)
    m = per_user_metrics(hits, rel.sum(1), ks)
    for k in ks:
        for u in range(len(rel)):
            want = sklearn_metrics.ndcg_score(rel[u : u + 1].astype(float), scores[u : u + 1], k=k)
            assert abs(m[f"ndcg@{k}"][u] - want) < 1e-6, (k, u)


@PROFILE
@given(scored_users())
def test_every_metric_matches_plain_python(case: tuple[np.ndarray, np.ndarray, tuple[int, ...]]) -> None:
    rel, scores, ks = case
    length = min(rel.shape[1], max(ks))  # the protocol ranks top-max(K) only; lists may be short
    order = np.argsort(-scores, axis=1, kind="stable")[:, :length]
    truth = sp.csr_matrix(rel.astype(np.float32))
    m = per_user_metrics(hit_matrix(order, truth), np.diff(truth.indptr), ks)
    for u in range(len(rel)):
        relevant = set(np.flatnonzero(rel[u]).tolist())
        for k in ks:
            for name, want in reference(order[u].tolist(), relevant, k).items():
                assert m[f"{name}@{k}"][u] == pytest.approx(want, rel=1e-12, abs=1e-12), (name, k, u)


class ScoresOnly:
    """Fixed scores behind the one method evaluation needs."""

    def __init__(self, scores: np.ndarray) -> None:
        self.scores = scores

    def _score(self, users: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(self.scores[users])


def test_evaluate_ndcg_matches_sklearn_over_users() -> None:
    """Through the whole protocol: every item ranked (nothing seen), mean over users with relevant items."""
    rng = np.random.default_rng(7)
    n_users, n_items = 40, 60
    rel = rng.random((n_users, n_items)) < 0.08
    rel[:5] = False  # users without relevant items are skipped by evaluate and left out of sklearn
    rel[5:, 0] |= ~rel[5:].any(1)
    scores = np.stack([rng.permutation(n_items) for _ in range(n_users)]).astype(np.float32)
    empty = sp.csr_matrix((n_users, n_items), dtype=np.float32)
    ds = Dataset(
        "ref",
        np.array([f"u{i}" for i in range(n_users)]),
        np.array([f"i{i}" for i in range(n_items)]),
        empty,
        empty,
        sp.csr_matrix(rel.astype(np.float32)),
    )
    ks = (1, 5, 10, 20, n_items)
    res = evaluate(ScoresOnly(scores), ds, "test", ks=ks)
    assert res.n_users == n_users - 5
    for k in ks:
        want = sklearn_metrics.ndcg_score(rel[5:].astype(float), scores[5:], k=k)
        assert abs(res.metrics[f"ndcg@{k}"] - want) < 1e-6, k
        hits = [
            len(set(np.argsort(-scores[u])[:k].tolist()) & set(np.flatnonzero(rel[u]).tolist()))
            for u in range(5, n_users)
        ]
        n_rel = rel[5:].sum(1)
        assert res.metrics[f"recall@{k}"] == pytest.approx(float(np.mean(np.array(hits) / n_rel)), abs=1e-12)
        assert res.metrics[f"precision@{k}"] == pytest.approx(float(np.mean(hits)) / k, abs=1e-12)
