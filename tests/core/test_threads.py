"""torch_threads: the caller's thread setting comes back, also when the block fails."""

from __future__ import annotations

import pytest
import torch

from modalrec.core.threads import torch_threads


def test_restores_after_an_error() -> None:
    before = torch.get_num_threads()
    with pytest.raises(RuntimeError, match="boom"), torch_threads(1):
        assert torch.get_num_threads() == 1
        raise RuntimeError("boom")
    assert torch.get_num_threads() == before


@pytest.mark.parametrize("threads", [None, 0])
def test_none_or_zero_leaves_the_setting(threads: int | None) -> None:
    before = torch.get_num_threads()
    with torch_threads(threads):
        assert torch.get_num_threads() == before
    assert torch.get_num_threads() == before
