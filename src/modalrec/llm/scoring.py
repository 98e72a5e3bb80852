"""Log-likelihood of several continuations of one prompt: the prompt once, the candidates packed in one pass.

Why this shape: re-ranking asks "how likely is each candidate's text after this user's history?" for
20 or so candidates that share the same (long) prompt. Running prompt + candidate 20 times would
recompute the prompt 20 times; instead the prompt runs once and keeps its key/value cache, and the
candidates run after it as **one packed sequence** (no padding): each candidate's tokens sit at the
positions right after the prompt and a 4-D attention mask lets a token see the prompt and the earlier
tokens of its own candidate only. A token's hidden state is then exactly what it would be in
``prompt + candidate`` alone, so the scores equal one pass per candidate (to float32 rounding), and
the cost is the number of real tokens: on ML-100K prompts (~100 tokens, 20 candidates of 9-24
tokens, ~300 in all) a right-padded batch over a repeated cache computed ~480 candidate positions,
the packed pass ~300 (CPU time 2.66 s -> 1.93 s per user at 1 thread, same scores to 5e-5); a
candidate's last token is not run at all (its output would predict past the candidate), 20 positions
fewer. The vocabulary projection runs at the positions that predict a candidate token only. Models whose
attention takes no custom mask (not ``sdpa``/``eager``) use the padded batch
(:func:`padded_continuation_logprobs`). No text is generated, so the result is deterministic.

Work that changes no score (issue 19's p95 < 1 s at 2 threads; CPU per ML-100K user at 1 thread, paired
with the code before, 6-10 users: -12%): prompt and candidates run as one pass when they fit in one
(no cache, one set of per-layer overheads, larger matrix products); candidates that begin with the
same tokens (" The ...") run those positions once (:class:`PrefixTree`; 1-6 of ~300 positions per
user); with ``sdpa`` the attention skips the masked-out blocks (:mod:`modalrec.llm.tree_attention`); the prompt's last
position joins the pass's vocabulary projection (one matrix product instead of an extra
matrix-vector product over the 49k x 576 weights); the logits go into a reused buffer and the
log-softmax runs in place (a fresh 60 MB tensor page-faults on every call: :func:`vocab_logprobs`).
The matrix products (~100 GFLOP per user) already run near the cores' peak and are unchanged.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from modalrec.llm.tree_attention import LAYOUT_KWARG, TreeLayout, tree_attention

if TYPE_CHECKING:
    from modalrec.llm.loading import LLM

#: attention implementations that take a custom 4-D float mask (packed scoring needs one)
PACKABLE_ATTENTION = ("sdpa", "eager")


@dataclass
class ContinuationScores:
    """Per candidate: summed log-probability of its tokens and the token count."""

    logprob: np.ndarray  # float64 [N]
    n_tokens: np.ndarray  # int64 [N]

    @property
    def mean(self) -> np.ndarray:
        """Length-normalised log-likelihood (per token)."""
        return self.logprob / np.maximum(self.n_tokens, 1)


def continuation_logprobs(
    llm: LLM,
    prompt_ids: list[int],
    continuations: list[list[int]],
    *,
    batch_size: int = 64,
    pack_tokens: int = 2048,
) -> ContinuationScores:
    """Sum of ``log p(continuation | prompt)`` for each token-id continuation.

    Continuations are packed without padding into passes of at most ``batch_size`` continuations
    and ``pack_tokens`` tokens. When they fit in one (a typical 20-candidate re-ranking), prompt and
    candidates run as **one** pass (:func:`single_pass_logprobs`); otherwise the prompt runs once and
    its KV cache serves each packed pass (the mask of a pass is ``tokens x (prompt + tokens)``). The
    vocabulary projection of a pass also gives the first tokens' log-probabilities (the prompt's last row).
    """
    import torch

    n = _check_inputs(prompt_ids, continuations)
    out_lp = np.zeros(n, dtype=np.float64)
    out_n = np.array([len(c) for c in continuations], dtype=np.int64)
    split = _decoder_and_head(llm.model)
    if n == 0:
        return ContinuationScores(out_lp, out_n)
    if split is None or not packable(llm.model):
        return padded_continuation_logprobs(llm, prompt_ids, continuations, batch_size=batch_size)
    with torch.inference_mode():
        chunks = pack_chunks(out_n, batch_size, pack_tokens)
        cache, last = prompt_pass(split, prompt_ids) if len(chunks) > 1 else (None, None)
        for chunk in chunks:
            tails = [continuations[i] for i in chunk]
            if cache is None:  # one pass for prompt and candidates
                lp = single_pass_logprobs(split, prompt_ids, tails)
            else:  # several passes after the prompt's cached pass
                lp = packed_token_logprobs(
                    split, _copy_cache(cache), len(prompt_ids), None, tails, prefix_hidden=last
                )
            seg = torch.repeat_interleave(torch.arange(len(tails)), torch.tensor([len(t) for t in tails]))
            sums = torch.zeros(len(tails), dtype=torch.float64).index_add_(0, seg, lp)
            out_lp[chunk] = sums.numpy()
    return ContinuationScores(out_lp, out_n)


def _check_inputs(prompt_ids: list[int], continuations: list[list[int]]) -> int:
    if not prompt_ids:
        raise ValueError("the prompt must have at least one token")
    if any(len(c) == 0 for c in continuations):
        raise ValueError("every continuation needs at least one token")
    return len(continuations)


def packable(model: Any) -> bool:
    """True when the model's attention takes a custom 4-D mask (packed scoring)."""
    impl = getattr(getattr(model, "config", None), "_attn_implementation", None)
    return impl in PACKABLE_ATTENTION


