"""A fine-tuned re-ranker: LoRA adapters (``peft``) trained so that the LLM's score ranks a user's items.

Why: zero-shot log-likelihood from a 135M model does not improve a strong recommender (issue 7:
LightGCN's NDCG@10 .3093 -> .3019); the published gains come from training the LLM for the task
(LlamaRec, TALLRec). Here the score the re-ranker already uses at inference, the summed
log-likelihood of a candidate's text after a prompt listing the user's history
(:class:`~modalrec.llm.rerank.LLMReranker`), is trained list-wise: for one training example the
prompt lists up to ``max_history`` of the user's **training** items, and the LLM must give a held-out
training item of the user a higher score than ``negatives`` items the base recommender ranks high
for that user but the user never interacted with in training (the hard negatives the re-ranker
will face). Loss: softmax cross-entropy over the ``1 + negatives`` summed log-likelihoods, the
prompt run once per example and its key/value cache shared by the candidates (as at inference).

Early stopping: every ``eval_every`` examples the LLM alone (score ``sum``, weight 1) re-ranks the
base model's top ``n_candidates`` for a fixed seeded set of validation users (history = train
items, target = validation items); the adapters of the best NDCG@10 are kept, training stops after
``patience`` evaluations without a gain or at ``max_minutes``. Which LLM score and which blend
weight to use at inference are then chosen on a *different* fixed set of validation users (the
tuning and the selection never share users).

Only the adapters are stored (``adapter_model.safetensors`` + ``adapter_config.json``, a few MB;
no pickle); loading merges them into the base weights, so inference costs what the untuned model
costs.
"""

from __future__ import annotations

import copy
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from pydantic import Field

from modalrec.core.errors import ConfigError, RunDirError
from modalrec.core.io import atomic_write_json
from modalrec.core.params import Params
from modalrec.llm.rerank import SCORES, LLMReranker, choose_blend, metrics_for, score_users

if TYPE_CHECKING:
    from modalrec.data.dataset import Dataset
    from modalrec.llm.domain import ItemDomain
    from modalrec.llm.loading import LLM
    from modalrec.models.base import Recommender

ADAPTER_CONFIG = "adapter_config.json"
ScoreName = Literal["sum", "mean", "pmi", "pmi_mean"]
_ALL_SCORES: tuple[ScoreName, ...] = ("sum", "mean", "pmi", "pmi_mean")
TUNE_INFO = "tune.json"


class TuneParams(Params):
    """Hyperparameters of :func:`tune_reranker` (LoRA through ``peft``)."""

    rank: int = Field(8, ge=1, le=256, description="LoRA rank of each adapted projection")
    alpha: int = Field(16, ge=1, description="LoRA scaling numerator (scale = alpha / rank)")
    dropout: float = Field(0.05, ge=0, lt=1, description="dropout on the LoRA input")
    targets: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"],
        description="names of the linear layers that get adapters (attention projections)",
    )
    layers: int | None = Field(
        None,
        ge=1,
        description="adapt only the last `layers` decoder layers (None = all; fewer = cheaper backward)",
    )
    lr: float = Field(3e-4, gt=0, description="AdamW learning rate of the adapters")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay")
    batch: int = Field(4, ge=1, description="training examples per optimiser step")
    negatives: int = Field(7, ge=1, description="hard negatives per training example")
    pool: int = Field(
        50, ge=2, description="negatives are drawn from the base model's top `pool` non-training items"
    )
    max_history: int = Field(10, ge=1, description="history items listed in a prompt (as at inference)")
    n_candidates: int = Field(20, ge=2, description="base candidates re-ranked (validation and inference)")
    max_minutes: float = Field(40.0, gt=0, description="wall-clock budget of the training loop")
    eval_every: int = Field(200, ge=1, description="training examples between two validation evaluations")
    patience: int = Field(3, ge=1, description="evaluations without a validation gain before stopping")
    valid_users: int = Field(100, ge=2, description="validation users for early stopping")
    select_users: int = Field(
        200, ge=2, description="other validation users that choose the LLM score and blend weight"
    )
    scores: list[ScoreName] = Field(
        default_factory=lambda: list(_ALL_SCORES),
        description="LLM score variants the blend may choose from (pmi ones cost one prior pass per item)",
    )
    seed: int = Field(0, description="seeds examples, user samples and adapter initialisation")


