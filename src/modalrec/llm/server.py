"""``modalrec llm-serve``: an OpenAI-compatible completions server over a local causal LM.

Why: the LLM layer talks to models through :mod:`modalrec.llm.backend`; with this server one process
holds the model (the packaged SmolLM2 by default, any local directory or GGUF file) and any number of
clients (re-rankers, explainers, other languages) use it through the API that vLLM and llama.cpp's
server speak, so moving to a larger model on a GPU box is a change of URL.

Endpoints (the subset of the OpenAI API that :class:`~modalrec.llm.backend.HTTPBackend` uses):

- ``GET /v1/models``
- ``POST /v1/completions``: ``prompt`` (a string or a list), ``max_tokens`` (0 = score only),
  ``echo`` and ``logprobs`` (the log-probability of every prompt token, OpenAI's layout:
  ``tokens``, ``token_logprobs`` with ``null`` for the first token, ``text_offset``); generation is
  greedy.
- ``POST /v1/chat/completions``: ``messages``, ``max_tokens``; greedy, the model's chat template.

A list of prompts that share a token prefix (a re-ranking request: one history, 20 candidates) is
scored with the prefix run once, as in process: prefix and rests in one pass when the rests fit one
(the re-ranking case), else the rests packed after the prefix's key/value cache.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from modalrec.llm.loading import LLM


def _common_prefix(seqs: list[list[int]]) -> int:
    """Length of the longest token prefix shared by all sequences.

    >>> _common_prefix([[1, 2, 3], [1, 2, 4], [1, 2]])
    2
    """
    n = min(len(s) for s in seqs)
    for j in range(n):
        t = seqs[0][j]
        if any(s[j] != t for s in seqs):
            return j
    return n


def token_logprobs(llm: LLM, seqs: list[list[int]]) -> list[list[float | None]]:
    """``log p(token_t | tokens_<t)`` for every token of every sequence (``None`` for the first).

    The shared prefix (capped so that every sequence keeps at least one own token) runs once, as in
    process: when the rest fits one pass (a typical 20-candidate re-ranking) prefix and rests run
    together (:func:`~modalrec.llm.scoring.single_pass_hidden`), else the rests run packed after the
    prefix's key/value cache (:func:`~modalrec.llm.scoring.packed_token_logprobs`: no padding, one
    pass per 2,048 tokens).
    """
    import torch

    from modalrec.llm.scoring import _decoder_and_head, pack_chunks, packable

    split = _decoder_and_head(llm.model)
    if not seqs or split is None or any(not s for s in seqs) or not packable(llm.model):
        return [_full_logprobs(llm, s) for s in seqs]
    P = min(_common_prefix(seqs), min(len(s) for s in seqs) - 1)
    if P < 1:
        return [_full_logprobs(llm, s) for s in seqs]
    tails = [s[P:] for s in seqs]
    chunks = pack_chunks(np.array([len(t) for t in tails]), 64, 2048)
    with torch.inference_mode():
        if len(chunks) == 1:
            prefix, flat = _one_pass(split, seqs[0][:P], tails)
        else:
            prefix, flat = _cached_passes(split, seqs[0][:P], tails, chunks)
    values: list[list[float | None]] = []
    for t in tails:
        values.append(prefix + flat[: len(t)])
        flat = flat[len(t) :]
    return values


def _one_pass(
    split: tuple[Any, Any], prefix_ids: list[int], tails: list[list[int]]
) -> tuple[list[float | None], list[float | None]]:
    """(the prefix's token log-probabilities, the tails' concatenated) from one decoder pass."""
    import torch

    from modalrec.llm.scoring import single_pass_hidden, vocab_logprobs

    P = len(prefix_ids)
    hidden, rows, flat = single_pass_hidden(split[0], prefix_ids, tails)
    rows = torch.cat([torch.arange(P - 1), rows])
    targets = torch.cat([torch.tensor(prefix_ids[1:], dtype=torch.long), flat])
    lp = vocab_logprobs(split[1], hidden, rows, targets).tolist()
    return [None, *lp[: P - 1]], lp[P - 1 :]


def _cached_passes(
    split: tuple[Any, Any], prefix_ids: list[int], tails: list[list[int]], chunks: list[Any]
) -> tuple[list[float | None], list[float | None]]:
    """As :func:`_one_pass`, for tails that need several packed passes after the prefix's cache."""
    import torch

    from modalrec.llm.scoring import _copy_cache, _output_cache, packed_token_logprobs

    decoder, head = split
    P = len(prefix_ids)
    first = decoder(input_ids=torch.tensor([prefix_ids]), use_cache=True)
    lp = torch.log_softmax(head(first.last_hidden_state[0]).float(), dim=-1)
    prefix: list[float | None] = [None]
    prefix += lp[torch.arange(P - 1), torch.tensor(prefix_ids[1:], dtype=torch.long)].tolist()
    cache = _output_cache(first)
    flat: list[float | None] = []
    for chunk in chunks:  # consecutive runs of the tails, in order (pack_chunks)
        part = [tails[i] for i in chunk]
        flat += packed_token_logprobs(split, _copy_cache(cache), P, lp[P - 1], part).tolist()
    return prefix, flat