def pack_chunks(lengths: np.ndarray, batch_size: int, pack_tokens: int) -> list[np.ndarray]:
    """Consecutive index groups of at most ``batch_size`` items and ``pack_tokens`` summed length.

    An item longer than ``pack_tokens`` gets a group of its own.

    >>> [c.tolist() for c in pack_chunks(np.array([3, 3, 3, 5]), batch_size=64, pack_tokens=6)]
    [[0, 1], [2], [3]]
    """
    out: list[np.ndarray] = []
    cur: list[int] = []
    size = 0
    for i, n in enumerate(np.asarray(lengths, dtype=np.int64).tolist()):
        if cur and (len(cur) >= batch_size or size + n > pack_tokens):
            out.append(np.array(cur, dtype=np.int64))
            cur, size = [], 0
        cur.append(i)
        size += n
    if cur:
        out.append(np.array(cur, dtype=np.int64))
    return out


def prompt_pass(split: tuple[Any, Any], prompt_ids: list[int]) -> tuple[Any, Any]:
    """The prompt through the decoder once: (its key/value cache, the last position's hidden state ``[1, d]``).

    The packed pass projects that hidden state onto the vocabulary together with its own rows
    (:func:`packed_token_logprobs` ``prefix_hidden``): one matrix product instead of a separate
    matrix-vector product that reads the whole 49k x 576 projection for one row (~16 ms at 2 threads).
    """
    import torch

    first = split[0](input_ids=torch.tensor([prompt_ids], dtype=torch.long), use_cache=True)
    return _output_cache(first), first.last_hidden_state[0, -1:]


def prefix_pass(split: tuple[Any, Any], prompt_ids: list[int]) -> tuple[Any, Any]:
    """The prompt through the decoder once: (its key/value cache, log-probabilities of the next token).

    Only the last position goes through the vocabulary projection (measured 0.25 s vs 0.48 s
    through the ``*ForCausalLM`` wrapper for a 162-token prompt, bfloat16, 1 thread).
    """
    import torch

    cache, last = prompt_pass(split, prompt_ids)
    return cache, torch.log_softmax(split[1](last).float(), dim=-1)[0]


