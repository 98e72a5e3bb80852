"""Log-likelihood of several continuations of one prompt, in one batched pass over the candidates.

Why this shape: re-ranking asks "how likely is each candidate's text after this user's history?" for
20 or so candidates that share the same (long) prompt. Running prompt + candidate 20 times would
recompute the prompt 20 times; instead the prompt is run once, its key/value cache is repeated
across the batch, and all candidates are scored as one right-padded continuation batch. No text is
generated, so the result is deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from modalrec.llm.loading import LLM


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
) -> ContinuationScores:
    """Sum of ``log p(continuation | prompt)`` for each token-id continuation.

    The prompt is encoded once (its KV cache is reused); continuations are scored in batches of
    ``batch_size`` with one forward pass per batch (one pass in total for a typical 20-candidate
    re-ranking).
    """
    import torch

    if not prompt_ids:
        raise ValueError("the prompt must have at least one token")
    n = len(continuations)
    out_lp = np.zeros(n, dtype=np.float64)
    out_n = np.array([len(c) for c in continuations], dtype=np.int64)
    if n == 0:
        return ContinuationScores(out_lp, out_n)
    if (out_n == 0).any():
        raise ValueError("every continuation needs at least one token")
    model = llm.model
    pad = int(llm.tokenizer.pad_token_id or 0)
    P = len(prompt_ids)
    with torch.inference_mode():
        first = model(
            input_ids=torch.tensor([prompt_ids], dtype=torch.long), use_cache=True, **_last_logit_only(model)
        )
        first_lp = torch.log_softmax(first.logits[0, -1].float(), dim=-1)
        base_cache = _output_cache(first)
        cache_kw = _cache_keyword(model)
        for start in range(0, n, batch_size):
            chunk = continuations[start : start + batch_size]
            B = len(chunk)
            L = max(len(c) for c in chunk)
            ids = torch.full((B, L), pad, dtype=torch.long)
            mask = torch.zeros((B, L), dtype=torch.long)
            for b, c in enumerate(chunk):
                ids[b, : len(c)] = torch.tensor(c, dtype=torch.long)
                mask[b, : len(c)] = 1
            lp = first_lp[ids[:, 0]].double()
            if L > 1:
                cache = _repeat_cache(base_cache, B)
                attn = torch.cat([torch.ones((B, P), dtype=torch.long), mask], dim=1)
                pos = torch.arange(P, P + L, dtype=torch.long).unsqueeze(0).expand(B, L)
                res = model(
                    input_ids=ids, attention_mask=attn, position_ids=pos, use_cache=True, **{cache_kw: cache}
                )
                logits = res.logits[:, :-1].float()
                tgt = ids[:, 1:]
                tok_lp = torch.log_softmax(logits, dim=-1).gather(-1, tgt.unsqueeze(-1)).squeeze(-1)
                lp = lp + (tok_lp.double() * mask[:, 1:].double()).sum(dim=1)
            out_lp[start : start + B] = lp.numpy()
    return ContinuationScores(out_lp, out_n)


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
