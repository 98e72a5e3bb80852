"""Local causal LM loading (re-exported from :mod:`modalrec.encoders.causal_lm`, where it now lives).

Why the move: the LLM's hidden states are also an item-text encoder, and the encoder layer sits
below the LLM layer; the loading code moved down so that both can use it without an upward import.
Everything the LLM layer imported from here still is here.
"""

from __future__ import annotations

from modalrec.encoders.causal_lm import (
    DEFAULT_MODEL,
    DTYPES,
    INSTALL_HINT,
    LLM,
    PACKAGED_DISTRIBUTION,
    PACKAGED_GGUF,
    PACKAGED_MODULE,
    LLMUnavailableError,
    cache_root,
    clear_cache,
    hidden_size_of,
    load_llm,
    model_key,
    native_bf16,
    packaged_model_path,
    require_llm_extra,
    resolve_dtype,
)

__all__ = [
    "DEFAULT_MODEL",
    "DTYPES",
    "INSTALL_HINT",
    "LLM",
    "PACKAGED_DISTRIBUTION",
    "PACKAGED_GGUF",
    "PACKAGED_MODULE",
    "LLMUnavailableError",
    "cache_root",
    "clear_cache",
    "hidden_size_of",
    "load_llm",
    "model_key",
    "native_bf16",
    "packaged_model_path",
    "require_llm_extra",
    "resolve_dtype",
]
