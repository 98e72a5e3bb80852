"""Attention of a packed prefix-tree pass without computing the masked-out blocks.

Why: the packed pass of :func:`~modalrec.llm.scoring.packed_token_logprobs` runs ``T`` candidate
inputs (~300 for 20 ML-100K titles) after a cached prompt of ``P`` (~96) positions, and each input
may attend to the prompt and to its own ancestors only (<= 24 positions). With a 4-D mask, ``sdpa``
computes all ``T x (P + T)`` scores and throws most of the ``T x T`` block away (~8% of a re-ranking
pass at 2 threads, measured with torch.profiler). Here the same attention is two dense pieces:

- every input against the prompt's keys (``T x P``, no mask), and
- every candidate's path of inputs against itself, causal (``B x L x L`` for ``B`` paths of at most
  ``L`` inputs, padded at the end: a causal query never sees the padding after it),

merged exactly through the two log-sum-exps that the CPU flash-attention kernel returns:
``out = o1 * s + o2 * (1 - s)`` with ``s = sigmoid(lse1 - lse2)``. Same result as the masked
``sdpa`` call to float32 rounding. In the single pass of
:func:`~modalrec.llm.scoring.single_pass_logprobs` (prompt and inputs together, no cache) the prompt's
own queries are a third piece, causal over the prompt. An input shared by several paths is a query
in each (cheap) and takes its output from the first.

Used through transformers' attention registry under :data:`NAME`: for the duration of the packed
pass the model's attention implementation is switched to it; calls without a
:class:`TreeLayout` (any other forward pass, e.g. a concurrent generation) go to ``sdpa``
unchanged, and so does the packed pass itself if the implementation is switched back under it
(its 4-D mask is exact), so a race costs time, never correctness.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

#: the name registered with transformers' AttentionInterface
NAME = "modalrec_tree"
#: the keyword argument that carries the layout through the decoder to the attention function
LAYOUT_KWARG = "modalrec_tree_layout"

_lock = threading.Lock()
_registered: bool | None = None


@dataclass
class TreeLayout:
    """Where each packed input sits on each candidate's path.

    ``paths`` ``[B, L]``: the node (input) indices along candidate ``b``'s path from the prompt,
    padded at the end with its last node; ``owner_b``, ``owner_i`` ``[T]``: for each node, the
    first path holding it and its place there. ``prefix_len`` = ``P``.
    """

    paths: Any
    owner_b: Any
    owner_i: Any
    prefix_len: int
    with_prompt: bool = False

    @classmethod
    def from_paths(
        cls, paths: list[list[int]], n_nodes: int, prefix_len: int, *, with_prompt: bool = False
    ) -> TreeLayout:
        """The layout of non-empty node paths (each a root-to-node chain, parents first).

        ``with_prompt``: the queries are the prompt's ``P`` positions (causal among themselves) and
        then the nodes, in one pass without a cache; else the nodes only, after a cached prompt.
        """
        import torch

        L = max(len(p) for p in paths)
        grid = torch.tensor([p + [p[-1]] * (L - len(p)) for p in paths], dtype=torch.long)
        owner_b = torch.full((n_nodes,), -1, dtype=torch.long)
        owner_i = torch.zeros(n_nodes, dtype=torch.long)
        for b in reversed(range(len(paths))):  # the first path wins
            idx = torch.tensor(paths[b], dtype=torch.long)
            owner_b[idx] = b
            owner_i[idx] = torch.arange(len(paths[b]))
        if bool((owner_b < 0).any()):
            raise ValueError("every node must lie on some path")
        return cls(grid, owner_b, owner_i, int(prefix_len), with_prompt)

    def attend(self, query: Any, key: Any, value: Any, scale: float) -> Any:
        """Attention output ``[1, Q, H, D]`` (transformers' layout) of queries ``[1, H, Q, D]``.

        ``key``/``value`` ``[1, Hk, P + T, D]`` hold the prompt then the ``T`` inputs (the cache after
        its update, or the whole pass); ``H`` must be a multiple of ``Hk`` (grouped-query attention).
        The queries are the ``T`` inputs, or with ``with_prompt`` the prompt and then the inputs.
        """
        import torch

        P = self.prefix_len
        if not self.with_prompt:
            return self._inputs(query, key, value, scale)
        G = query.shape[1] // key.shape[1]
        kp, vp = key[:, :, :P].repeat_interleave(G, 1), value[:, :, :P].repeat_interleave(G, 1)
        flash = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
        head = flash(query[:, :, :P], kp, vp, 0.0, True, attn_mask=None, scale=scale)[0]
        rest = self._inputs(query[:, :, P:], key, value, scale)
        return torch.cat([head.transpose(1, 2).to(rest.dtype), rest], dim=1)

    def _inputs(self, query: Any, key: Any, value: Any, scale: float) -> Any:
        """:meth:`attend` for queries that are the ``T`` inputs only."""
        import torch

        flash = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
        _, H, T, D = query.shape
        Hk, P = key.shape[1], self.prefix_len
        G = H // Hk
        # 1. every input against the prompt: kv heads folded into the batch, no copy of the keys
        q1 = query.reshape(Hk, G * T, D).unsqueeze(0)
        o1, l1 = flash(q1, key[:, :, :P], value[:, :, :P], 0.0, False, attn_mask=None, scale=scale)
        o1, l1 = o1.reshape(H, T, D), l1.reshape(H, T)
        # 2. each path against itself, causal; kv heads repeated for the query heads
        B, L = self.paths.shape
        flat = self.paths.reshape(-1)
        qt = query[0].index_select(1, flat).view(H, B, L, D).transpose(0, 1)  # [B, H, L, D]
        kt = key[0].index_select(1, flat + P).view(Hk, 1, B, L, D).expand(Hk, G, B, L, D)
        vt = value[0].index_select(1, flat + P).view(Hk, 1, B, L, D).expand(Hk, G, B, L, D)
        kt, vt = kt.reshape(H, B, L, D).transpose(0, 1), vt.reshape(H, B, L, D).transpose(0, 1)
        o2, l2 = flash(qt, kt, vt, 0.0, True, attn_mask=None, scale=scale)
        own = self.owner_b * L + self.owner_i
        o2 = o2.transpose(1, 2).reshape(B * L, H, D).index_select(0, own)  # [T, H, D]
        l2 = l2.transpose(1, 2).reshape(B * L, H).index_select(0, own)  # [T, H]
        s = torch.sigmoid(l1.t() - l2).unsqueeze(-1)
        out = torch.lerp(o2.float(), o1.transpose(0, 1).float(), s)  # o1 * s + o2 * (1 - s)
        return out.unsqueeze(0).to(query.dtype)


def _attention(
    module: Any, query: Any, key: Any, value: Any, attention_mask: Any, *args: Any, **kwargs: Any
) -> tuple[Any, None]:
    """The registered attention function: the tree layout when one is passed, else ``sdpa``."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    layout = kwargs.pop(LAYOUT_KWARG, None)
    scaling = kwargs.get("scaling")
    if layout is None or scaling is None or query.shape[0] != 1 or attention_mask is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, *args, **kwargs)
    return layout.attend(query, key, value, float(scaling)), None


def available() -> bool:
    """Register the attention function once; False when this torch/transformers cannot run it."""
    global _registered
    with _lock:
        if _registered is None:
            try:
                import torch
                from transformers import AttentionInterface
                from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

                getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu")  # noqa: B009
                AttentionInterface.register(NAME, _attention)
                AttentionMaskInterface.register(NAME, sdpa_mask)
                _registered = True
            except (ImportError, AttributeError, RuntimeError):
                _registered = False
        return _registered


@contextmanager
def tree_attention(model: Any) -> Iterator[bool]:
    """Within the block, ``model`` runs its attention through :data:`NAME` (yields False if it cannot).

    Only models on ``sdpa`` switch (their other calls are delegated back to ``sdpa``); the
    implementation is restored on exit.
    """
    config = getattr(model, "config", None)
    impl = getattr(config, "_attn_implementation", None)
    if impl == NAME:  # a nested or concurrent pass already switched it
        yield True
        return
    if impl != "sdpa" or not available():
        yield False
        return
    config._attn_implementation = NAME  # type: ignore[union-attr]
    try:
        yield True
    finally:
        config._attn_implementation = impl  # type: ignore[union-attr]