def packed_token_logprobs(
    split: tuple[Any, Any],
    cache: Any,
    prefix_len: int,
    first_lp: Any,
    tails: list[list[int]],
    *,
    prefix_hidden: Any = None,
) -> Any:
    """``log p`` of every token of every tail after a cached prefix, in one packed pass (float64 ``[T]``).

    ``cache`` holds the prefix (batch 1, ``prefix_len`` positions) and is extended by the pass;
    each tail's first token is scored by ``first_lp`` (the next-token log-probabilities after the
    prefix) or, when ``first_lp`` is None, from ``prefix_hidden`` (the prefix's last hidden state,
    ``[1, d]``) in the same vocabulary projection as the pass's own rows.
    The tails' inputs (each tail but its last token, whose own output would predict past the tail)
    run as one sequence of :class:`PrefixTree` nodes: tails that begin with the same tokens (" The",
    " The Devil's") share those positions, because a token's hidden state depends only on the
    prefix and the tokens before it. A node at depth ``d`` gets position ``prefix_len + d`` and
    attends to the prefix and to its own ancestors only, so every tail's tokens see exactly what
    they would see in ``prefix + tail`` alone; the output at a node gives ``log p`` of the next
    token of each tail through it.
    """
    import torch

    head = split[1]
    flat = torch.tensor([x for t in tails for x in t], dtype=torch.long)
    lens = [len(t) for t in tails]
    tree = PrefixTree.build(tails)
    T = len(tree.tokens)
    first = torch.zeros(len(flat), dtype=torch.bool)
    first[torch.cumsum(torch.tensor(lens), 0) - torch.tensor(lens)] = True  # each tail's first token
    hidden = tree_pass(split[0], cache, int(prefix_len), tree, lens) if T else None
    if first_lp is None:  # the prefix's row joins the pass's rows: one projection
        rows = torch.full((len(flat),), T, dtype=torch.long)
        rows[~first] = torch.tensor(tree.rows, dtype=torch.long)
        both = prefix_hidden if hidden is None else torch.cat([hidden, prefix_hidden.to(hidden.dtype)])
        return vocab_logprobs(head, both, rows, flat).double()
    lp = first_lp[flat].double()
    if hidden is not None:
        rows = torch.tensor(tree.rows, dtype=torch.long)
        lp[~first] = vocab_logprobs(head, hidden, rows, flat[~first]).double()
    return lp


def single_pass_logprobs(split: tuple[Any, Any], prompt_ids: list[int], tails: list[list[int]]) -> Any:
    """:func:`packed_token_logprobs` with the prompt in the same pass (no cache): float64 ``[sum of tail lengths]``.

    Why: the prompt alone (~96 positions) makes small matrix products that two threads share
    less well than the ~380 positions of prompt and candidates together, and a second pass costs
    its own per-layer overhead. The prompt's positions attend causally among themselves, each tree
    node to the prompt and its ancestors (the same mask as prompt pass + packed pass), so the
    values are the same.
    """
    hidden, rows, flat = single_pass_hidden(split[0], prompt_ids, tails)
    return vocab_logprobs(split[1], hidden, rows, flat).double()  # projects only the rows used


def single_pass_hidden(decoder: Any, prompt_ids: list[int], tails: list[list[int]]) -> tuple[Any, Any, Any]:
    """One decoder pass over the prompt and the tails' :class:`PrefixTree` nodes.

    Returns the hidden states ``[P + T, d]`` (the prompt's ``P`` positions, then the nodes), and for
    each token of the tails (concatenated, ``flat``) the row whose output predicts it: ``P - 1`` for
    a tail's first token, ``P + node`` for the others. ``llm-serve`` also projects the prompt's own
    rows (it returns every prompt token's log-probability).
    """
    import torch

    flat = torch.tensor([x for t in tails for x in t], dtype=torch.long)
    lens = [len(t) for t in tails]
    tree = PrefixTree.build(tails)
    T, P = len(tree.tokens), len(prompt_ids)
    allowed = torch.zeros((P + T, P + T), dtype=torch.bool)
    allowed[:P, :P] = torch.ones((P, P), dtype=torch.bool).tril()
    allowed[P:, :P] = True
    allowed[P:, P:] = tree.ancestors()
    ids = torch.tensor([*prompt_ids, *tree.tokens], dtype=torch.long)
    pos = torch.cat([torch.arange(P), P + torch.tensor(tree.depth, dtype=torch.long)])
    kw: dict[str, Any] = {}
    with tree_attention(decoder) as fast:
        if fast and T:
            kw[LAYOUT_KWARG] = TreeLayout.from_paths(tree.paths(lens), T, P, with_prompt=True)
        mask = _float_mask(allowed, decoder.get_input_embeddings().weight.dtype)
        out = decoder(input_ids=ids[None], attention_mask=mask, position_ids=pos[None], use_cache=False, **kw)
    first = torch.zeros(len(flat), dtype=torch.bool)
    first[torch.cumsum(torch.tensor(lens), 0) - torch.tensor(lens)] = True  # scored by the prompt's last row
    rows = torch.full((len(flat),), P - 1, dtype=torch.long)
    rows[~first] = P + torch.tensor(tree.rows, dtype=torch.long)
    return out.last_hidden_state[0], rows, flat


