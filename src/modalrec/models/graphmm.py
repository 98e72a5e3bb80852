"""Multimodal graph recommender of the FREEDOM / LGMRec family, with optional self-supervision.

Item representation = LightGCN output on the user-item graph + propagation of the item ID
embeddings over frozen item-item kNN graphs built per modality from (standardised or aligned)
features, the modality graphs mixed with **learned** softmax weights (FREEDOM fixes them by hand).

Options, all off or at FREEDOM's choice by default so that ablations are one switch each:

* ``edge_keep`` < 1: FREEDOM's degree-sensitive pruning of user-item edges, re-sampled every epoch.
* ``content_bpr``: FREEDOM's auxiliary BPR on projected content (user . MLP(f_i)), which trains
  the content projections used by the SSL objectives and by ``content_residual``.
* ``ssl_weight``: cross-view InfoNCE (BM3/SLMRec style) between each item's collaborative embedding
  and its projected content, per modality, on the batch's positive items.
* ``mfm_weight``: masked-feature modelling: hide one modality of each batch item and reconstruct its
  projection from the item's other views (the other modalities and the collaborative embedding).
* ``content_residual``: add the fused projected content to the item ego embedding (VBPR inside
  the graph), which gives cold items a representation.
* ``loss``: ``"bpr"`` (one sampled negative) or ``"softmax"`` (sampled softmax over ``n_negatives``
  shared warm negatives, cosine scores / ``temperature``).
* ``cf_knn_k`` > 0 (our addition): one more item-item graph, built from the interactions alone (each
  item's top-k cosine co-occurrence neighbours, ItemKNN's similarity), mixed with the modality graphs
  by the same learned weights. On sparse catalogues ItemKNN beats LightGCN (Amazon Baby: .0829 vs
  .0779 Recall@20): this graph hands the model that neighbourhood signal without any content.
* ``user_knn_k`` > 0 (our addition, after DRAGON / MMHCL's user-user view): a user-user graph from the
  interactions alone (each user's top-k cosine co-occurrence neighbours), over which the user ID
  embeddings are propagated once and added to the users' LightGCN output, as the item-item graphs are
  added to the items'. Why: on very sparse data most users share few items with any one item's other
  users; users with overlapping histories lend each other signal the two-hop user-item paths dilute.
* ``hard_negatives`` (softmax loss, our addition): per positive, that many extra negatives drawn from
  its neighbours in the modality kNN graphs (items that *look* like the positive but that the user did
  not take; training positives of the user are masked out). Uniform negatives are mostly easy on
  large catalogues; content neighbours teach the model what, beyond content, made the user choose.

Speed: every sparse product goes through ``lightgcn.spmm`` (scipy CSR, constant graph, CSR
backward); train with ``threads=1`` on a shared machine. Scale: ``propagation="shared"`` (chosen by the default
``"auto"`` once an epoch has more than ``shared_above_batches`` mini-batches, see
:mod:`modalrec.models.embedding`) lets groups of mini-batches share one propagation, so an epoch is
linear in the interactions; every loss below gathers through ``self.rows`` and takes the
propagated vectors as arguments (:meth:`GraphMM.propagated_loss`) so a shared step can reuse them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from pydantic import Field
from torch import nn
from torch.nn import functional as F

from modalrec.core.losses import info_nce
from modalrec.models.base import register
from modalrec.models.content import (
    WarmSampler,
    degree_pruned_blocks,
    interaction_knn_graph,
    knn_graph,
    optional_modalities,
    prepared_features,
    warm_items,
)
from modalrec.models.embedding import EmbeddingRecommender, GraphTrainingParams, SamplerFactory, bpr_loss
from modalrec.models.graph_order import BandedGraph, ItemOrderCache
from modalrec.models.lightgcn import lightgcn_propagate, normalised_blocks, resolve_workers, spmm

if TYPE_CHECKING:
    from modalrec.data.dataset import Dataset


class _GraphNet(nn.Module):
    warm: torch.Tensor

    def __init__(
        self,
        n_users: int,
        n_items: int,
        dim: int,
        feats: dict[str, np.ndarray],
        masks: dict[str, np.ndarray],
        n_graphs: int | None = None,
    ):
        super().__init__()
        self.user = nn.Embedding(n_users, dim)
        self.item = nn.Embedding(n_items, dim)
        nn.init.xavier_uniform_(self.user.weight)
        nn.init.xavier_uniform_(self.item.weight)
        self.names = list(feats)
        # One logit per item-item graph: the modality graphs first, then any interaction graph.
        self.graph_logits = nn.Parameter(
            torch.zeros(max(1, len(self.names) if n_graphs is None else n_graphs))
        )
        self.proj = nn.ModuleDict(
            {
                m: nn.Sequential(nn.Linear(f.shape[1], dim), nn.LeakyReLU(0.1), nn.Linear(dim, dim))
                for m, f in feats.items()
            }
        )
        self.predictor = nn.Sequential(nn.Linear(dim, dim), nn.LeakyReLU(0.1), nn.Linear(dim, dim))
        for m, f in feats.items():
            self.register_buffer(f"x_{m}", torch.as_tensor(f), persistent=False)
            self.register_buffer(f"p_{m}", torch.as_tensor(masks[m].astype(np.float32)), persistent=False)
        self.register_buffer("warm", torch.ones(n_items), persistent=False)

    def content(self, items: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        out = {}
        for m in self.names:
            x = getattr(self, f"x_{m}")
            out[m] = self.proj[m](x if items is None else x[items])
        return out

    def presence(self, items: torch.Tensor | None = None) -> torch.Tensor:
        p = torch.stack([getattr(self, f"p_{m}") for m in self.names], dim=1)
        return p if items is None else p[items]

    def fused_content(self, items: torch.Tensor | None = None) -> torch.Tensor:
        z = self.content(items)
        w = torch.softmax(self.graph_logits[: len(self.names)], 0)[None, :] * self.presence(items)
        w = w / w.sum(1, keepdim=True).clamp_min(1e-12)
        return sum(w[:, k : k + 1] * z[m] for k, m in enumerate(self.names))  # type: ignore[return-value]


def _neighbour_table(graphs: list[Any], n_items: int) -> np.ndarray:
    """int64 [n_items, sum of k]: each item's neighbours in every modality graph, -1 padded.

    >>> import scipy.sparse as sp
    >>> g = sp.csr_matrix(np.array([[0, 1, 0], [1, 0, 0], [0, 0, 0]], np.float32))
    >>> _neighbour_table([g], 3).tolist()
    [[1], [0], [-1]]
    """
    blocks = []
    for g in graphs:
        deg = np.diff(g.indptr)
        width = int(deg.max()) if len(deg) else 0
        t = np.full((n_items, width), -1, dtype=np.int64)
        for r in np.flatnonzero(deg):
            idx = g.indices[g.indptr[r] : g.indptr[r + 1]]
            t[r, : len(idx)] = idx
        blocks.append(t)
    return np.concatenate(blocks, 1) if blocks else np.zeros((n_items, 0), dtype=np.int64)


class GraphMMParams(GraphTrainingParams):
    """GraphMM: LightGCN's settings, the item-item graphs, and the optional objectives (all off by default)."""

    modalities: list[str] | str | None = Field(
        None, description="feature modalities with an item-item graph (None = all; [] = none, pure CF)"
    )
    n_layers: int = Field(2, ge=0, description="propagation layers over the user-item graph")
    ii_layers: int = Field(1, ge=0, description="propagation layers over each item-item graph")
    knn_k: int = Field(10, ge=1, description="neighbours per item in each modality's kNN graph")
    cf_knn_k: int = Field(
        0, ge=0, description="neighbours per item in an extra interaction (co-occurrence) graph; 0 = none"
    )
    user_knn_k: int = Field(
        0, ge=0, description="neighbours per user in a user-user co-occurrence graph; 0 = none"
    )
    edge_keep: float = Field(
        1.0, gt=0, le=1, description="share of user-item edges kept per epoch (FREEDOM pruning; 1 = all)"
    )
    content_bpr: float = Field(0.0, ge=0, description="weight of the auxiliary BPR on projected content")
    ssl_weight: float = Field(
        0.0, ge=0, description="weight of the cross-view InfoNCE (collaborative vs content)"
    )
    ssl_temperature: float = Field(0.2, gt=0, description="temperature of the cross-view InfoNCE")
    mfm_weight: float = Field(
        0.0, ge=0, description="weight of masked-feature modelling (predict a hidden view)"
    )
    content_residual: bool = Field(
        False, description="add fused projected content to the item embedding (gives cold items one)"
    )
    loss: Literal["bpr", "softmax"] = Field(
        "bpr", description="bpr: one sampled negative; softmax: sampled softmax on cosine scores"
    )
    n_negatives: int = Field(256, ge=1, description="shared warm negatives per batch (softmax loss)")
    hard_negatives: int = Field(
        0, ge=0, description="extra negatives per positive from its content neighbours (softmax loss)"
    )
    temperature: float = Field(0.2, gt=0, description="temperature of the sampled softmax")


