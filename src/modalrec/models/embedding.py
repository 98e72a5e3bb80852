"""Shared base for models that score by a dot product of user and item vectors (BPR-MF, LightGCN...).

Why: scoring, persistence and BPR training are the same for every latent-factor model; a subclass
only says how to compute the final user and item vectors from its parameters (``propagate``).
The one BPR epoch loop (:meth:`EmbeddingRecommender.train_bpr`) serves every such model; content
models pass a sampler with warm-only negatives and use the per-epoch hooks, nothing else changes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import scipy.sparse as sp
import torch
from pydantic import Field
from torch import nn
from typing_extensions import TypeVar

from modalrec.core.params import Params
from modalrec.models.base import Recommender
from modalrec.models.training import BPRSampler, seed_everything, train_with_early_stopping

if TYPE_CHECKING:
    from modalrec.data.dataset import Dataset

#: ``sampler(train, rng)``: the BPR triplet source of one training run (uniform or warm-only negatives).
SamplerFactory = Callable[[sp.csr_matrix, np.random.Generator], BPRSampler]


def bpr_loss(pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """Mean of -log sigmoid(pos - neg), computed stably with softplus."""
    return torch.nn.functional.softplus(neg - pos).mean()


class EmbeddingParams(Params):
    """Settings shared by every latent-factor model trained with BPR and early stopping."""

    dim: int = Field(64, ge=1, description="size of the user and item vectors")
    lr: float = Field(0.001, gt=0, description="Adam learning rate")
    reg: float = Field(1e-4, ge=0, description="L2 weight on the batch's input (ego) embeddings")
    batch_size: int = Field(2048, ge=1, description="BPR triplets per optimiser step")
    epochs: int = Field(200, ge=1, description="most training epochs (early stopping may end sooner)")
    eval_every: int = Field(1, ge=1, description="validate every this many epochs")
    patience: int = Field(20, ge=1, description="validation checks without improvement before stopping")
    seed: int = Field(2024, ge=0, description="random seed of the initialisation and the sampler")
    # Batches are small (2048 x 64), so threads buy little, while oversubscription on a busy 2-core
    # machine cost 10-15x per epoch (measured: LightGCN on ML-100K 2.3 s/epoch with 1 thread vs 30-44 s
    # with 2 under load).
    threads: int = Field(1, ge=0, description="torch intra-op threads while training (0 = torch's setting)")


#: The hyperparameter class of an embedding model.
EP = TypeVar("EP", bound=EmbeddingParams, default=EmbeddingParams)


class EmbeddingRecommender(Recommender[EP]):
    """Latent-factor model trained with BPR and early stopping on validation Recall@20.

    Subclasses build ``self.net`` (an ``nn.Module``) in :meth:`build` and return final
    ``(user_vectors, item_vectors)`` from :meth:`propagate`. After training, the final vectors are
    stored (``user_vectors`` / ``item_vectors``), so scoring and loading need no graph.
    """

    params_class: ClassVar[type[Params]] = EmbeddingParams

    # -- to implement --------------------------------------------------------------------
    #: the torch module made by :meth:`build` (typed loosely: every subclass has its own layout)
    net: Any
    #: the numpy generator of the running training (graph models re-prune their graph with it)
    _rng: np.random.Generator
    #: final (user, item) vectors of a fitted or loaded model
    _final: tuple[torch.Tensor, torch.Tensor] | None = None
    #: vectors propagated once per epoch for validation during training
    _cache: tuple[torch.Tensor, torch.Tensor] | None = None

    def build(self, dataset: Dataset) -> nn.Module:
        raise NotImplementedError

    def propagate(self) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def batch_loss(self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        """BPR loss + L2 on the batch's input (ego) embeddings, LightGCN/MMRec style."""
        u_all, i_all = self.propagate()
        u, p, n = u_all[users], i_all[pos], i_all[neg]
        loss = bpr_loss((u * p).sum(1), (u * n).sum(1))
        ego_u, ego_i = self.net.user.weight, self.net.item.weight
        reg = (ego_u[users].pow(2).sum() + ego_i[pos].pow(2).sum() + ego_i[neg].pow(2).sum()) / 2
        return loss + self.hp.reg * reg / len(users)

    def start_epoch(self, epoch: int) -> None:
        """Hook run before each training epoch (graph models re-sample a pruned graph here)."""

    def end_training(self) -> None:
        """Hook run once after training, before the final vectors are computed."""

    # -- protocol ------------------------------------------------------------------------
    def _fit(self, dataset: Dataset, *, progress: bool) -> None:
        previous = torch.get_num_threads()
        if self.hp.threads:
            torch.set_num_threads(self.hp.threads)
        try:
            self._train(dataset, progress=progress)
        finally:
            torch.set_num_threads(previous)

    def _train(self, dataset: Dataset, *, progress: bool) -> None:
        self.train_bpr(dataset, progress=progress)

    def train_bpr(self, dataset: Dataset, *, progress: bool, sampler: SamplerFactory = BPRSampler) -> None:
        """The BPR training loop of every embedding model: seed, build, Adam, epochs of ``sampler``
        triplets with early stopping on validation (best state restored), then the final vectors."""
        rng = seed_everything(self.hp.seed)
        self.net = self.build(dataset)
        self._rng = rng
        opt = torch.optim.Adam(self.net.parameters(), lr=self.hp.lr)
        triplets = sampler(dataset.train, rng)
        self._cache = None
        self._final = None
        train_with_early_stopping(
            self,
            dataset,
            run_epoch=lambda epoch: self._bpr_epoch(epoch, opt, triplets),
            get_state=self._net_state,
            set_state=self.net.load_state_dict,
            epochs=self.hp.epochs,
            eval_every=self.hp.eval_every,
            patience=self.hp.patience,
            progress=progress,
        )
        self._cache = None
        self.end_training()
        self._finalise()

    def _bpr_epoch(self, epoch: int, opt: torch.optim.Optimizer, triplets: BPRSampler) -> float:
        """One pass over the training interactions; returns the mean loss per triplet."""
        self.start_epoch(epoch)
        self.net.train()
        self._cache = None
        total, n = 0.0, 0
        for u, p, neg in triplets.epoch(self.hp.batch_size):
            opt.zero_grad(set_to_none=True)
            loss = self.batch_loss(u, p, neg)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(u)
            n += len(u)
        self.net.eval()
        return total / max(n, 1)

    def _net_state(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.net.state_dict().items()}

    def _finalise(self) -> None:
        with torch.no_grad():
            self.net.eval()
            u, i = self.propagate()
        self._restore(
            {"user_vectors": u.detach().float().numpy(), "item_vectors": i.detach().float().numpy()}
        )

    def _restore(self, state: dict[str, np.ndarray]) -> None:
        self._state = state
        self._final = (torch.from_numpy(state["user_vectors"]), torch.from_numpy(state["item_vectors"]))

    def _score(self, users: np.ndarray) -> torch.Tensor:
        final = self._final
        if final is None:
            # During training (validation checks): propagate once per epoch and cache.
            if self._cache is None:
                with torch.no_grad():
                    self._cache = self.propagate()
            final = self._cache
        u_all, i_all = final
        return u_all[torch.as_tensor(users)] @ i_all.T

    @property
    def item_vectors(self) -> np.ndarray:
        """Final item vectors (used by similar-item search and serving)."""
        return self._state["item_vectors"]

    @property
    def user_vectors(self) -> np.ndarray:
        return self._state["user_vectors"]