def _float_mask(allowed: Any, dtype: Any) -> Any:
    """A ``[1, 1, Q, K]`` additive mask: 0 where ``allowed``, the dtype's minimum elsewhere."""
    import torch

    return torch.zeros((1, 1, *allowed.shape), dtype=dtype).masked_fill_(
        ~allowed[None, None], torch.finfo(dtype).min
    )


def tree_pass(decoder: Any, cache: Any, prefix_len: int, tree: PrefixTree, lengths: list[int]) -> Any:
    """The hidden states ``[T, d]`` of ``tree``'s nodes after the cached prefix (which the pass extends).

    A 4-D mask lets each node see the prefix and its ancestors; with ``sdpa`` the attention runs
    without the masked-out blocks instead (:mod:`modalrec.llm.tree_attention`, same values).
    """
    import torch

    T, P = len(tree.tokens), prefix_len
    allowed = torch.cat([torch.ones((T, P), dtype=torch.bool), tree.ancestors()], dim=1)
    mask = _float_mask(allowed, decoder.get_input_embeddings().weight.dtype)
    ids = torch.tensor(tree.tokens, dtype=torch.long)
    pos = P + torch.tensor(tree.depth, dtype=torch.long)
    kw: dict[str, Any] = {_cache_keyword(decoder): cache}
    with tree_attention(decoder) as fast:
        if fast:
            kw[LAYOUT_KWARG] = TreeLayout.from_paths(tree.paths(lengths), T, P)
        out = decoder(input_ids=ids[None], attention_mask=mask, position_ids=pos[None], use_cache=True, **kw)
    return out.last_hidden_state[0]


@dataclass
class PrefixTree:
    """The inputs of several tails after one prefix, with shared leading tokens run once.

    ``tokens[i]`` is node ``i``'s input token, ``parent[i]`` its parent node (-1: it follows the
    prefix), ``depth[i]`` its distance from the prefix; parents come before children. ``rows`` has
    one entry per token that is not a tail's first, in the tails' order: the node whose output
    predicts it. A tail's last token is never an input (nothing after it is scored).

    >>> t = PrefixTree.build([[5, 6, 7], [5, 6, 8], [5, 9], [4]])
    >>> t.tokens, t.parent, t.depth, t.rows
    ([5, 6], [-1, 0], [0, 1], [0, 1, 0, 1, 0])
    """

    tokens: list[int]
    parent: list[int]
    depth: list[int]
    rows: list[int]

    @classmethod
    def build(cls, tails: list[list[int]]) -> PrefixTree:
        """The tree of ``tails`` (each a non-empty token-id list)."""
        tree = cls([], [], [], [])
        index: dict[tuple[int, int], int] = {}
        for tail in tails:
            node = -1
            for j, x in enumerate(tail[:-1]):
                nxt = index.get((node, x))
                if nxt is None:
                    nxt = index[(node, x)] = len(tree.tokens)
                    tree.tokens.append(int(x))
                    tree.parent.append(node)
                    tree.depth.append(j)
                node = nxt
                tree.rows.append(node)
        return tree

    def paths(self, lengths: list[int]) -> list[list[int]]:
        """Each tail's input nodes from the prefix on (tails of the given token counts; one-token tails have none)."""
        out, at = [], 0
        for n in lengths:
            if n > 1:
                out.append(self.rows[at : at + n - 1])
            at += n - 1
        return out

    def ancestors(self) -> Any:
        """``[T, T]`` bool: ``[i, k]`` is True when node ``k`` is node ``i`` or one of its ancestors.

        >>> PrefixTree.build([[5, 6, 7], [4, 3]]).ancestors().int().tolist()
        [[1, 0, 0], [1, 1, 0], [0, 0, 1]]
        """
        import torch

        T = len(self.tokens)
        parent = torch.tensor([*self.parent, -1], dtype=torch.long)  # index -1 -> the sentinel -1
        out = torch.zeros((T, T), dtype=torch.bool)
        node, cur = torch.arange(T), torch.arange(T)
        while len(node):
            out[node, cur] = True
            cur = parent[cur]
            keep = cur >= 0
            node, cur = node[keep], cur[keep]
        return out


