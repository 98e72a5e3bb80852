"""Shared base for models that score by a dot product of user and item vectors (BPR-MF, LightGCN...).

Why: scoring, persistence and BPR training are the same for every latent-factor model; a subclass
only says how to compute the final user and item vectors from its parameters (``propagate``).
The one BPR epoch loop (:meth:`EmbeddingRecommender.train_bpr`) serves every such model; content
models pass a sampler with warm-only negatives and use the per-epoch hooks, nothing else changes.

Graph models (:class:`GraphTrainingParams`) choose how often the whole graph is propagated:

* ``propagation="per_batch"``: one propagation (forward and backward over every edge) per mini-batch,
  the original exact path. An epoch costs (interactions / batch_size) x (graph size): quadratic.
* ``propagation="shared"``: the epoch's mini-batches are split into ``steps_per_epoch`` groups; each
  group shares one propagation. Its mini-batch losses (each exactly the per-batch loss: same negatives,
  same in-batch terms) are taken against the propagated vectors detached as leaves, their gradients
  gathered as sparse rows and summed, pushed back through the graph once, and one Adam step follows:
  gradient accumulation over the group, i.e. the exact gradient of the group's mean loss. An epoch costs
  ``steps_per_epoch`` propagations plus work proportional to the interactions: linear. Why sparse rows:
  indexing a table in autograd writes a dense table-sized gradient per mini-batch, which would make the
  accumulation quadratic again. With ``steps_per_epoch`` >= the number of mini-batches every group is
  one mini-batch and the two paths give the same parameters (a test checks it).

  A step over k mini-batches is one Adam step on a k-times larger batch: with ``lr_scaling="sqrt"``
  the learning rate is multiplied by sqrt(k), the square-root scaling rule for adaptive optimisers
  (Malladi et al., "On the SDEs and Scaling Rules for Adaptive Gradient Algorithms", NeurIPS 2022);
  fewer, less noisy steps per epoch otherwise need proportionally more epochs (measured on TikTok:
  benchmarks/results/graph_linear.md).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
import scipy.sparse as sp
import torch
from pydantic import Field
from torch import nn
from torch.nn import functional as F
from typing_extensions import TypeVar

from modalrec.core.params import Params
from modalrec.core.threads import torch_threads
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


class GraphTrainingParams(EmbeddingParams):
    """Settings of models that propagate over the whole graph: how many mini-batches share a propagation."""

    propagation: Literal["auto", "shared", "per_batch"] = Field(
        "auto",
        description="shared: one graph propagation per group of mini-batches, steps_per_epoch groups "
        "(epoch linear in the data); per_batch: one per mini-batch (the original exact path, quadratic); "
        "auto: per_batch up to shared_above_batches mini-batches per epoch, shared above",
    )
    shared_above_batches: int = Field(
        128,
        ge=0,
        description="auto propagation: share propagations when an epoch has more mini-batches than this",
    )
    steps_per_epoch: int = Field(
        16, ge=1, description="shared propagation: optimiser steps (= graph propagations) per epoch"
    )
    lr_scaling: Literal["sqrt", "none"] = Field(
        "sqrt",
        description="shared propagation: Adam learning rate x sqrt(mini-batches per step) (sqrt) or as given",
    )
    item_order: Literal["local", "given"] = Field(
        "local",
        description="shared propagation: run the graph products with the items renumbered for cache "
        "locality (user-item graph by falling popularity, item-item graphs by reverse Cuthill-McKee; "
        "same maths up to float rounding, faster past ~10^5 items) or in the data set's given order",
    )


#: The hyperparameter class of an embedding model.
EP = TypeVar("EP", bound=EmbeddingParams, default=EmbeddingParams)


#: One mini-batch of BPR triplets: users, positive items, negative items.
Batch = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


@dataclass
class TrainingRun:
    """What one training run carries from epoch to epoch: the optimiser and the triplet source."""

    opt: torch.optim.Optimizer
    triplets: BPRSampler


class _GradSum:
    """Sum of a group's mini-batch gradients per target tensor, in one buffer per target.

    Sparse row gradients (from :meth:`EmbeddingRecommender.rows`) are added in place with
    ``index_add_``, so a mini-batch costs its own rows, not the table's size.
    """

    def __init__(self, targets: list[torch.Tensor]) -> None:
        self.targets = targets
        self.sums: list[torch.Tensor | None] = [None] * len(targets)

    def add(self, grads: tuple[torch.Tensor | None, ...]) -> None:
        for k, g in enumerate(grads):
            if g is None:
                continue
            acc = self.sums[k]
            if acc is None:
                acc = self.sums[k] = torch.zeros_like(self.targets[k])
            if g.is_sparse:
                acc.index_add_(0, g._indices()[0], g._values())
            else:
                acc += g


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
    #: True inside a shared-propagation step: :meth:`rows` returns sparse row gradients
    _sparse_rows: bool = False
    #: the propagation mode resolved for the running training (``propagation="auto"``); None = unresolved
    _shared_mode: bool | None = None

    def build(self, dataset: Dataset) -> nn.Module:
        raise NotImplementedError

    def propagate(self) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def rows(self, table: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """``table[idx]``; inside a shared-propagation step the gradient comes back as sparse rows
        (a dense table-sized gradient per mini-batch would make the step cost grow with the graph)."""
        if self._sparse_rows:
            return F.embedding(idx, table, sparse=True)
        return table[idx]

    def batch_loss(self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        """Loss of one mini-batch on a fresh propagation (the per-batch path)."""
        u_all, i_all = self.propagate()
        return self.propagated_loss(u_all, i_all, users, pos, neg)

    def propagated_loss(
        self,
        u_all: torch.Tensor,
        i_all: torch.Tensor,
        users: torch.Tensor,
        pos: torch.Tensor,
        neg: torch.Tensor,
    ) -> torch.Tensor:
        """BPR loss + L2 on the batch's input (ego) embeddings, LightGCN/MMRec style, given the
        propagated vectors (every gather through :meth:`rows`, so a shared step can reuse them)."""
        u, p, n = self.rows(u_all, users), self.rows(i_all, pos), self.rows(i_all, neg)
        loss = bpr_loss((u * p).sum(1), (u * n).sum(1))
        ego_u, ego_i = self.net.user.weight, self.net.item.weight
        reg = (
            self.rows(ego_u, users).pow(2).sum()
            + self.rows(ego_i, pos).pow(2).sum()
            + self.rows(ego_i, neg).pow(2).sum()
        ) / 2
        return loss + self.hp.reg * reg / len(users)

    def start_epoch(self, epoch: int) -> None:
        """Hook run before each training epoch (graph models re-sample a pruned graph here)."""

    def end_training(self) -> None:
        """Hook run once after training, before the final vectors are computed."""

    def triplet_sampler(self) -> SamplerFactory:
        """The BPR triplet source of this model's training (content models: warm-only negatives)."""
        return BPRSampler

    def describe_training(self) -> None:
        """Hook run after training to add model-specific facts to ``meta`` (e.g. modality weights)."""

    # -- protocol ------------------------------------------------------------------------
    def _fit(self, dataset: Dataset, *, progress: bool) -> None:
        with torch_threads(self.hp.threads):
            self._train(dataset, progress=progress)

    def _train(self, dataset: Dataset, *, progress: bool) -> None:
        self.train_bpr(dataset, progress=progress)

    def start_training(self, dataset: Dataset, sampler: SamplerFactory = BPRSampler) -> TrainingRun:
        """Seed, build the network, its Adam optimiser and the triplet source of one training run."""
        rng = seed_everything(self.hp.seed)
        self.net = self.build(dataset)
        self._rng = rng
        self._shared_mode = self.resolve_propagation(dataset.train.nnz)
        if isinstance(self.hp, GraphTrainingParams):
            self.meta["propagation"] = "shared" if self._shared_mode else "per_batch"
        lr = self.hp.lr * self.lr_factor(dataset.train.nnz)
        self.meta["effective_lr"] = lr
        opt = torch.optim.Adam(self.net.parameters(), lr=lr)
        self._cache = None
        self._final = None
        return TrainingRun(opt, sampler(dataset.train, rng))

    def lr_factor(self, n_triplets: int) -> float:
        """sqrt(mini-batches per optimiser step) under shared propagation with ``lr_scaling="sqrt"``, else 1.

        >>> m = EmbeddingRecommender.__new__(EmbeddingRecommender)
        >>> m.hp = GraphTrainingParams(propagation="shared", steps_per_epoch=4, batch_size=10)
        >>> m.lr_factor(160), m.lr_factor(30)
        (2.0, 1.0)
        """
        hp = self.hp
        if not self.shares_propagation() or hp.lr_scaling == "none":  # type: ignore[attr-defined]
            return 1.0
        n_batches = -(-n_triplets // hp.batch_size)
        return float(np.sqrt(n_batches / max(1, min(hp.steps_per_epoch, n_batches))))  # type: ignore[attr-defined]

    def train_bpr(self, dataset: Dataset, *, progress: bool, sampler: SamplerFactory = BPRSampler) -> None:
        """The BPR training loop of every embedding model: seed, build, Adam, epochs of ``sampler``
        triplets with early stopping on validation (best state restored), then the final vectors."""
        run = self.start_training(dataset, sampler)
        train_with_early_stopping(
            self,
            dataset,
            run_epoch=lambda epoch: self.train_epoch(run, epoch),
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

    def train_epoch(self, run: TrainingRun, epoch: int, *, max_steps: int | None = None) -> float:
        """One pass over the training interactions; returns the mean loss per triplet.

        ``max_steps`` stops after that many optimiser steps (benchmarks time the quadratic per-batch
        path on a few steps of a large epoch instead of hours).
        """
        self.start_epoch(epoch)
        self.net.train()
        self._cache = None
        total, n = 0.0, 0
        shared = self.shares_propagation()
        for group in self.step_groups(run.triplets.epoch(self.hp.batch_size))[:max_steps]:
            if shared:
                total += self._shared_step(run.opt, group)
            else:
                (u, p, neg) = group[0]
                run.opt.zero_grad(set_to_none=True)
                loss = self.batch_loss(u, p, neg)
                loss.backward()
                run.opt.step()
                total += float(loss.detach()) * len(u)
            n += sum(len(b[0]) for b in group)
        self.net.eval()
        return total / max(n, 1)

    def shares_propagation(self) -> bool:
        """True when mini-batches share graph propagations (``propagation="shared"``, or ``"auto"``
        resolved to shared by :meth:`start_training`)."""
        if not isinstance(self.hp, GraphTrainingParams):
            return False
        if self._shared_mode is not None:
            return self._shared_mode
        return self.hp.propagation == "shared"

    def resolve_propagation(self, n_triplets: int) -> bool:
        """Whether a training on ``n_triplets`` triplets shares propagations.

        Why ``auto``: the per-batch path is exact and cheap while an epoch has few mini-batches (every
        benchmark data set: ML-100K 40, TikTok 30, Baby 59), but its epoch grows with interactions x graph
        size; past ``shared_above_batches`` mini-batches the shared path keeps the epoch linear
        (benchmarks/results/graph_linear.md measures both).

        >>> m = EmbeddingRecommender.__new__(EmbeddingRecommender)
        >>> m.hp = GraphTrainingParams(batch_size=10, shared_above_batches=4)
        >>> m.resolve_propagation(40), m.resolve_propagation(41)
        (False, True)
        """
        hp = self.hp
        if not isinstance(hp, GraphTrainingParams):
            return False
        if hp.propagation == "auto":
            return -(-n_triplets // hp.batch_size) > hp.shared_above_batches
        return hp.propagation == "shared"

    def step_groups(self, batches: list[Batch]) -> list[list[Batch]]:
        """The epoch's mini-batches grouped by optimiser step: one each on the per-batch path, else
        ``steps_per_epoch`` groups of consecutive mini-batches (fewer if the epoch has fewer batches).

        >>> m = EmbeddingRecommender.__new__(EmbeddingRecommender)
        >>> m.hp = GraphTrainingParams(propagation="shared", steps_per_epoch=2)
        >>> [len(g) for g in m.step_groups([None] * 5)]  # type: ignore[list-item]
        [2, 3]
        """
        if not self.shares_propagation():
            return [[b] for b in batches]
        k = min(self.hp.steps_per_epoch, len(batches))  # type: ignore[attr-defined]
        cuts = np.linspace(0, len(batches), k + 1).round().astype(int)
        return [batches[a:b] for a, b in itertools.pairwise(cuts.tolist())]

    def _shared_step(
        self, opt: torch.optim.Optimizer, group: list[Batch], before_step: Callable[[], None] | None = None
    ) -> float:
        """One Adam step on a group of mini-batches that share one propagation (module docstring):
        the exact gradient of the group's mean loss. Returns the summed loss (mean x triplets).
        ``before_step`` runs between the gradients and the step (data-parallel training averages the
        workers' gradients there: :mod:`modalrec.models.distributed`)."""
        opt.zero_grad(set_to_none=True)
        u_all, i_all = self.propagate()
        leaves = [u_all.detach().requires_grad_(), i_all.detach().requires_grad_()]
        params = [q for q in self.net.parameters() if q.requires_grad]
        grads = _GradSum([*leaves, *params])
        n_total = sum(len(b[0]) for b in group)
        total = 0.0
        self._sparse_rows = True
        try:
            for users, pos, neg in group:
                loss = self.propagated_loss(leaves[0], leaves[1], users, pos, neg) * (len(users) / n_total)
                grads.add(torch.autograd.grad(loss, grads.targets, allow_unused=True))
                total += float(loss.detach()) * n_total
        finally:
            self._sparse_rows = False
        summed = grads.sums
        outputs = [(o, g) for o, g in zip((u_all, i_all), summed[:2], strict=True) if g is not None]
        if outputs and any(o.requires_grad for o, _ in outputs):
            torch.autograd.backward([o for o, _ in outputs], [g for _, g in outputs])
        for q, g in zip(params, summed[2:], strict=True):
            if g is not None:
                q.grad = g if q.grad is None else q.grad + g
        if before_step is not None:
            before_step()
        opt.step()
        return total

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