def _full_logprobs(llm: LLM, seq: list[int]) -> list[float | None]:
    import torch

    if not seq:
        return []
    with torch.inference_mode():
        logits = llm.model(input_ids=torch.tensor([seq])).logits[0].float()
        lp = torch.log_softmax(logits, dim=-1)
    return [None] + [float(lp[t - 1, seq[t]]) for t in range(1, len(seq))]


def _encode_with_offsets(llm: LLM, text: str) -> tuple[list[int], list[int], list[str]]:
    enc = llm.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = list(enc["input_ids"])
    offsets = [int(a) for a, _ in enc["offset_mapping"]]
    tokens = [str(t) for t in llm.tokenizer.convert_ids_to_tokens(ids)]
    return ids, offsets, tokens


def _greedy(llm: LLM, prompt_text: str, max_tokens: int) -> tuple[str, str]:
    """Greedy continuation of ``prompt_text``; (text, finish reason)."""
    import torch

    ids = torch.tensor([llm.encode(prompt_text)], dtype=torch.long)
    with torch.inference_mode():
        out = llm.model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=max_tokens,
            do_sample=False,
            pad_token_id=llm.tokenizer.pad_token_id,
            eos_token_id=llm.tokenizer.eos_token_id,
        )
    new = out[0, ids.shape[1] :]
    eos = llm.tokenizer.eos_token_id
    finish = "stop" if len(new) and int(new[-1]) == eos else "length"
    return str(llm.tokenizer.decode(new, skip_special_tokens=True)), finish


def complete(llm: LLM, body: dict[str, Any]) -> dict[str, Any]:
    """The ``/v1/completions`` answer for a request body (a dict parsed from JSON)."""
    from modalrec.core.errors import ConfigError

    prompts = body.get("prompt", "")
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    if not prompts or not all(isinstance(p, str) for p in prompts):
        raise ConfigError("prompt must be a string or a list of strings")
    max_tokens = int(body.get("max_tokens", 16) or 0)
    echo, want_lp = bool(body.get("echo")), body.get("logprobs") is not None
    choices: list[dict[str, Any]] = []
    if max_tokens == 0:
        enc = [_encode_with_offsets(llm, p) for p in prompts]
        lps = token_logprobs(llm, [e[0] for e in enc]) if want_lp else [[] for _ in enc]
        for i, ((_, offs, toks), lp) in enumerate(zip(enc, lps, strict=True)):
            lpd = {"tokens": toks, "token_logprobs": lp, "text_offset": offs, "top_logprobs": None}
            choices.append(
                {
                    "index": i,
                    "text": prompts[i] if echo else "",
                    "logprobs": lpd if (echo and want_lp) else None,
                    "finish_reason": "length",
                }
            )
    else:
        for i, p in enumerate(prompts):
            text, finish = _greedy(llm, p, max_tokens)
            choices.append(
                {"index": i, "text": (p if echo else "") + text, "logprobs": None, "finish_reason": finish}
            )
    return _envelope("text_completion", llm, choices)


def chat(llm: LLM, body: dict[str, Any]) -> dict[str, Any]:
    """The ``/v1/chat/completions`` answer (greedy, the model's chat template)."""
    from modalrec.core.errors import ConfigError

    msgs = body.get("messages") or []
    if not isinstance(msgs, list) or not msgs:
        raise ConfigError("messages must be a non-empty list")
    if llm.tokenizer.chat_template:
        prompt = str(llm.tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True))
    else:
        prompt = "".join(f"{m.get('content', '')}\n" for m in msgs)
    text, finish = _greedy(llm, prompt, int(body.get("max_tokens", 128) or 128))
    msg = {"role": "assistant", "content": text.strip()}
    return _envelope("chat.completion", llm, [{"index": 0, "message": msg, "finish_reason": finish}])


def _envelope(kind: str, llm: LLM, choices: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "id": f"cmpl-{time.time_ns():x}",
        "object": kind,
        "created": int(time.time()),
        "model": llm.name,
        "choices": choices,
    }


def create_app(llm: LLM) -> Any:
    """The FastAPI app over ``llm`` (one request at a time: the model is not re-entrant)."""
    import threading

    from fastapi import FastAPI, HTTPException

    from modalrec.core.errors import ModalrecError

    app = FastAPI(title="modalrec llm-serve", version="1")
    lock = threading.Lock()

    def run(fn: Any, body: dict[str, Any]) -> dict[str, Any]:
        try:
            with lock:
                return dict(fn(llm, body))
        except (ModalrecError, ValueError, TypeError) as e:
            raise HTTPException(status_code=400, detail=str(e)) from None

    @app.get("/v1/models")
    def models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": llm.name, "object": "model", "owned_by": "modalrec"}]}

    @app.post("/v1/completions")
    def completions(body: dict[str, Any]) -> dict[str, Any]:
        return run(complete, body)

    @app.post("/v1/chat/completions")
    def chat_completions(body: dict[str, Any]) -> dict[str, Any]:
        return run(chat, body)

    return app


def serve(llm: LLM, *, host: str = "127.0.0.1", port: int = 8011) -> None:
    """Run the server until interrupted."""
    import uvicorn

    uvicorn.run(create_app(llm), host=host, port=port, log_level="warning")


__all__ = ["chat", "complete", "create_app", "serve", "token_logprobs"]