#: at most this many rows of logits are held at once (``rows x vocabulary`` float32: 75 MB for 49k words)
HEAD_ROWS = 384
_scratch = threading.local()


def vocab_logprobs(head: Any, hidden: Any, rows: Any, targets: Any) -> Any:
    """``log p(targets[i])`` under the vocabulary projection of ``hidden[rows[i]]`` (float32 ``[N]``).

    Why a reused buffer: the logits of ~300 positions over a 49k-word vocabulary are ~60 MB, and a
    fresh tensor that large is a fresh ``mmap`` whose ~15k pages fault and get zeroed on every call
    (so is ``log_softmax``'s output): ~56 ms of CPU per re-ranked user at 1 thread, measured. The
    projection writes into a per-thread buffer (up to :data:`HEAD_ROWS` rows) and the log-softmax
    runs in place; the values are the same as ``log_softmax(head(hidden))``. Heads that are not a
    plain float32 ``Linear`` without bias go through ``head(...)``.
    """
    import torch

    w = head.weight if type(head) is torch.nn.Linear and head.bias is None else None
    if w is None or w.dtype != torch.float32:
        tok = torch.log_softmax(head(hidden[rows]).float(), dim=-1)
        return tok.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    used = torch.unique(rows)  # the rows some target needs (all of them for packed tails)
    where = torch.searchsorted(used, rows)
    out = torch.empty(len(rows), dtype=torch.float32)
    for s in range(0, len(used), HEAD_ROWS):
        part = used[s : s + HEAD_ROWS]
        logits = _logit_buffer(len(part), w.shape[0])
        torch.mm(hidden[part], w.t(), out=logits)
        torch.log_softmax(logits, dim=-1, out=logits)
        sel = (where >= s) & (where < s + len(part))
        out[sel] = logits[where[sel] - s, targets[sel]]
    return out


def _logit_buffer(n: int, vocab: int) -> Any:
    """An ``[n, vocab]`` float32 view of this thread's reused logits buffer (grown when needed)."""
    import torch

    buf = getattr(_scratch, "logits", None)
    if buf is None or buf.shape[1] != vocab or buf.shape[0] < n:
        buf = torch.empty((max(n, 1), vocab), dtype=torch.float32)
        _scratch.logits = buf
    return buf[:n]