@dataclass
class TuneResult:
    """What :func:`tune_reranker` produced: the tuned LLM and the record of how it got there."""

    llm: LLM
    curve: list[dict[str, Any]]
    best: dict[str, Any]
    score: str
    weight: float
    selection: dict[str, Any]
    params: dict[str, Any]
    seconds: float
    stopped: str
    adapter: Any = field(default=None, repr=False)  # the peft model (for saving)

    def info(self) -> dict[str, Any]:
        """JSON-able record (``tune.json`` in the adapter directory)."""
        return {
            "llm_score": self.score,
            "blend_weight": self.weight,
            "selection": self.selection,
            "best": self.best,
            "curve": self.curve,
            "params": self.params,
            "seconds": round(self.seconds, 1),
            "stopped": self.stopped,
        }


# ---------------------------------------------------------------------- examples
def split_valid_users(
    dataset: Dataset, n_tune: int, n_select: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Two disjoint seeded samples of validation users: early stopping, then score/weight selection."""
    users = np.flatnonzero(np.diff(dataset.target("valid").indptr) > 0)
    perm = np.random.default_rng([seed, 7]).permutation(users)
    if len(perm) < 2:
        raise ConfigError(f"{dataset.name}: tuning needs at least 2 users with validation items")
    n_tune = min(n_tune, len(perm) // 2)
    return np.sort(perm[:n_tune]), np.sort(perm[n_tune : n_tune + n_select])


def training_examples(
    dataset: Dataset, pool: np.ndarray, params: TuneParams, rng: np.random.Generator
) -> list[tuple[int, list[int], list[int]]]:
    """One epoch of examples ``(user, history, [positive, *negatives])`` from training interactions only.

    ``pool[u]`` holds the base model's top non-training items of user ``u`` (the negatives' source);
    the positive is a random training item of the user and the history other training items.
    """
    tr = dataset.train.tocsr()
    out = []
    for u in rng.permutation(dataset.n_users):
        items = tr.indices[tr.indptr[u] : tr.indptr[u + 1]]
        if len(items) < 2:
            continue
        pos = int(rng.choice(items))
        rest = items[items != pos]
        hist = np.sort(rng.choice(rest, size=min(params.max_history, len(rest)), replace=False))
        cand = pool[u][pool[u] >= 0]
        if len(cand) < params.negatives:
            continue
        neg = rng.choice(cand, size=params.negatives, replace=False)
        out.append((int(u), [int(h) for h in hist], [pos, *(int(n) for n in neg)]))
    return out


def negative_pool(model: Recommender, dataset: Dataset, size: int) -> np.ndarray:
    """``[n_users, size]`` top items of ``model`` per user, training items excluded (-1 = none left)."""
    users = np.arange(dataset.n_users)
    top, vals = model.recommend(users, size, exclude=dataset.train)
    return np.where(np.isfinite(vals), top, -1).astype(np.int64)


# ---------------------------------------------------------------------- model
def lora_model(llm: LLM, params: TuneParams) -> tuple[LLM, Any]:
    """A trainable copy of ``llm`` with LoRA adapters (the process-wide cached model stays untouched)."""
    import torch
    from peft import LoraConfig, get_peft_model

    from modalrec.llm.loading import LLM as LLMClass

    torch.manual_seed(params.seed)
    base = copy.deepcopy(llm.model)
    cfg = LoraConfig(
        r=params.rank,
        lora_alpha=params.alpha,
        lora_dropout=params.dropout,
        target_modules=list(params.targets),
        layers_to_transform=_last_layers(base, params.layers),
        bias="none",
        task_type="CAUSAL_LM",
    )
    try:
        peft_model = get_peft_model(base, cfg)
    except ValueError as e:
        raise ConfigError(f"LoRA targets {params.targets} do not fit {llm.name}: {e}") from None
    # peft injects the adapters into ``base`` in place: the plain model now runs them
    tuned = LLMClass(model=base, tokenizer=llm.tokenizer, name=f"{llm.name}+lora", info=dict(llm.info))
    return tuned, peft_model


def _last_layers(model: Any, n: int | None) -> list[int] | None:
    """Indices of the last ``n`` decoder layers (None: all layers get adapters)."""
    if n is None:
        return None
    total = int(model.config.num_hidden_layers)
    return list(range(max(0, total - n), total))


def example_loss(reranker: LLMReranker, history: Sequence[int], items: Sequence[int]) -> Any:
    """Cross-entropy of the positive (``items[0]``) among the candidates' summed log-likelihoods."""
    import torch

    from modalrec.llm.scoring import differentiable_logprobs

    lp = differentiable_logprobs(
        reranker.local_llm(), reranker.prompt_ids(list(history)), [reranker.candidate_ids(i) for i in items]
    )
    return torch.nn.functional.cross_entropy(lp.float().unsqueeze(0), torch.zeros(1, dtype=torch.long))


