"""Recommender.score / recommend: users x items allocations are checked against the memory budget."""

from __future__ import annotations

import numpy as np
import pytest

from modalrec.core.memory import MemoryBudgetError
from modalrec.data.dataset import Dataset
from modalrec.models import create
from modalrec.models.checks import FAST_PARAMS


def test_score_refuses_above_the_budget_and_names_the_way_out(
    clustered: Dataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = create("popularity", **FAST_PARAMS["popularity"]).fit(clustered, progress=False)
    users = np.arange(clustered.n_users)
    want = model.score(users)
    monkeypatch.setenv("MODALREC_MEMORY_BUDGET", "40K")  # 120 users x 80 items x 4 B x 2 = 75 KiB
    with pytest.raises(MemoryBudgetError) as e:
        model.score(users)
    msg = str(e.value)
    assert "score() of 120 users x 80 items" in msg and "75.0 KiB" in msg and "40.0 KiB" in msg
    assert "use recommend()" in msg
    np.testing.assert_array_equal(model.score(users[:10]), want[:10])  # small calls still work


def test_recommend_sizes_chunks_from_the_budget_with_the_same_result(
    clustered: Dataset, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = create("itemknn", **FAST_PARAMS["itemknn"]).fit(clustered, progress=False)
    users = np.arange(clustered.n_users)
    idx, val = model.recommend(users, 10, exclude=clustered.train)
    monkeypatch.setenv("MODALREC_MEMORY_BUDGET", "20K")  # about 20 users' scores per chunk
    small_idx, small_val = model.recommend(users, 10, exclude=clustered.train)
    np.testing.assert_array_equal(small_idx, idx)
    np.testing.assert_array_equal(small_val, val)
    with pytest.raises(MemoryBudgetError, match="smaller chunk_size"):
        model.recommend(users, 10, chunk_size=2048)