def padded_continuation_logprobs(
    llm: LLM,
    prompt_ids: list[int],
    continuations: list[list[int]],
    *,
    batch_size: int = 64,
) -> ContinuationScores:
    """:func:`continuation_logprobs` as a right-padded batch over a repeated prompt cache.

    The path for models whose attention takes no custom mask (and the reference the packed path was
    measured against): each batch repeats the prompt's cache ``B`` times and pads the
    continuations to the longest, so it computes ``B x longest`` positions instead of the real tokens.
    """
    import torch

    n = _check_inputs(prompt_ids, continuations)
    out_lp = np.zeros(n, dtype=np.float64)
    out_n = np.array([len(c) for c in continuations], dtype=np.int64)
    if n == 0:
        return ContinuationScores(out_lp, out_n)
    model = llm.model
    pad = int(llm.tokenizer.pad_token_id or 0)
    P = len(prompt_ids)
    split = _decoder_and_head(model)
    with torch.inference_mode():
        if split is not None:
            base_cache, first_lp = prefix_pass(split, prompt_ids)
        else:
            prompt = torch.tensor([prompt_ids], dtype=torch.long)
            first = model(input_ids=prompt, use_cache=True, **_last_logit_only(model))
            first_lp = torch.log_softmax(first.logits[0, -1].float(), dim=-1)
            base_cache = _output_cache(first)
        # longest first, so that each batch holds similar lengths (less padding); results go back
        # to the caller's order through ``order``
        order = np.argsort([-len(c) for c in continuations], kind="stable")
        for start in range(0, n, batch_size):
            sel = order[start : start + batch_size]
            chunk = [continuations[i] for i in sel]
            ids, mask = pad_right(chunk, pad)
            lp = first_lp[ids[:, 0]].double()
            if ids.shape[1] > 1:
                lp = lp + continued_logprobs(model, _repeat_cache(base_cache, len(chunk)), ids, mask, P)
            out_lp[sel] = lp.numpy()
    return ContinuationScores(out_lp, out_n)


def differentiable_logprobs(llm: LLM, prompt_ids: list[int], continuations: list[list[int]]) -> Any:
    """Summed ``log p(continuation | prompt)`` per continuation as a float64 torch tensor with gradients.

    The same computation as :func:`continuation_logprobs` (prompt once, its key/value cache
    repeated for the batch) but outside ``inference_mode`` and in one batch, so that a loss on the
    scores can be backpropagated into the model (LoRA training of the re-ranker).
    """
    import torch

    if not prompt_ids or not continuations or any(not c for c in continuations):
        raise ValueError("a non-empty prompt and non-empty continuations are needed")
    model = llm.model
    split = _decoder_and_head(model)
    prompt = torch.tensor([prompt_ids], dtype=torch.long)
    if split is not None:
        first = split[0](input_ids=prompt, use_cache=True)
        first_logits = split[1](first.last_hidden_state[0, -1])
    else:
        first = model(input_ids=prompt, use_cache=True)
        first_logits = first.logits[0, -1]
    first_lp = torch.log_softmax(first_logits.float(), dim=-1)
    cache = _output_cache(first)
    ids, mask = pad_right(continuations, int(llm.tokenizer.pad_token_id or 0))
    if len(continuations) > 1:
        cache.batch_repeat_interleave(len(continuations))  # type: ignore[attr-defined]
    lp = first_lp[ids[:, 0]].double()
    if ids.shape[1] > 1:
        lp = lp + continued_logprobs(model, cache, ids, mask, len(prompt_ids))
    return lp


def continued_logprobs(model: Any, cache: Any, ids: Any, mask: Any, prefix_len: int) -> Any:
    """Summed ``log p(ids[b, t] | prefix, ids[b, :t])`` over t >= 1 and real tokens, float64 ``[B]``.

    ``cache`` holds the prefix (``prefix_len`` positions) once per row of ``ids`` (right-padded,
    ``mask`` 1 on real tokens); the first token's probability comes from the prefix pass and is
    the caller's. When the model splits into decoder + vocabulary projection, the projection and
    log-softmax run at the real positions only: over 49k words they are a large share of the cost,
    and a right-padded batch of titles is often a third padding.
    """
    import torch

    B, L = ids.shape
    split = _decoder_and_head(model)
    attn = torch.cat([torch.ones((B, prefix_len), dtype=torch.long), mask], dim=1)
    pos = torch.arange(prefix_len, prefix_len + L, dtype=torch.long).unsqueeze(0).expand(B, L)
    step = split[0] if split is not None else model
    kw = {"attention_mask": attn, "position_ids": pos, "use_cache": True, _cache_keyword(step): cache}
    if split is not None:
        hidden = split[0](input_ids=ids, **kw).last_hidden_state[:, :-1]
        keep = mask[:, 1:].bool()
        tok = torch.log_softmax(split[1](hidden[keep]).float(), dim=-1)
        tok = tok.gather(-1, ids[:, 1:][keep].unsqueeze(-1)).squeeze(-1)
        rows = torch.arange(B).unsqueeze(1).expand(B, L - 1)[keep]
        return torch.zeros(B, dtype=torch.float64).index_add_(0, rows, tok.double())
    logits = model(input_ids=ids, **kw).logits[:, :-1].float()
    tok = torch.log_softmax(logits, dim=-1).gather(-1, ids[:, 1:].unsqueeze(-1)).squeeze(-1)
    return (tok.double() * mask[:, 1:].double()).sum(dim=1)