# ---------------------------------------------------------------------- validation
def validation_point(
    reranker: LLMReranker, model: Recommender, dataset: Dataset, users: np.ndarray, n_candidates: int
) -> dict[str, float]:
    """NDCG@10 on validation ``users`` of the base order and of the ``sum``/``mean`` LLM scores alone."""
    import torch

    reranker.local_llm().model.eval()
    with torch.inference_mode():  # no priors: only the sum/mean scores are compared during training
        scored = score_users(
            reranker, model, dataset, "valid", users, n_candidates, 10, False, "", priors=False
        )
    out = {"base": float(np.nanmean(metrics_for(scored, dataset, "valid", (10,), None, 0.0)["ndcg@10"]))}
    for s in ("sum", "mean"):
        out[s] = float(np.nanmean(metrics_for(scored, dataset, "valid", (10,), s, 1.0)["ndcg@10"]))
    out["seconds_per_user"] = float(np.mean(scored.seconds)) if scored.seconds else 0.0
    return out


def select_blend(
    reranker: LLMReranker,
    model: Recommender,
    dataset: Dataset,
    users: np.ndarray,
    n_candidates: int,
    scores: Sequence[str] = SCORES,
) -> tuple[str, float, dict[str, Any]]:
    """(LLM score, blend weight) best on the selection users (never the early-stopping ones)."""
    import torch

    reranker.local_llm().model.eval()
    reranker._prior.clear()  # priors of the untuned weights would be stale
    pmi = any(s.startswith("pmi") for s in scores)
    with torch.inference_mode():
        scored = score_users(
            reranker, model, dataset, "valid", users, n_candidates, 10, False, "", priors=pmi
        )
    score, weight, info = choose_blend(scored, dataset, "valid", scores=scores)
    info["n_users"] = len(users)
    return score, weight, info


# ---------------------------------------------------------------------- training
def _adapter_state(peft_model: Any) -> dict[str, Any]:
    return {k: v.detach().clone() for k, v in peft_model.named_parameters() if v.requires_grad}


def _load_state(peft_model: Any, state: dict[str, Any]) -> None:
    import torch

    with torch.no_grad():
        for k, v in peft_model.named_parameters():
            if k in state:
                v.copy_(state[k])


def _train_steps(
    reranker: LLMReranker,
    examples: list[tuple[int, list[int], list[int]]],
    optimiser: Any,
    params: TuneParams,
) -> float:
    """One pass over ``examples`` in optimiser steps of ``params.batch`` examples; mean loss."""
    reranker.local_llm().model.train()
    total = 0.0
    for start in range(0, len(examples), params.batch):
        chunk = examples[start : start + params.batch]
        optimiser.zero_grad(set_to_none=True)
        for _, hist, items in chunk:
            loss = example_loss(reranker, hist, items) / len(chunk)
            loss.backward()
            total += float(loss.detach()) * len(chunk)
        optimiser.step()
    return total / max(len(examples), 1)


