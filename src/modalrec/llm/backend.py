"""Any model behind one API: the re-ranker and the explainer talk to a backend, in process or over HTTP.

Two operations are all the LLM layer needs from a model:

- ``score(prompt, continuations)``: summed log-probability (and token count) of each continuation
  text after the prompt text. The re-ranker's scores; no text is generated, so it is deterministic.
- ``generate(message, max_new_tokens)``: a greedy answer to one chat message (the explainer).

Backends:

- :class:`LocalBackend`: a transformers causal LM in this process (:func:`~modalrec.llm.loading.load_llm`:
  the packaged SmolLM2, any local model directory or GGUF file). Prompt once, candidates as one
  batch (:func:`~modalrec.llm.scoring.continuation_logprobs`). Needed for fine-tuning and for items
  as soft tokens (``describe``), which feed embeddings rather than text.
- :class:`HTTPBackend`: an OpenAI-compatible server (vLLM, llama.cpp's ``llama-server``,
  ``modalrec llm-serve``): ``POST {url}/completions`` with ``echo: true, logprobs: 1, max_tokens: 0``
  and the prompt + continuation texts as a list; the continuation's log-probability is the sum over
  the echoed tokens that start at or after the prompt's end (``text_offset``). Generation goes to
  ``{url}/chat/completions`` with ``temperature: 0``.

The two agree when the server tokenises ``prompt + continuation`` the way the client tokenises the
two apart; for byte-level BPE tokenizers (SmolLM2, Llama, Qwen...) and prompts ending in
punctuation with continuations starting with a space, they do (tested against ``modalrec llm-serve``:
the same scores to 1e-4).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from modalrec.core.errors import ConfigError, ModalrecError
from modalrec.llm.scoring import ContinuationScores, continuation_logprobs

if TYPE_CHECKING:
    from modalrec.llm.loading import LLM


class BackendError(ModalrecError):
    """The LLM server could not be reached or answered something unusable (the message says what)."""


@runtime_checkable
class Backend(Protocol):
    """What the re-ranker and the explainer need from a language model."""

    name: str

    def score(self, prompt: str, continuations: Sequence[str]) -> ContinuationScores:
        """Summed log-probability and token count of each continuation after ``prompt``."""
        ...

    def generate(self, message: str, *, max_new_tokens: int = 60) -> str:
        """Greedy answer to one chat ``message`` (deterministic)."""
        ...


class LocalBackend:
    """A loaded in-process :class:`~modalrec.llm.loading.LLM` behind the :class:`Backend` API.

    Continuation token ids are cached by text (a catalogue's items are scored again and again).
    """

    def __init__(self, llm: LLM, *, batch_size: int = 64) -> None:
        self.llm = llm
        self.name = llm.name
        self.batch_size = int(batch_size)
        self._ids: dict[str, list[int]] = {}

    def encode(self, text: str) -> list[int]:
        ids = self._ids.get(text)
        if ids is None:
            ids = self.llm.encode(text)
            self._ids[text] = ids
        return ids

    def score(self, prompt: str, continuations: Sequence[str]) -> ContinuationScores:
        return continuation_logprobs(
            self.llm,
            self.llm.encode(prompt),
            [self.encode(c) for c in continuations],
            batch_size=self.batch_size,
        )

    def generate(self, message: str, *, max_new_tokens: int = 60) -> str:
        from modalrec.llm.explain import llm_phraser

        return llm_phraser(self.llm, max_new_tokens=max_new_tokens)(message)


class HTTPBackend:
    """An OpenAI-compatible completions server behind the :class:`Backend` API.

    Args:
        url: the API base, e.g. ``http://127.0.0.1:8011/v1``.
        model: the served model's name (sent as ``model``; servers with one model ignore it).
        timeout: seconds per request.
        api_key: sent as a bearer token when given (read from the config or ``MODALREC_LLM_API_KEY``).
        client: an ``httpx.Client`` to use (tests pass one bound to an in-process app).
    """

    def __init__(
        self,
        url: str,
        *,
        model: str = "default",
        timeout: float = 60.0,
        api_key: str | None = None,
        client: Any = None,
    ) -> None:
        import httpx

        if not url.startswith(("http://", "https://")):
            raise ConfigError(f"[llm] url {url!r} must start with http:// or https://")
        self.url = url.rstrip("/")
        self.model = model
        self.name = f"{model}@{self.url}"
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.client = client or httpx.Client(timeout=timeout, headers=headers)

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        import httpx

        try:
            r = self.client.post(f"{self.url}{path}", json={"model": self.model, **body})
        except httpx.HTTPError as e:
            raise BackendError(f"LLM server {self.url}{path} unreachable: {e}") from None
        if r.status_code != 200:
            raise BackendError(f"LLM server {self.url}{path} answered {r.status_code}: {r.text[:300]}")
        return dict(r.json())

    def score(self, prompt: str, continuations: Sequence[str]) -> ContinuationScores:
        n = len(continuations)
        if n == 0:
            return ContinuationScores(np.zeros(0), np.zeros(0, dtype=np.int64))
        body = {
            "prompt": [prompt + c for c in continuations],
            "echo": True,
            "logprobs": 1,
            "max_tokens": 0,
            "temperature": 0.0,
        }
        choices = self._post("/completions", body).get("choices") or []
        if len(choices) != n:
            raise BackendError(f"LLM server {self.url} returned {len(choices)} choices for {n} prompts")
        lp = np.zeros(n, dtype=np.float64)
        nt = np.zeros(n, dtype=np.int64)
        for ch in choices:
            i = int(ch.get("index", 0))
            lp[i], nt[i] = _tail_logprob(ch.get("logprobs") or {}, len(prompt), self.url)
        return ContinuationScores(lp, nt)

    def generate(self, message: str, *, max_new_tokens: int = 60) -> str:
        body = {
            "messages": [{"role": "user", "content": message}],
            "max_tokens": int(max_new_tokens),
            "temperature": 0.0,
        }
        choices = self._post("/chat/completions", body).get("choices") or []
        if not choices:
            raise BackendError(f"LLM server {self.url} returned no chat choice")
        return str((choices[0].get("message") or {}).get("content") or "").strip()


def _tail_logprob(logprobs: dict[str, Any], start: int, url: str) -> tuple[float, int]:
    """Sum of the echoed token log-probabilities whose text starts at or after character ``start``."""
    offsets = logprobs.get("text_offset")
    values = logprobs.get("token_logprobs")
    if offsets is None or values is None or len(offsets) != len(values):
        raise BackendError(
            f"LLM server {url} gave no echoed token log-probabilities (needs echo + logprobs support)"
        )
    tail = [float(v) for o, v in zip(offsets, values, strict=True) if int(o) >= start and v is not None]
    if not tail:
        raise BackendError(f"LLM server {url}: no token of the continuation was scored")
    return float(np.sum(tail)), len(tail)


def as_backend(model: LLM | Backend | None) -> Backend:
    """A :class:`Backend` for a loaded LLM, a backend, or None (the packaged model in process)."""
    if model is None:
        from modalrec.llm.loading import load_llm

        return LocalBackend(load_llm())
    if isinstance(model, Backend):
        return model
    return LocalBackend(model)