@register
class GraphMM(EmbeddingRecommender[GraphMMParams]):
    """Multimodal graph recommender: LightGCN plus a learned mix of frozen item-item kNN graphs.

    Why: content similarity (one kNN graph per modality, FREEDOM/LGMRec style) links items users have
    not yet connected, while the user-item graph keeps the collaborative signal; learned graph weights
    say which modality helps. Optional objectives (content BPR, cross-view InfoNCE, masked-feature
    modelling, sampled softmax with content-hard negatives) are each one switch for ablations.
    """

    name = "graphmm"
    params_class = GraphMMParams
    uses_features = True
    net: _GraphNet

    # ------------------------------------------------------------------ graph
    def build(self, dataset: Dataset) -> nn.Module:
        self._train_matrix = dataset.train
        self._mods = optional_modalities(dataset, self.hp.modalities)
        feats, masks = prepared_features(dataset, self._mods)
        self._ii = {m: knn_graph(feats[m], masks[m], self.hp.knn_k) for m in self._mods}
        self._graphs = list(self._mods)
        if self.hp.cf_knn_k > 0:
            self._ii["interactions"] = interaction_knn_graph(dataset.train, self.hp.cf_knn_k)
            self._graphs.append("interactions")
        self._ii_t = {m: g.T.tocsr() for m, g in self._ii.items()}
        uu = (
            interaction_knn_graph(dataset.train.T.tocsr(), self.hp.user_knn_k) if self.hp.user_knn_k else None
        )
        self._uu = (uu, uu.T.tocsr()) if uu is not None else None  # graph and its transpose, as spmm takes
        self._r, self._r_t = normalised_blocks(dataset.train)
        self._item_order = ItemOrderCache(self.hp.item_order)
        self._banded: dict[str, BandedGraph] = {}
        self._neighbours = _neighbour_table([self._ii[m] for m in self._mods], dataset.n_items)
        tr = dataset.train.tocoo()
        self._train_keys = np.sort(tr.row.astype(np.int64) * dataset.n_items + tr.col.astype(np.int64))
        net = _GraphNet(dataset.n_users, dataset.n_items, self.hp.dim, feats, masks, len(self._graphs))
        self._warm_idx = warm_items(dataset.train)
        warm = np.zeros(dataset.n_items, np.float32)
        warm[self._warm_idx] = 1.0
        net.warm.copy_(torch.as_tensor(warm))
        return net

    def start_epoch(self, epoch: int) -> None:
        """Re-sample the degree-sensitive pruned user-item graph (FREEDOM) once per epoch."""
        keep = self.hp.edge_keep
        if keep < 1.0:
            self._r, self._r_t = degree_pruned_blocks(self._train_matrix, keep, self._rng)

    def end_training(self) -> None:
        """Score with the full (unpruned) graph, as FREEDOM does at inference."""
        self._r, self._r_t = normalised_blocks(self._train_matrix)

    def modality_weights(self) -> dict[str, float]:
        w = torch.softmax(self.net.graph_logits.detach(), 0).numpy()
        return {m: float(w[k]) for k, m in enumerate(self._graphs)}

    def item_ego(self) -> torch.Tensor:
        net = self.net
        ego = net.item.weight * net.warm[:, None]
        if self.hp.content_residual and self._mods:
            ego = ego + net.fused_content()
        return ego

    def propagate(self) -> tuple[torch.Tensor, torch.Tensor]:
        net = self.net
        ego = self.item_ego()
        workers = resolve_workers(self.hp.threads)
        fused = self.shares_propagation()
        u, i = lightgcn_propagate(
            self._r,
            self._r_t,
            net.user.weight,
            ego,
            self.hp.n_layers,
            workers,
            fused=fused,
            ordered=self._item_order.blocks(self._r, self._r_t) if fused else None,
        )
        if self._graphs:
            w = torch.softmax(net.graph_logits, 0)
            h = torch.zeros_like(i)
            for k, m in enumerate(self._graphs):
                h = h + w[k] * self._item_graph(m, ego, workers, local=fused)
            i = i + h
        if self._uu is not None:
            u = u + spmm(*self._uu, net.user.weight, workers)
        if self.hp.loss == "softmax":
            # Trained on cosine scores: score on cosine too (the stored vectors are unit length).
            u, i = F.normalize(u, dim=1), F.normalize(i, dim=1)
        return u, i

    def _item_graph(self, m: str, x: torch.Tensor, workers: int, *, local: bool) -> torch.Tensor:
        """``ii_layers`` products of item-item graph ``m`` with ``x``. With ``local`` (the shared path,
        unless ``item_order="given"``) they run in the graph's reverse Cuthill-McKee order
        (:class:`~modalrec.models.graph_order.BandedGraph`: the same sums, read from nearby rows) and
        the result comes back in the given order."""
        if not local or self.hp.item_order == "given":
            for _ in range(self.hp.ii_layers):
                x = spmm(self._ii[m], self._ii_t[m], x, workers)
            return x
        if m not in self._banded:
            self._banded[m] = BandedGraph.of(self._ii[m], self._ii_t[m])
        b = self._banded[m]
        x = x.index_select(0, torch.from_numpy(b.order))
        for _ in range(self.hp.ii_layers):
            x = spmm(b.g, b.g_t, x, workers)
        return x.index_select(0, torch.from_numpy(b.inverse))

    # ------------------------------------------------------------------ losses
    def propagated_loss(
        self,
        u_all: torch.Tensor,
        i_all: torch.Tensor,
        users: torch.Tensor,
        pos: torch.Tensor,
        neg: torch.Tensor,
    ) -> torch.Tensor:
        """The mini-batch's loss given the propagated vectors: main loss, L2 on ego rows, options."""
        net = self.net
        u, p = self.rows(u_all, users), self.rows(i_all, pos)
        n_b = len(users)
        if self.hp.loss == "softmax":
            loss = self._softmax_loss(u, p, i_all, pos, users)
        else:
            loss = bpr_loss((u * p).sum(1), (u * self.rows(i_all, neg)).sum(1))
        ego_i = net.item.weight
        reg = (
            self.rows(net.user.weight, users).pow(2).sum()
            + self.rows(ego_i, pos).pow(2).sum()
            + self.rows(ego_i, neg).pow(2).sum()
        ) / 2
        loss = loss + self.hp.reg * reg / n_b
        if not self._mods:
            return loss
        if not (self.hp.content_bpr or self.hp.ssl_weight or self.hp.mfm_weight):
            return loss
        both = torch.cat([pos, neg])
        z = net.content(both)
        pres = net.presence(both)
        if self.hp.content_bpr:
            loss = self._add_content_bpr(loss, u, z, pres)
        # SSL on the distinct positive items of the batch (duplicates would be false negatives).
        uniq, first = np.unique(pos.numpy(), return_index=True)
        idx = torch.as_tensor(first)
        if self.hp.ssl_weight:
            loss = self._add_cross_view_ssl(loss, self.rows(i_all, torch.as_tensor(uniq)), z, pres, idx)
        if self.hp.mfm_weight:
            cf = self.rows(i_all, torch.as_tensor(uniq))
            loss = loss + self.hp.mfm_weight * self._mfm_loss(z, pres, idx, cf)
        return loss

    def _add_content_bpr(
        self, loss: torch.Tensor, u: torch.Tensor, z: dict[str, torch.Tensor], pres: torch.Tensor
    ) -> torch.Tensor:
        """``loss`` plus FREEDOM's BPR on projected content, per modality, on pairs where both items have it
        (``z``/``pres`` rows: the batch's positives, then its negatives)."""
        n_b = len(u)
        uu = torch.cat([u, u])
        for k, m in enumerate(self._mods):
            s = (uu * z[m]).sum(1)
            ok = (pres[:n_b, k] * pres[n_b:, k]) > 0
            if ok.any():
                loss = loss + self.hp.content_bpr * bpr_loss(s[:n_b][ok], s[n_b:][ok])
        return loss

    def _add_cross_view_ssl(
        self,
        loss: torch.Tensor,
        cf: torch.Tensor,
        z: dict[str, torch.Tensor],
        pres: torch.Tensor,
        idx: torch.Tensor,
    ) -> torch.Tensor:
        """``loss`` plus InfoNCE between each distinct positive's collaborative embedding (``cf``) and
        its projected content (rows ``idx`` of ``z``), per modality the items have."""
        for k, m in enumerate(self._mods):
            ok = pres[idx, k] > 0
            if int(ok.sum()) > 1:
                loss = loss + self.hp.ssl_weight * info_nce(
                    F.normalize(cf[ok], dim=1),
                    F.normalize(z[m][idx][ok], dim=1),
                    temperature=self.hp.ssl_temperature,
                )
        return loss

    def _softmax_loss(
        self, u: torch.Tensor, p: torch.Tensor, i_all: torch.Tensor, pos: torch.Tensor, users: torch.Tensor
    ) -> torch.Tensor:
        """Sampled softmax with cosine scores: positives vs shared warm negatives (+ content-hard ones)."""
        n_neg = self.hp.n_negatives
        negs = torch.as_tensor(self._warm_idx[self._rng.integers(0, len(self._warm_idx), size=n_neg)])
        un = F.normalize(u, dim=1)
        pn = F.normalize(p, dim=1)
        nn_ = F.normalize(self.rows(i_all, negs), dim=1)
        tau = self.hp.temperature
        pos_logit = (un * pn).sum(1, keepdim=True) / tau
        neg_logit = un @ nn_.T / tau
        # Drop sampled "negatives" that are the positive itself.
        neg_logit = neg_logit.masked_fill(negs[None, :] == pos[:, None], float("-inf"))
        parts = [pos_logit, neg_logit]
        n_hard = self.hp.hard_negatives
        if n_hard and self._neighbours.shape[1]:
            hard, ok = self._hard_negatives(users.numpy(), pos.numpy(), n_hard)
            h = torch.as_tensor(hard)
            hn = F.normalize(self.rows(i_all, h.reshape(-1)), dim=1).reshape(len(u), n_hard, -1)
            hard_logit = (un[:, None, :] * hn).sum(-1) / tau
            parts.append(hard_logit.masked_fill(~torch.as_tensor(ok), float("-inf")))
        logits = torch.cat(parts, 1)
        return F.cross_entropy(logits, torch.zeros(len(u), dtype=torch.long))

    def _hard_negatives(self, users: np.ndarray, pos: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """``n`` random modality-graph neighbours of each positive; ``ok`` is False for padding,
        cold items and the user's own training positives (they are not negatives)."""
        table = self._neighbours
        cols = self._rng.integers(0, table.shape[1], size=(len(pos), n))
        cand = table[pos[:, None], cols]
        ok = cand >= 0
        cand = np.where(ok, cand, 0)
        ok &= self.net.warm.numpy()[cand] > 0
        keys = users[:, None].astype(np.int64) * self.n_items + cand
        j = np.minimum(np.searchsorted(self._train_keys, keys), len(self._train_keys) - 1)
        ok &= self._train_keys[j] != keys
        return cand.astype(np.int64), ok

    def _mfm_loss(
        self, z: dict[str, torch.Tensor], pres: torch.Tensor, idx: torch.Tensor, cf: torch.Tensor
    ) -> torch.Tensor:
        """Hide modality m, predict its projection from the item's other views (cosine distance)."""
        total = torch.zeros(())
        for k, m in enumerate(self._mods):
            ok = pres[idx, k] > 0
            if not ok.any():
                continue
            ctx = cf.detach().clone()[ok]
            count = torch.ones(int(ok.sum()), 1)
            for j, o in enumerate(self._mods):
                if j != k:
                    pj = pres[idx, j][ok][:, None]
                    ctx = ctx + pj * z[o][idx][ok]
                    count = count + pj
            pred = self.net.predictor(ctx / count)
            target = z[m][idx][ok].detach()
            total = total + (1 - F.cosine_similarity(pred, target, dim=1)).mean()
        return total / len(self._mods)

    # ------------------------------------------------------------------ protocol
    def _train(self, dataset: Dataset, *, progress: bool) -> None:
        self.train_bpr(dataset, progress=progress, sampler=self.triplet_sampler())
        self.describe_training()

    def triplet_sampler(self) -> SamplerFactory:
        """Negatives among warm items only (cold items have no interactions to learn from)."""
        return WarmSampler

    def describe_training(self) -> None:
        """Which modalities were used and their learned graph weights."""
        self.meta["modalities"] = list(self._mods)
        self.meta["modality_weights"] = self.modality_weights()