def tune_reranker(
    llm: LLM,
    model: Recommender,
    dataset: Dataset,
    params: TuneParams | None = None,
    *,
    domain: ItemDomain | None = None,
    progress: Callable[[dict[str, Any]], None] | None = None,
) -> TuneResult:
    """Train LoRA adapters of ``llm`` to re-rank ``model``'s top candidates (see the module docstring).

    Args:
        llm: the base LLM (not modified: the adapters go into a copy).
        model: the fitted base recommender (its top items are the hard negatives and the candidates).
        params: :class:`TuneParams` (defaults if None).
        progress: called with every point of the training curve (for logs).

    Returns:
        :class:`TuneResult` with the tuned LLM (adapters merged in place of the best evaluation's),
        the training curve, and the LLM score and blend weight chosen on the selection users.
    """
    import torch

    p = params or TuneParams.model_validate({})
    t0 = time.perf_counter()
    tune_users, select_users = split_valid_users(dataset, p.valid_users, p.select_users, p.seed)
    tuned, peft_model = lora_model(llm, p)
    rr = LLMReranker(dataset, tuned, max_history=p.max_history, seed=p.seed, domain=domain)
    pool = negative_pool(model, dataset, p.pool)
    opt = torch.optim.AdamW(
        [q for q in peft_model.parameters() if q.requires_grad], lr=p.lr, weight_decay=p.weight_decay
    )
    rng = np.random.default_rng(p.seed)
    curve: list[dict[str, Any]] = []

    def evaluate_point(seen: int, loss: float | None) -> dict[str, Any]:
        v = validation_point(rr, model, dataset, tune_users, p.n_candidates)
        minutes = round((time.perf_counter() - t0) / 60, 2)
        point = {"examples": seen, "minutes": minutes, "train_loss": loss, "valid_ndcg@10": v}
        curve.append(point)
        if progress is not None:
            progress(point)
        return point

    best = evaluate_point(0, None)
    best_state, bad, seen, stopped = _adapter_state(peft_model), 0, 0, "epochs"
    budget = p.max_minutes * 60
    while stopped == "epochs":
        epoch = training_examples(dataset, pool, p, rng)
        if not epoch:
            raise ConfigError(f"{dataset.name}: no training example (users need >= 2 training items)")
        for start in range(0, len(epoch), p.eval_every):
            loss = _train_steps(rr, epoch[start : start + p.eval_every], opt, p)
            seen += len(epoch[start : start + p.eval_every])
            point = evaluate_point(seen, loss)
            if point["valid_ndcg@10"]["sum"] > best["valid_ndcg@10"]["sum"] + 1e-6:
                best, best_state, bad = point, _adapter_state(peft_model), 0
            else:
                bad += 1
            if bad >= p.patience:
                stopped = f"no validation gain in {p.patience} evaluations"
                break
            if time.perf_counter() - t0 > budget:
                stopped = f"time budget ({p.max_minutes:g} min)"
                break
    _load_state(peft_model, best_state)
    score, weight, selection = select_blend(rr, model, dataset, select_users, p.n_candidates, p.scores)
    return TuneResult(
        llm=tuned,
        curve=curve,
        best=best,
        score=score,
        weight=weight,
        selection=selection,
        params=p.as_dict(),
        seconds=time.perf_counter() - t0,
        stopped=stopped,
        adapter=peft_model,
    )


# ---------------------------------------------------------------------- storage
def save_tuned(result: TuneResult, directory: str | Path, *, extra: dict[str, Any] | None = None) -> Path:
    """Write the adapters (safetensors) and ``tune.json`` (curve, chosen score and weight) to ``directory``."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    result.adapter.save_pretrained(str(d), safe_serialization=True)
    atomic_write_json(d / TUNE_INFO, {**result.info(), "llm": result.llm.name, **(extra or {})})
    return d


def has_tuned(directory: str | Path) -> bool:
    d = Path(directory)
    return (d / ADAPTER_CONFIG).is_file() and (d / TUNE_INFO).is_file()


def load_tuned(llm: LLM, directory: str | Path) -> tuple[LLM, dict[str, Any]]:
    """The base ``llm`` with the stored adapters merged into a copy of its weights, and ``tune.json``.

    Merged: inference then runs the plain model (same cost as untuned, and the batched scoring of
    :mod:`modalrec.llm.scoring` applies unchanged).
    """
    from peft import PeftModel

    from modalrec.llm.loading import LLM as LLMClass

    d = Path(directory)
    if not has_tuned(d):
        raise RunDirError(f"{d}: no tuned re-ranker ({ADAPTER_CONFIG} and {TUNE_INFO} expected)")
    info = json.loads((d / TUNE_INFO).read_text(encoding="utf-8"))
    try:
        merged = PeftModel.from_pretrained(copy.deepcopy(llm.model), str(d)).merge_and_unload()
    except (ValueError, KeyError, RuntimeError) as e:
        raise RunDirError(f"{d}: the adapters do not fit the LLM {llm.name}: {e}") from None
    merged.eval()
    for q in merged.parameters():
        q.requires_grad_(False)
    name = f"{llm.name}+{d.name}"
    return LLMClass(model=merged, tokenizer=llm.tokenizer, name=name, info=dict(llm.info)), info


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None
