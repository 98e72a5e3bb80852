"""Contrastive alignment: a projection head per modality trained with symmetric InfoNCE.

Why: a linear map fitted by least squares spends its capacity on reconstructing every feature; a
contrastive objective only asks that an item's text vector be closer to its own image vector than to
the other items' in the batch (in-batch negatives), which is exactly the retrieval task. The
temperature is learned (CLIP's logit scale), heads are small MLPs with strong weight decay because the
catalogues are small, and training stops early on a validation split of *items* (never test items).

Options for small, noisy catalogues: input noise and feature dropout (augmentation in feature
space), and ``hard_negatives``: a share of every batch is filled with nearest neighbours of other batch
items, so the loss has to separate look-alike items instead of easy ones.
"""

from __future__ import annotations

import copy
import math
from itertools import combinations
from typing import ClassVar

import numpy as np
import torch
from pydantic import Field
from torch import nn
from torch.nn import functional as F
from typing_extensions import TypeVar

from modalrec.align.base import Aligner, Standardizer, register, selection_split
from modalrec.align.metrics import mean_reciprocal_rank
from modalrec.core.losses import info_nce
from modalrec.core.params import Params


def make_head(d_in: int, dim: int, hidden: int | None, dropout: float) -> nn.Module:
    """Linear head, or a one-hidden-layer MLP (GELU, dropout) when ``hidden`` is set."""
    if not hidden:
        return nn.Linear(d_in, dim)
    return nn.Sequential(nn.Linear(d_in, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim))


def neighbour_table(X: np.ndarray, n_neighbours: int) -> np.ndarray:
    """Top-``n_neighbours`` cosine neighbours of every row (excluding itself), int64 [n, n_neighbours]."""
    Xn = X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
    sim = Xn @ Xn.T
    np.fill_diagonal(sim, -np.inf)
    n_neighbours = min(n_neighbours, len(X) - 1)
    idx = np.argpartition(-sim, n_neighbours, axis=1)[:, :n_neighbours]
    return idx.astype(np.int64)


class _Heads(nn.Module):
    def __init__(
        self, dims: dict[str, int], dim: int, hidden: int | None, dropout: float, temperature: float
    ):
        super().__init__()
        self.heads = nn.ModuleDict({m: make_head(d, dim, hidden, dropout) for m, d in dims.items()})
        self.log_scale = nn.Parameter(torch.tensor(math.log(1.0 / temperature)))

    def forward(self, m: str, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.heads[m](x), dim=-1)

    @property
    def scale(self) -> torch.Tensor:
        return self.log_scale.clamp(max=math.log(100.0)).exp()


class ProjectionParams(Params):
    """Hyperparameters shared by every aligner that trains projection networks with InfoNCE
    (contrastive, cross_attention, mmd, adversarial)."""

    dim: int = Field(128, ge=1, description="size k of the shared space")
    dropout: float = Field(0.1, ge=0, lt=1, description="dropout rate inside the projection networks")
    pca_in: int | None = Field(None, ge=1, description="PCA size of each input modality (None: all)")
    l2_input: bool = Field(True, description="L2-normalise every input row before centring and scaling")
    lr: float = Field(1e-3, gt=0, description="AdamW learning rate")
    weight_decay: float = Field(1e-2, ge=0, description="AdamW weight decay")
    batch_size: int = Field(
        256, ge=2, description="items per mini-batch (the other items of a batch are the negatives)"
    )
    max_epochs: int = Field(200, ge=1, description="upper limit on training epochs")
    patience: int = Field(
        20, ge=1, description="epochs without a better validation MRR before training stops"
    )
    temperature: float = Field(0.07, gt=0, description="initial InfoNCE temperature (softmax scale 1/T)")
    learn_temperature: bool = Field(
        True, description="learn the temperature with the heads (False: keep the initial one)"
    )
    noise: float = Field(0.0, ge=0, description="std of Gaussian noise added to training inputs")
    feature_dropout: float = Field(0.0, ge=0, lt=1, description="dropout rate on training inputs")
    hard_negatives: float = Field(
        0.0, ge=0, lt=1, description="share of each batch filled with nearest neighbours of other batch items"
    )


