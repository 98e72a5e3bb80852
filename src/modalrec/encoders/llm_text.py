"""LLM item features: a causal LM's hidden states of an item's text as a content modality.

Why: the LLM layer's model has read far more text than MiniLM (SmolLM2-135M: 2T tokens vs MiniLM's
1B sentence pairs) and may know what a film is about from its title alone; its hidden states are a
text representation the recommenders can use like any other modality (issue 19, item 3). Whether
they beat MiniLM inside content EASE and graphmm is measured in ``benchmarks/llm_features.py``.

How: the text is tokenised (truncated to ``max_tokens``), run through the first ``layer`` decoder
layers only (a middle layer costs half a full pass), and the hidden states are mean-pooled over the
tokens and L2-normalised. Decoder-only models' middle layers are often better sentence features than
their last layer, which is shaped for predicting the next token; the benchmark's plan chooses the
layer on validation. Any local causal LM directory or GGUF file works (``model=``); the packaged
SmolLM2-135M-Instruct is the default. Weights are never fetched from a hub.
"""

from __future__ import annotations

import copy
import threading
from typing import Any

import numpy as np

from modalrec.encoders.text import _TextBase

_TRUNK_LOCK = threading.Lock()


class LLMHiddenTextEncoder(_TextBase):
    """Mean-pooled hidden states of layer ``layer`` of a local causal LM (``dim`` = its hidden size).

    Args:
        model: ``None`` for the packaged SmolLM2-135M-Instruct, or a local model directory / GGUF file.
        layer: decoder layer whose output is pooled (1..n_layers; ``-1`` = the last layer, after the
            model's final norm, as transformers reports it).
        max_tokens: texts are truncated to this many tokens (cost grows with it).
        batch_size: texts per forward pass (sorted by length inside a batch to pad little).
        threads: torch intra-op threads while encoding (``None``: leave torch's setting).

    >>> enc = LLMHiddenTextEncoder(layer=15)
    >>> enc.name, enc.dim, enc.version.split("-L")[1]
    ('llm-hidden', 576, '15-mean-t128-f32')
    """

    name = "llm-hidden"

    def __init__(
        self,
        model: str | None = None,
        layer: int = -1,
        max_tokens: int = 128,
        batch_size: int = 16,
        threads: int | None = None,
    ) -> None:
        from modalrec.core.errors import ConfigError
        from modalrec.encoders.causal_lm import hidden_size_of, model_key

        if layer == 0 or layer < -1:
            raise ConfigError(f"llm-hidden: layer must be >= 1 or -1 (the last), not {layer}")
        self.model = model
        self.layer = int(layer)
        self.max_tokens = int(max_tokens)
        self.batch_size = int(batch_size)
        self.threads = threads
        self.dim = hidden_size_of(model)
        self.version = f"{model_key(model)}-L{self.layer}-mean-t{self.max_tokens}-f32"
        self._trunk: Any = None
        self._tokenizer: Any = None

    def _load(self) -> tuple[Any, Any]:
        """The tokenizer and the part of the model that runs up to ``layer`` (built once)."""
        with _TRUNK_LOCK:
            if self._trunk is None:
                from modalrec.encoders.causal_lm import load_llm

                llm = load_llm(self.model, dtype="float32")
                self._trunk = _trunk(llm.model, self.layer)
                self._tokenizer = llm.tokenizer
        return self._trunk, self._tokenizer

    def _forward(self, loaded: list[Any]) -> np.ndarray:
        import torch

        trunk, tok = self._load()
        if self.threads:
            torch.set_num_threads(int(self.threads))
        out = np.zeros((len(loaded), self.dim), dtype=np.float32)
        order = np.argsort([len(str(t)) for t in loaded], kind="stable")
        for start in range(0, len(order), self.batch_size):
            rows = order[start : start + self.batch_size]
            enc = tok(
                [str(loaded[r]) for r in rows],
                padding=True,
                truncation=True,
                max_length=self.max_tokens,
                return_tensors="pt",
            )
            with torch.inference_mode():
                h = trunk(
                    input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], use_cache=False
                ).last_hidden_state
            m = enc["attention_mask"].unsqueeze(-1).to(h.dtype)
            pooled = (h * m).sum(1) / m.sum(1).clamp(min=1.0)
            out[rows] = torch.nn.functional.normalize(pooled.float(), dim=1).numpy()
        return out

    def to_spec(self) -> dict[str, Any]:
        return {
            "encoder": self.name,
            "model": self.model,
            "layer": self.layer,
            "max_tokens": self.max_tokens,
            "batch_size": self.batch_size,
        }


def _trunk(causal_lm: Any, layer: int) -> Any:
    """The decoder stack of ``causal_lm`` cut after ``layer`` layers (no LM head: no vocabulary logits).

    The cut model shares the weights (no copy); its final norm is dropped so that its output is
    exactly the full model's hidden state after ``layer`` layers. ``-1`` keeps every layer and the norm.
    """
    import torch

    base = causal_lm.get_decoder() if hasattr(causal_lm, "get_decoder") else causal_lm.base_model
    n = len(base.layers)
    if layer == -1 or layer >= n:
        return base
    cut = copy.copy(base)  # a new module object whose submodule table we may change
    cut._modules = dict(base._modules)
    cut.layers = torch.nn.ModuleList(list(base.layers)[:layer])
    cut.norm = torch.nn.Identity()
    return cut
