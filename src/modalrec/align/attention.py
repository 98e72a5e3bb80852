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
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from modalrec.align.base import Standardizer, register
from modalrec.align.contrastive import ContrastiveAligner
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


@register
class CrossAttentionAligner(ContrastiveAligner):
    """Tokenised modalities, shared self-attention, multi-head cross-attention for the joint vector.

    Extra hyperparameters: ``n_tokens`` (tokens per modality), ``heads`` (attention heads),
    ``joint_weight`` (weight of the joint-vs-single InfoNCE terms).
    """

    name = "cross_attention"

    @classmethod
    def default_params(cls) -> dict[str, Any]:
        p = super().default_params()
        p.pop("hidden")
        return {**p, "dim": 64, "n_tokens": 4, "heads": 4, "joint_weight": 0.5}

    def _build(self, dims):
        p = self.params
        return _AttnNet(dims, p["dim"], p["n_tokens"], p["heads"], p["dropout"], p["temperature"])

    def _loss(self, net, batch, present):
        z = {m: net(m, x) for m, x in batch.items()}
        losses = []
        for a, b in combinations(z, 2):
            both = present[a] & present[b]
            if int(both.sum()) < 2:
                continue
            losses.append(info_nce(z[a][both], z[b][both], scale=net.scale))
            j = net.joint(a, batch[a][both], b, batch[b][both])
            w = self.params["joint_weight"]
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
        self._net.eval()
        with torch.no_grad():
            for a, b in combinations(mods, 2):
                rows = np.flatnonzero(mk[a] & mk[b])
                if len(rows):
                    r = torch.as_tensor(rows)
                    acc[rows] += self._net.joint(a, Xs[a][r], b, Xs[b][r]).numpy()
                    cnt[rows] += 1
            for m in mods:
                rows = np.flatnonzero(mk[m] & (cnt == 0))
                if len(rows):
                    acc[rows] += self._net(m, Xs[m][torch.as_tensor(rows)]).numpy()
                    cnt[rows] += 1
        # rows with several pairs are averaged; the average of unit vectors is re-normalised
        acc /= np.maximum(cnt, 1)[:, None]
        norms = np.linalg.norm(acc, axis=1, keepdims=True)
        return np.where(norms > 0, acc / np.maximum(norms, 1e-12), 0.0).astype(np.float32)