class ContrastiveParams(ProjectionParams):
    """Hyperparameters of :class:`ContrastiveAligner`."""

    hidden: int | None = Field(
        512, ge=0, description="hidden width of each modality's MLP head (None or 0: linear heads)"
    )


#: The hyperparameter class of a contrastive-family aligner.
HP = TypeVar("HP", bound=ProjectionParams, default=ContrastiveParams)


@register
class ContrastiveAligner(Aligner[HP]):
    """Per-modality projection heads + symmetric InfoNCE with a learnable temperature.

    What it learns: one small network per modality into a ``dim``-sized unit sphere, trained so that
    an item's vectors from two modalities are closer to each other than to the other items' in the
    batch. Why: that is the retrieval task itself, unlike a least-squares fit; early stopping on the
    cross-modal mean reciprocal rank of validation items (never test items) and strong weight decay
    keep the heads from memorising small catalogues.

    >>> rng = np.random.default_rng(0)
    >>> t = rng.normal(size=(300, 8)).astype(np.float32); i = np.tanh(t @ rng.normal(size=(8, 8))).astype(np.float32)
    >>> al = ContrastiveAligner(dim=16, hidden=64, max_epochs=60).fit({"text": t, "image": i}, seed=0)
    >>> from modalrec.align.metrics import mean_recall
    >>> mean_recall(al.transform("text", t), al.transform("image", i), k=10) > 0.8
    True
    """

    name = "contrastive"
    params_class: ClassVar[type[Params]] = ContrastiveParams

    # ------------------------------------------------------------------ helpers shared by subclasses
    def _standardize(self, views, masks, train) -> dict[str, np.ndarray]:
        out = {}
        for m in self.modalities:
            st = Standardizer(pca=self.hp.pca_in, l2=self.hp.l2_input).fit(views[m][train & masks[m]])
            self._state.update(st.state(f"std.{m}"))
            out[m] = st.transform(views[m])
        return out

    def _build(self, dims: dict[str, int]) -> nn.Module:
        hp = self.hp
        assert isinstance(hp, ContrastiveParams), f"{type(self).__name__} must override _build"
        return _Heads(dims, hp.dim, hp.hidden, hp.dropout, hp.temperature)

    def _loss(self, net: nn.Module, batch: dict[str, torch.Tensor], present: dict[str, torch.Tensor]):
        z = {m: net(m, x) for m, x in batch.items()}
        losses = []
        for a, b in combinations(z, 2):
            both = present[a] & present[b]
            if int(both.sum()) >= 2:
                losses.append(info_nce(z[a][both], z[b][both], scale=net.scale))  # type: ignore[arg-type]
        return torch.stack(losses).mean() if losses else None

    def _embed(self, net: nn.Module, m: str, X: np.ndarray) -> np.ndarray:
        net.eval()
        with torch.no_grad():
            return net(m, torch.as_tensor(X)).numpy()

    def _val_score(self, net, Xs, masks, val_rows) -> float:
        scores = []
        for a, b in combinations(self.modalities, 2):
            rows = val_rows[masks[a][val_rows] & masks[b][val_rows]]
            if len(rows) >= 2:
                scores.append(
                    mean_reciprocal_rank(self._embed(net, a, Xs[a][rows]), self._embed(net, b, Xs[b][rows]))
                )
        return float(np.mean(scores)) if scores else 0.0

    def _train(self, net, Xs, masks, fit_rows, val_rows, seed, progress) -> None:
        """AdamW over mini-batches of fit rows; keeps the state with the best validation score."""
        hp = self.hp
        rng = np.random.default_rng(seed)
        torch.manual_seed(seed)
        params = [q for n, q in net.named_parameters() if n != "log_scale" or hp.learn_temperature]
        opt = torch.optim.AdamW(params, lr=hp.lr, weight_decay=hp.weight_decay)
        T = {m: torch.as_tensor(X) for m, X in Xs.items()}
        M = {m: torch.as_tensor(mk) for m, mk in masks.items()}
        neigh = None
        if hp.hard_negatives > 0:
            ref = self.modalities[0]
            neigh = fit_rows[neighbour_table(Xs[ref][fit_rows], 10)]
            pos_of = {int(r): i for i, r in enumerate(fit_rows)}
        best = (-1.0, copy.deepcopy(net.state_dict()), 0)
        bad = 0
        history = []
        epochs = range(hp.max_epochs)
        if progress:
            from tqdm import tqdm

            epochs = tqdm(epochs, desc=f"{self.name} aligner", leave=False)
        for epoch in epochs:
            net.train()
            order = rng.permutation(fit_rows)
            bs = min(hp.batch_size, len(order))
            for s in range(0, len(order) - bs + 1 if len(order) >= bs else 1, bs):
                idx = order[s : s + bs]
                if neigh is not None:
                    n_hard = int(hp.hard_negatives * len(idx))
                    base = idx[: len(idx) - n_hard]
                    anchors = rng.choice(base, size=n_hard)
                    extra = neigh[[pos_of[int(a)] for a in anchors], rng.integers(0, neigh.shape[1], n_hard)]
                    idx = np.unique(np.concatenate([base, extra]))
                ti = torch.as_tensor(idx)
                batch = {}
                for m in self.modalities:
                    x = T[m][ti]
                    if hp.noise > 0:
                        x = x + hp.noise * torch.randn_like(x)
                    if hp.feature_dropout > 0:
                        x = F.dropout(x, hp.feature_dropout)
                    batch[m] = x
                loss = self._loss(net, batch, {m: M[m][ti] for m in self.modalities})
                if loss is None:
                    continue
                opt.zero_grad()
                loss.backward()
                opt.step()
            score = self._val_score(net, Xs, masks, val_rows)
            history.append(round(score, 4))
            if score > best[0]:
                best = (score, copy.deepcopy(net.state_dict()), epoch)
                bad = 0
            else:
                bad += 1
                if bad >= hp.patience:
                    break
        net.load_state_dict(best[1])
        self.meta.update(
            {
                "best_epoch": best[2],
                "valid_mrr": best[0],
                "epochs_run": len(history),
                "n_fit": len(fit_rows),
            }
        )
        self.meta["temperature"] = float(1.0 / net.scale.detach())

    # ------------------------------------------------------------------ protocol
    def _fit(
        self,
        views: dict[str, np.ndarray],
        masks: dict[str, np.ndarray],
        train: np.ndarray,
        *,
        seed: int,
        progress: bool,
    ) -> None:
        Xs = self._standardize(views, masks, train)
        fit_rows, val_rows = selection_split(train, masks, self.modalities[:2], seed=seed)
        # items with at least two modalities can train (partly paired catalogues)
        n_present = sum(masks[m].astype(int) for m in self.modalities)
        fit_rows = np.flatnonzero(train & (n_present >= 2) & ~np.isin(np.arange(len(train)), val_rows))
        torch.manual_seed(seed)
        net = self._build({m: X.shape[1] for m, X in Xs.items()})
        self._train(net, Xs, masks, fit_rows, val_rows, seed, progress)
        self._net = net
        self.meta["dim"] = self.hp.dim

    def _state_to_save(self) -> dict[str, np.ndarray]:
        out = {k: v for k, v in self._state.items() if k.startswith("std.")}
        for k, v in self._net.state_dict().items():
            out[f"net.{k}"] = v.detach().cpu().numpy()
        return out

    def _restore(self, state: dict[str, np.ndarray]) -> None:
        self._state = {k: v for k, v in state.items() if k.startswith("std.")}
        dims = {m: Standardizer.from_state(state, f"std.{m}").out_dim for m in self.modalities}
        self._net = self._build(dims)
        self._net.load_state_dict(
            {k[4:]: torch.as_tensor(v) for k, v in state.items() if k.startswith("net.")}
        )
        self._net.eval()

    def _transform(self, modality: str, X: np.ndarray) -> np.ndarray:
        Z = Standardizer.from_state(self._state, f"std.{modality}").transform(X)
        return self._embed(self._net, modality, Z)
