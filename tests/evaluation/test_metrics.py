"""Metrics against hand-computed cases, including users with fewer relevant items than K."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp

from modalrec.evaluation.metrics import coverage, hit_matrix, mean_metrics, per_user_metrics


def test_hand_computed_single_user() -> None:
    # Ranking: [a, b, c, d, e]; relevant: a, c (2 relevant, fewer than K=5).
    hits = np.array([[True, False, True, False, False]])
    m = per_user_metrics(hits, np.array([2]), (1, 3, 5))
    assert m["recall@1"][0] == pytest.approx(0.5)
    assert m["recall@3"][0] == pytest.approx(1.0)
    assert m["recall_capped@1"][0] == pytest.approx(1.0)  # 1 hit / min(1, 2)
    assert m["precision@3"][0] == pytest.approx(2 / 3)
    assert m["precision@5"][0] == pytest.approx(2 / 5)
    dcg = 1 + 1 / math.log2(4)
    idcg = 1 + 1 / math.log2(3)
    assert m["ndcg@5"][0] == pytest.approx(dcg / idcg)
    assert m["ndcg@1"][0] == pytest.approx(1.0)
    # AP@5 = (P@1 * 1 + P@3 * 1) / min(5, 2) = (1 + 2/3) / 2
    assert m["map@5"][0] == pytest.approx((1 + 2 / 3) / 2)
    assert m["hit@1"][0] == 1.0
    assert m["mrr@5"][0] == 1.0


def test_no_hit_and_late_hit() -> None:
    hits = np.array([[False, False, False], [False, False, True]])
    m = per_user_metrics(hits, np.array([1, 4]), (2, 3))
    assert m["recall@3"].tolist() == [0.0, 0.25]
    assert m["mrr@2"].tolist() == [0.0, 0.0]
    assert m["mrr@3"][1] == pytest.approx(1 / 3)
    assert m["hit@2"].tolist() == [0.0, 0.0]
    # second user: DCG = 1/log2(4); IDCG@3 with 4 relevant = 1 + 1/log2(3) + 1/log2(4)
    assert m["ndcg@3"][1] == pytest.approx(0.5 / (1 + 1 / math.log2(3) + 0.5))


def test_users_without_relevant_items_are_skipped() -> None:
    hits = np.array([[True, False], [False, False]])
    m = per_user_metrics(hits, np.array([1, 0]), (2,))
    assert math.isnan(m["recall@2"][1])
    assert mean_metrics(m)["recall@2"] == 1.0


def test_hit_matrix_and_coverage() -> None:
    truth = sp.csr_matrix(np.array([[1, 0, 0, 1], [0, 0, 1, 0]], dtype=np.float32))
    top = np.array([[3, 1, 0], [0, 1, 2]])
    assert hit_matrix(top, truth).tolist() == [[True, False, True], [False, False, True]]
    assert coverage(top, 4, 2) == 0.75  # top-2 lists {3, 1} and {0, 1} cover 3 of 4 items
    # fewer ranked items than K: the short list's empty slots hold no hits
    m = per_user_metrics(np.array([[False, True]]), np.array([1]), (1, 5))
    assert m["recall@5"][0] == 1.0 and m["precision@5"][0] == 0.2 and m["hit@1"][0] == 0.0
