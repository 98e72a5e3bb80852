"""exact_topk: the block top-k gives torch.topk's output, values and indices, on every kind of row."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from modalrec.core import ranking
from modalrec.core.ranking import exact_topk, topk_scores


def _same_as_torch(s: torch.Tensor, k: int, **kw: int) -> tuple[torch.Tensor, torch.Tensor]:
    val, idx = exact_topk(s, k, **kw)
    ref_val, ref_idx = torch.topk(s, k, dim=1, largest=True, sorted=True)
    assert torch.equal(idx, ref_idx)
    assert torch.equal(val, ref_val) or torch.equal(torch.isnan(val), torch.isnan(ref_val))
    return val, idx


@pytest.mark.parametrize("n", [1_000, 4_096, 5_003, 40_000])
@pytest.mark.parametrize("k", [1, 10, 50])
def test_distinct_scores_give_torch_topk(n: int, k: int, monkeypatch: pytest.MonkeyPatch) -> None:
    s = torch.from_numpy(np.random.default_rng(n + k).standard_normal((37, n)).astype(np.float32))
    widths: list[int] = []
    real_topk = torch.topk

    def spy(t: torch.Tensor, *a: object, **kw: object) -> object:
        widths.append(t.shape[1])
        return real_topk(t, *a, **kw)

    monkeypatch.setattr(ranking.torch, "topk", spy)
    val, idx = exact_topk(s, k, min_items=1)
    monkeypatch.undo()
    assert n not in widths  # the block path ranked these rows, never a whole row
    assert torch.equal(idx, torch.topk(s, k).indices) and torch.equal(val, torch.topk(s, k).values)
    _same_as_torch(s, k)  # the default size threshold: torch.topk itself below it


def test_rows_with_ties_masks_and_nan_fall_back_to_torch_order() -> None:
    rng = np.random.default_rng(0)
    s = rng.standard_normal((12, 20_011)).astype(np.float32)
    s[0] = np.floor(s[0] * 2)  # few distinct values: ties everywhere (popularity-like)
    s[1, rng.choice(20_011, 20_000, replace=False)] = -np.inf  # masked: fewer finite scores than k
    s[2, 5] = np.nan  # torch ranks NaN first
    s[3, [7, 9000]] = 50.0  # a tie at the top, in different blocks
    s[4, -3:] = 60.0  # ties in the last, partial block
    s[5, 100:140] = 40.0  # the k-th value tied inside one block
    s[6] = 0.0  # one value everywhere
    s[7, :] = -np.inf
    s[8, 3] = np.inf
    s[9, [3, 4]] = np.inf
    s[10, 0] = -0.0
    s[10, 1] = 0.0
    t = torch.from_numpy(s)
    _same_as_torch(t, 50, min_items=1)
    _same_as_torch(t, 1, min_items=1)


def test_strided_and_small_inputs_and_topk_scores() -> None:
    s = torch.from_numpy(np.random.default_rng(1).random((30, 3000)).astype(np.float32))
    _same_as_torch(s.T.contiguous().T, 20, min_items=1)  # columns not contiguous: plain torch.topk
    _same_as_torch(s[:, :60], 20, min_items=1)  # too few blocks for the block path
    _same_as_torch(s[:0], 5, min_items=1)
    idx, val = topk_scores(s.numpy(), 7)
    ref = torch.topk(s, 7)
    assert idx.dtype == np.int64 and val.dtype == np.float32
    assert np.array_equal(idx, ref.indices.numpy()) and np.array_equal(val, ref.values.numpy())
