"""Attention of the packed prefix-tree pass without the masked-out blocks (modalrec.llm.tree_attention)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from modalrec.llm import tree_attention
from modalrec.llm.scoring import PrefixTree
from modalrec.llm.tree_attention import TreeLayout


@pytest.mark.parametrize("heads, kv_heads", [(9, 3), (4, 4)])
def test_tree_layout_attention_equals_the_masked_sdpa(heads: int, kv_heads: int) -> None:
    """Prompt part + causal per-path part merged by log-sum-exp = one sdpa call with the 4-D tree mask."""
    g = torch.Generator().manual_seed(0)
    tails = [
        [1, 2, 3, 4],
        [1, 2, 5],
        [6, 7],
        [1, 2, 3, 4],
        [8],
        [6, 9, 9, 9, 2],
    ]  # shared starts, a duplicate
    tree = PrefixTree.build(tails)
    T, P, D = len(tree.tokens), 5, 16
    layout = TreeLayout.from_paths(tree.paths([len(t) for t in tails]), T, P)
    q = torch.randn(1, heads, T, D, generator=g)
    k = torch.randn(1, kv_heads, P + T, D, generator=g)
    v = torch.randn(1, kv_heads, P + T, D, generator=g)
    allowed = torch.cat([torch.ones((T, P), dtype=torch.bool), tree.ancestors()], dim=1)
    mask = torch.zeros((1, 1, T, P + T)).masked_fill_(~allowed, torch.finfo(torch.float32).min)
    rep = heads // kv_heads
    ref = torch.nn.functional.scaled_dot_product_attention(
        q, k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1), attn_mask=mask, scale=0.25
    )
    got = layout.attend(q, k, v, 0.25)
    assert got.shape == (1, T, heads, D)  # transformers' layout of an attention output
    torch.testing.assert_close(got, ref.transpose(1, 2), rtol=0, atol=1e-5)


def test_tree_layout_with_the_prompt_in_the_pass_equals_the_masked_sdpa() -> None:
    """One pass without a cache: the prompt causal among itself, then the tree (as prompt pass + packed pass)."""
    g = torch.Generator().manual_seed(1)
    tails = [[1, 2, 3], [1, 4], [5, 6, 7, 8]]
    tree = PrefixTree.build(tails)
    T, P, D, H, Hk = len(tree.tokens), 6, 8, 6, 2
    layout = TreeLayout.from_paths(tree.paths([3, 2, 4]), T, P, with_prompt=True)
    q = torch.randn(1, H, P + T, D, generator=g)
    k = torch.randn(1, Hk, P + T, D, generator=g)
    v = torch.randn(1, Hk, P + T, D, generator=g)
    allowed = torch.zeros((P + T, P + T), dtype=torch.bool)
    allowed[:P, :P] = torch.ones((P, P), dtype=torch.bool).tril()
    allowed[P:, :P] = True
    allowed[P:, P:] = tree.ancestors()
    mask = torch.zeros((1, 1, P + T, P + T)).masked_fill_(~allowed, torch.finfo(torch.float32).min)
    ref = torch.nn.functional.scaled_dot_product_attention(
        q, k.repeat_interleave(3, 1), v.repeat_interleave(3, 1), attn_mask=mask, scale=0.3
    )
    torch.testing.assert_close(layout.attend(q, k, v, 0.3), ref.transpose(1, 2), rtol=0, atol=1e-5)


def test_tree_layout_paths_and_owners() -> None:
    tree = PrefixTree.build([[5, 6, 7], [5, 6, 8], [4, 3], [2]])
    assert tree.paths([3, 3, 2, 1]) == [[0, 1], [0, 1], [2]]
    layout = TreeLayout.from_paths(tree.paths([3, 3, 2, 1]), len(tree.tokens), prefix_len=3)
    assert layout.paths.tolist() == [[0, 1], [0, 1], [2, 2]]  # padded at the end with the last node
    assert layout.owner_b.tolist() == [0, 0, 2] and layout.owner_i.tolist() == [0, 1, 0]


@pytest.mark.slow
def test_scores_with_and_without_tree_attention_agree(llm32, monkeypatch) -> None:
    """The packed pass through the tree attention = through sdpa's 4-D mask; the model's setting is restored."""
    from modalrec.llm.scoring import continuation_logprobs, naive_continuation_logprobs

    prompt = llm32.encode(
        "A list of movies that a user liked:\n- Heat (1995)\nAnother movie this user liked:"
    )
    texts = (" The Game (1997)\n", " The Devil's Own (1997)\n", " Heat (1995), Action, Crime\n", " X\n")
    cands = [llm32.encode(t) for t in texts]
    assert llm32.model.config._attn_implementation == "sdpa"
    fast = continuation_logprobs(llm32, prompt, cands).logprob
    assert llm32.model.config._attn_implementation == "sdpa"  # switched for the pass only
    monkeypatch.setattr(tree_attention, "_registered", False)  # as if it could not be registered
    masked = continuation_logprobs(llm32, prompt, cands).logprob
    np.testing.assert_allclose(fast, masked, rtol=0, atol=1e-4)  # float32 rounding over 30 layers
    # several passes after the prompt's cached pass (at most 2 candidates each) instead of one pass: the same
    monkeypatch.undo()
    chunked = continuation_logprobs(llm32, prompt, cands, batch_size=2).logprob
    np.testing.assert_allclose(chunked, fast, rtol=0, atol=1e-4)
    np.testing.assert_allclose(fast, naive_continuation_logprobs(llm32, prompt, cands), rtol=0, atol=1e-4)
