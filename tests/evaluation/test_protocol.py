"""The full-ranking protocol: masking of seen items, candidate restriction, user selection."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from modalrec.data.dataset import Dataset
from modalrec.evaluation import EvalResult, evaluate, recall_at
from modalrec.evaluation.protocol import Scorer
from modalrec.models import create
from modalrec.models.base import Recommender
from modalrec.models.checks import FAST_PARAMS


class FixedScores(Recommender):
    """A recommender whose scores are given: lets the protocol be checked by hand."""

    name = "fixed-scores-test"

    def __init__(self, scores: np.ndarray) -> None:
        super().__init__()
        self.scores = scores

    def _fit(self, dataset: Dataset, *, progress: bool) -> None:
        pass

    def _score(self, users: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(self.scores[users])


def _ds() -> Dataset:
    train = sp.csr_matrix(np.array([[1, 0, 0, 0], [0, 1, 0, 0]], dtype=np.float32))
    valid = sp.csr_matrix(np.array([[0, 1, 0, 0], [0, 0, 0, 0]], dtype=np.float32))
    test = sp.csr_matrix(np.array([[0, 0, 1, 0], [0, 0, 0, 1]], dtype=np.float32))
    return Dataset("t", np.array(["a", "b"]), np.array(["w", "x", "y", "z"]), train, valid, test)


def test_train_and_valid_items_are_masked_at_test_time() -> None:
    ds = _ds()
    # user 0 prefers its train item 0, then its valid item 1, then test item 2.
    scores = np.array([[9, 8, 7, 1], [9, 8, 1, 7]], dtype=np.float32)
    model = FixedScores(scores).fit(ds, progress=False)
    res = evaluate(model, ds, "test", ks=(1, 2))
    # user 0: items 0 (train) and 1 (valid) masked -> rank 1 = item 2 (hit).
    # user 1: item 1 (train) masked -> rank 1 = item 0 (miss), rank 2 = item 3 (hit).
    assert res.n_users == 2
    assert res.metrics["recall@1"] == 0.5
    assert res.metrics["recall@2"] == 1.0
    # At validation time only train is masked: user 0's rank 1 is item 1 (valid hit).
    val = evaluate(model, ds, "valid", ks=(1,))
    assert val.n_users == 1 and val.metrics["recall@1"] == 1.0


def test_candidate_items_restrict_ranking() -> None:
    ds = _ds()
    scores = np.array([[9, 8, 1, 7], [9, 8, 1, 7]], dtype=np.float32)
    model = FixedScores(scores).fit(ds, progress=False)
    res = evaluate(model, ds, "test", ks=(1,), candidate_items=np.array([2, 3]))
    # user 0: candidates {2, 3}: 3 ranks first (miss); user 1: 3 first (hit).
    assert res.metrics["recall@1"] == 0.5
    assert res.coverage["coverage@1"] == 0.5


def test_chunking_does_not_change_results(clustered: Dataset) -> None:
    rng = np.random.default_rng(0)
    scores = rng.random((clustered.n_users, clustered.n_items)).astype(np.float32)
    model = FixedScores(scores).fit(clustered, progress=False)
    a = evaluate(model, clustered, "test", chunk_size=7).metrics
    b = evaluate(model, clustered, "test", chunk_size=10_000).metrics
    assert a == b


class ScoresOnly:
    """Not a model: a plain object with the one method of the ``Scorer`` protocol."""

    def __init__(self, scores: np.ndarray) -> None:
        self.scores = scores

    def _score(self, users: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(self.scores[users])


def _same(a: EvalResult, b: EvalResult) -> None:
    assert a.n_users == b.n_users and a.split == b.split
    assert a.metrics == b.metrics
    assert a.coverage == b.coverage
    assert a.per_user is not None and b.per_user is not None and a.per_user.keys() == b.per_user.keys()
    for key in a.per_user:
        np.testing.assert_array_equal(a.per_user[key], b.per_user[key], err_msg=key)
    np.testing.assert_array_equal(a.users, b.users)


@pytest.mark.parametrize("name", ["itemknn", "ease", "bprmf"])
def test_a_plain_scorer_evaluates_like_the_model(name: str, clustered: Dataset) -> None:
    """``evaluate`` needs only ``_score``: a model and a plain object holding its scores agree exactly,
    on both splits, with candidate items, a user subset and any chunk size."""
    model = create(name, **FAST_PARAMS[name]).fit(clustered, progress=False)
    plain: Scorer = ScoresOnly(model.score(np.arange(clustered.n_users)))
    assert not isinstance(plain, Recommender) and not hasattr(plain, "score")
    half = np.arange(0, clustered.n_items, 2)
    for kwargs in (
        {"split": "test"},
        {"split": "valid", "ks": (5, 20)},
        {"split": "test", "candidate_items": half},
        {"split": "test", "users": np.arange(0, clustered.n_users, 3), "chunk_size": 7},
    ):
        _same(
            evaluate(model, clustered, keep_per_user=True, **kwargs),
            evaluate(plain, clustered, keep_per_user=True, **kwargs),
        )


def test_recall_at_accepts_a_plain_scorer(clustered: Dataset) -> None:
    model = create("itemknn", **FAST_PARAMS["itemknn"]).fit(clustered, progress=False)
    plain = ScoresOnly(model.score(np.arange(clustered.n_users)))
    assert recall_at(plain, clustered, "valid", k=20) == recall_at(model, clustered, "valid", k=20)
    assert (
        recall_at(plain, clustered, "valid", k=20)
        == evaluate(plain, clustered, "valid", ks=(20,))["recall@20"]
    )
