"""Shared base for models that score by a dot product of user and item vectors (BPR-MF, LightGCN...).

Why: scoring, persistence and BPR training are the same for every latent-factor model; a subclass
only says how to compute the final user and item vectors from its parameters (``propagate``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from modalrec.models.base import Recommender
from modalrec.models.training import BPRSampler, seed_everything, train_with_early_stopping

if TYPE_CHECKING:
    from modalrec.data.dataset import Dataset


def bpr_loss(pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
    """Mean of -log sigmoid(pos - neg), computed stably with softplus."""
    return torch.nn.functional.softplus(neg - pos).mean()


class EmbeddingRecommender(Recommender):
    """Latent-factor model trained with BPR and early stopping on validation Recall@20.

    Subclasses build ``self.net`` (an ``nn.Module``) in :meth:`build` and return final
    ``(user_vectors, item_vectors)`` from :meth:`propagate`. After training, the final vectors are
    stored (``user_vectors`` / ``item_vectors``), so scoring and loading need no graph.
    """

    @classmethod
    def default_params(cls) -> dict[str, Any]:
        return {
            "dim": 64,
            "lr": 0.001,
            "reg": 1e-4,
            "batch_size": 2048,
            "epochs": 200,
            "eval_every": 1,
            "patience": 20,
            "seed": 2024,
            # Intra-op threads while training. Batches are small (2048 x 64), so threads buy little,
            # while oversubscription on a busy 2-core machine cost 10-15x per epoch (measured:
            # LightGCN on ML-100K 2.3 s/epoch with 1 thread vs 30-44 s with 2 under load).
            "threads": 1,
        }

    # -- to implement --------------------------------------------------------------------
    #: the torch module made by :meth:`build` (typed loosely: every subclass has its own layout)
    net: Any

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
        return loss + self.params["reg"] * reg / len(users)

    # -- protocol ------------------------------------------------------------------------
    def _fit(self, dataset: Dataset, *, progress: bool) -> None:
        previous = torch.get_num_threads()
        if self.params["threads"]:
            torch.set_num_threads(int(self.params["threads"]))
        try:
            self._train(dataset, progress=progress)
        finally:
            torch.set_num_threads(previous)

    def _train(self, dataset: Dataset, *, progress: bool) -> None:
        rng = seed_everything(int(self.params["seed"]))
        self.net = self.build(dataset)
        opt = torch.optim.Adam(self.net.parameters(), lr=float(self.params["lr"]))
        sampler = BPRSampler(dataset.train, rng)
        self._cache: tuple[torch.Tensor, torch.Tensor] | None = None
        self._final: tuple[torch.Tensor, torch.Tensor] | None = None

        def run_epoch(epoch: int) -> float:
            self.net.train()
            self._cache = None
            total, n = 0.0, 0
            for u, p, neg in sampler.epoch(int(self.params["batch_size"])):
                opt.zero_grad(set_to_none=True)
                loss = self.batch_loss(u, p, neg)
                loss.backward()
                opt.step()
                total += float(loss.detach()) * len(u)
                n += len(u)
            self.net.eval()
            return total / max(n, 1)

        def get_state() -> dict[str, torch.Tensor]:
            return {k: v.detach().clone() for k, v in self.net.state_dict().items()}

        train_with_early_stopping(
            self,
            dataset,
            run_epoch=run_epoch,
            get_state=get_state,
            set_state=self.net.load_state_dict,
            epochs=int(self.params["epochs"]),
            eval_every=int(self.params["eval_every"]),
            patience=int(self.params["patience"]),
            progress=progress,
        )
        self._cache = None
        self._finalise()

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
        final = getattr(self, "_final", None)
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