def pad_right(seqs: list[list[int]], pad: int) -> tuple[Any, Any]:
    """Token-id lists as a right-padded ``[B, L]`` id tensor and its 0/1 mask (``L`` = longest).

    >>> ids, mask = pad_right([[5, 6, 7], [8]], pad=0)
    >>> ids.tolist(), mask.tolist()
    ([[5, 6, 7], [8, 0, 0]], [[1, 1, 1], [1, 0, 0]])
    """
    import torch

    L = max(len(t) for t in seqs)
    ids = torch.full((len(seqs), L), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), L), dtype=torch.long)
    for b, t in enumerate(seqs):
        ids[b, : len(t)] = torch.tensor(t, dtype=torch.long)
        mask[b, : len(t)] = 1
    return ids, mask


def _decoder_and_head(model: Any) -> tuple[Any, Any] | None:
    """(decoder, vocabulary projection) of a transformers causal LM, or None if it is not split so.

    ``*ForCausalLM`` models hold their decoder stack as ``base_model`` (returning
    ``last_hidden_state`` after the final norm) and the projection as the output embeddings.
    """
    decoder = getattr(model, "base_model", None)
    get_head = getattr(model, "get_output_embeddings", None)
    head = get_head() if callable(get_head) else None
    if decoder is None or decoder is model or head is None:
        return None
    return decoder, head


def _cache_keyword(model: object) -> str:
    """``cache`` in transformers >= 5.2x, ``past_key_values`` before (the old name is deprecated)."""
    import inspect

    params = inspect.signature(model.forward).parameters  # type: ignore[attr-defined]
    return "cache" if "cache" in params else "past_key_values"


def _last_logit_only(model: object) -> dict[str, int]:
    """Ask for the last position's logits only (saves the vocabulary projection of the prompt)."""
    import inspect

    params = inspect.signature(model.forward).parameters  # type: ignore[attr-defined]
    for name in ("logits_to_keep", "num_logits_to_keep"):
        if name in params:
            return {name: 1}
    return {}


def _output_cache(out: object) -> object:
    c = getattr(out, "cache", None)
    return c if c is not None else out.past_key_values  # type: ignore[attr-defined]


def _copy_cache(cache: object) -> object:
    """A copy of a batch-1 KV cache that a pass may extend (the original serves the next chunk)."""
    import copy

    return copy.deepcopy(cache)


def _repeat_cache(cache: object, batch: int) -> object:
    """A batch-``batch`` copy of a batch-1 KV cache (the original stays untouched for the next chunk)."""
    import copy

    c = copy.deepcopy(cache)
    if batch > 1:
        c.batch_repeat_interleave(batch)  # type: ignore[attr-defined]
    return c


def naive_continuation_logprobs(
    llm: LLM, prompt_ids: list[int], continuations: list[list[int]]
) -> np.ndarray:
    """Reference implementation: one full forward pass per candidate (slow; for tests only)."""
    import torch

    out = np.zeros(len(continuations), dtype=np.float64)
    with torch.inference_mode():
        for i, c in enumerate(continuations):
            ids = torch.tensor([prompt_ids + c], dtype=torch.long)
            logits = llm.model(input_ids=ids).logits[0].float()
            lp = torch.log_softmax(logits[len(prompt_ids) - 1 : -1], dim=-1)
            out[i] = float(lp.gather(-1, torch.tensor(c).unsqueeze(-1)).sum())
    return out
