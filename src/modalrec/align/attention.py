"""Cross-modal attention: one modality's tokens query another's, producing a joint item vector.

Why: a single vector per modality forces each modality to summarise itself before it knows what the
other modality says. Here every modality is cut into ``n_tokens`` learned tokens; a shared self-
attention layer turns them into a single-modality embedding (so ``transform(modality, X)`` and cross-
modal retrieval still work), and multi-head cross-attention (queries from modality A, keys/values
from modality B, and back) produces :meth:`CrossAttentionAligner.joint`, an item vector that reads
both. Training: symmetric InfoNCE between single-modality embeddings, plus InfoNCE between the joint
vector and each single-modality embedding so that all of them live in one space.
"""

from __future__ import annotations

import math
from itertools import combinations
from typing import Self

import numpy as np
import torch
from pydantic import Field, model_validator
from torch import nn
from torch.nn import functional as F

from modalrec.align.base import Standardizer, register
from modalrec.align.contrastive import ContrastiveAligner, ProjectionParams
from modalrec.core.losses import info_nce


class _AttnNet(nn.Module):
    def __init__(
        self, dims: dict[str, int], dim: int, n_tokens: int, heads: int, dropout: float, temperature: float
    ):
        super().__init__()
        self.n_tokens, self.dim = n_tokens, dim
        self.names = list(dims)
        self.tok = nn.ModuleDict({m: nn.Linear(d, n_tokens * dim) for m, d in dims.items()})
        self.mod_emb = nn.Parameter(torch.zeros(len(dims), dim))
        self.self_attn = nn.TransformerEncoderLayer(
            dim, heads, dim_feedforward=2 * dim, dropout=dropout, batch_first=True, norm_first=True
        )
        self.cross = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
        self.norm = nn.LayerNorm(dim)
        self.out = nn.Linear(dim, dim)
        self.log_scale = nn.Parameter(torch.tensor(math.log(1.0 / temperature)))

    @property
    def scale(self) -> torch.Tensor:
        return self.log_scale.clamp(max=math.log(100.0)).exp()

    def tokens(self, m: str, x: torch.Tensor) -> torch.Tensor:
        t = self.tok[m](x).view(len(x), self.n_tokens, self.dim) + self.mod_emb[self.names.index(m)]
        return self.self_attn(t)

    def forward(self, m: str, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.out(self.tokens(m, x).mean(dim=1)), dim=-1)

    def joint(self, a: str, xa: torch.Tensor, b: str, xb: torch.Tensor) -> torch.Tensor:
        ta, tb = self.tokens(a, xa), self.tokens(b, xb)
        ab, _ = self.cross(ta, tb, tb)  # A queries B
        ba, _ = self.cross(tb, ta, ta)  # B queries A
        pooled = self.norm(torch.cat([ta + ab, tb + ba], dim=1)).mean(dim=1)
        return F.normalize(self.out(pooled), dim=-1)


class CrossAttentionParams(ProjectionParams):
    """Hyperparameters of :class:`CrossAttentionAligner` (the contrastive ones without ``hidden``)."""

    dim: int = Field(64, ge=1, description="size k of the shared space and of every token")
    n_tokens: int = Field(4, ge=1, description="learned tokens each modality's features are cut into")
    heads: int = Field(4, ge=1, description="attention heads (dim must be a multiple of heads)")
    joint_weight: float = Field(
        0.5, ge=0, description="weight of the joint-vector-vs-single-modality InfoNCE terms"
    )

    @model_validator(mode="after")
    def _heads_divide_dim(self) -> Self:
        if self.dim % self.heads:
            raise ValueError(f"dim ({self.dim}) must be a multiple of heads ({self.heads})")
        return self


@register
class CrossAttentionAligner(ContrastiveAligner[CrossAttentionParams]):
    """Tokenised modalities, shared self-attention, multi-head cross-attention for the joint vector.

    What it learns: per modality a map of its features to ``n_tokens`` tokens, one self-attention
    layer shared by all modalities (giving each modality's own embedding, so ``transform`` and
    cross-modal retrieval work as for any aligner) and a cross-attention layer whose output,
    :meth:`joint`, is an item vector that reads two modalities at once. Why: one vector per modality
    forces each modality to summarise itself before it knows what the other one says; the joint vector
    is trained into the same space by InfoNCE against each single-modality embedding.
    """

    name = "cross_attention"
    params_class = CrossAttentionParams

    def _build(self, dims):
        hp = self.hp
        return _AttnNet(dims, hp.dim, hp.n_tokens, hp.heads, hp.dropout, hp.temperature)

    def _loss(self, net, batch, present):
        z = {m: net(m, x) for m, x in batch.items()}
        losses = []
        for a, b in combinations(z, 2):
            both = present[a] & present[b]
            if int(both.sum()) < 2:
                continue
            losses.append(info_nce(z[a][both], z[b][both], scale=net.scale))
            j = net.joint(a, batch[a][both], b, batch[b][both])
            w = self.hp.joint_weight
            losses.append(
                w
                * 0.5
                * (info_nce(j, z[a][both], scale=net.scale) + info_nce(j, z[b][both], scale=net.scale))
            )
        return torch.stack(losses).sum() / max(1, len(losses) // 2) if losses else None

    def joint(self, views: dict[str, np.ndarray], masks: dict[str, np.ndarray] | None = None) -> np.ndarray:
        """Joint item vectors ``[n, k]``: cross-attention over every present pair of modalities,
        averaged; items with one modality get that modality's embedding; items with none get zeros."""
        mods = [m for m in self.modalities if m in views]
        n = len(next(iter(views.values())))
        mk = {
            m: np.ones(n, bool) if masks is None or m not in masks else np.asarray(masks[m], bool)
            for m in mods
        }
        Xs = {
            m: torch.as_tensor(Standardizer.from_state(self._state, f"std.{m}").transform(views[m]))
            for m in mods
        }
        acc = np.zeros((n, self.dim), dtype=np.float32)
        cnt = np.zeros(n, dtype=np.float32)
        net = self._net
        assert isinstance(net, _AttnNet), "joint() needs a fitted cross-attention network"
        net.eval()
        with torch.no_grad():
            for a, b in combinations(mods, 2):
                rows = np.flatnonzero(mk[a] & mk[b])
                if len(rows):
                    r = torch.as_tensor(rows)
                    acc[rows] += net.joint(a, Xs[a][r], b, Xs[b][r]).numpy()
                    cnt[rows] += 1
            for m in mods:
                rows = np.flatnonzero(mk[m] & (cnt == 0))
                if len(rows):
                    acc[rows] += net(m, Xs[m][torch.as_tensor(rows)]).numpy()
                    cnt[rows] += 1
        # rows with several pairs are averaged; the average of unit vectors is re-normalised
        acc /= np.maximum(cnt, 1)[:, None]
        norms = np.linalg.norm(acc, axis=1, keepdims=True)
        return np.where(norms > 0, acc / np.maximum(norms, 1e-12), 0.0).astype(np.float32)
