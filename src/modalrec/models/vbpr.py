"""VBPR (He & McAuley, AAAI 2016), generalised to any number of item modalities.

score(u, i) = <p_u, q_i> + <theta_u, c_i> + b_i + <beta', f_i>, with the content vector
c_i = sum_m a_m * present_im * E_m f_im / sum_m a_m * present_im, i.e. one projection ``E_m`` per
modality and learned modality weights ``a = softmax(w)`` renormalised over the modalities an item
actually has. Why not one projection of the concatenated features (Cornac's VBPR): a missing
modality would then contribute a block of zeros, which the projection maps to a constant offset, so
items with missing posters would all drift the same way. Here a missing modality is left out.

Cold items (no training interaction) keep only their content part: their free factors and bias
are zeroed after training (they were never updated), and negatives are drawn from warm items
only (see :class:`~modalrec.models.content.WarmSampler`).

The final user/item vectors are stored as ``[p_u, theta_u, 1]`` and ``[q_i, c_i, b_i + beta'f_i]``
so that scoring is one dot product (the :class:`EmbeddingRecommender` machinery: save, load, serve).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from pydantic import Field
from torch import nn

from modalrec.core.errors import DataError
from modalrec.models.base import register
from modalrec.models.content import WarmSampler, prepared_features, select_modalities, warm_items
from modalrec.models.embedding import EmbeddingParams, EmbeddingRecommender, bpr_loss

if TYPE_CHECKING:
    from modalrec.data.dataset import Dataset


class ContentEncoder(nn.Module):
    """Mask-aware multi-modality projection: per-modality linear maps, presence-weighted mean.

    Returns ``(content [n, out], bias [n])`` where the bias is VBPR's beta' f term.
    """

    def __init__(
        self, feats: dict[str, np.ndarray], masks: dict[str, np.ndarray], out: int, hidden: int = 0
    ) -> None:
        super().__init__()
        self.names = list(feats)
        self.proj = nn.ModuleDict()
        for m, f in feats.items():
            d = f.shape[1]
            if hidden:
                layer: nn.Module = nn.Sequential(
                    nn.Linear(d, hidden), nn.LeakyReLU(0.1), nn.Linear(hidden, out + 1)
                )
            else:
                layer = nn.Linear(d, out + 1, bias=False)
            self.proj[m] = layer
            self.register_buffer(f"x_{m}", torch.as_tensor(f), persistent=False)
            self.register_buffer(f"p_{m}", torch.as_tensor(masks[m].astype(np.float32)), persistent=False)
        self.logits = nn.Parameter(torch.zeros(len(self.names)))
        for lin in self.modules():
            if isinstance(lin, nn.Linear):
                nn.init.normal_(lin.weight, std=0.01)
                if lin.bias is not None:
                    nn.init.zeros_(lin.bias)

    def per_modality(self, items: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Projected features per modality ([n, out+1]) for ``items`` (default: all)."""
        out = {}
        for m in self.names:
            x = getattr(self, f"x_{m}")
            out[m] = self.proj[m](x if items is None else x[items])
        return out

    def presence(self, items: torch.Tensor | None = None) -> torch.Tensor:
        p = torch.stack([getattr(self, f"p_{m}") for m in self.names], dim=1)
        return p if items is None else p[items]

    def weights(self) -> torch.Tensor:
        return torch.softmax(self.logits, 0)

    def forward(self, items: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.per_modality(items)
        w = self.weights()[None, :] * self.presence(items)  # [n, M]
        w = w / w.sum(1, keepdim=True).clamp_min(1e-12)
        fused = sum(w[:, k : k + 1] * z[m] for k, m in enumerate(self.names))
        assert isinstance(fused, torch.Tensor)
        return fused[:, :-1], fused[:, -1]


class _VBPRNet(nn.Module):
    warm: torch.Tensor

    def __init__(self, n_users: int, n_items: int, dim: int, content_dim: int, enc: ContentEncoder) -> None:
        super().__init__()
        self.user = nn.Embedding(n_users, dim)
        self.item = nn.Embedding(n_items, dim)
        self.theta = nn.Embedding(n_users, content_dim)
        self.bias = nn.Embedding(n_items, 1)
        for e in (self.user, self.item, self.theta):
            nn.init.xavier_uniform_(e.weight)
        nn.init.zeros_(self.bias.weight)
        self.content = enc
        self.register_buffer("warm", torch.ones(n_items), persistent=False)


class VBPRParams(EmbeddingParams):
    """VBPR: the latent-factor settings (smaller free factors, faster steps) plus the content part."""

    dim: int = Field(32, ge=1, description="size of the free user and item factors (p_u, q_i)")
    lr: float = Field(0.005, gt=0, description="Adam learning rate")
    reg: float = Field(
        1e-3, ge=0, description="L2 weight on the batch's factors, content user vectors and biases"
    )
    content_dim: int = Field(32, ge=1, description="size of the content part (theta_u and the projected c_i)")
    content_hidden: int = Field(
        0, ge=0, description="hidden units of the content projection (0 = linear, as in the paper)"
    )
    content_reg: float = Field(1e-5, ge=0, description="L2 weight on the content projections")
    modalities: list[str] | str | None = Field(None, description="feature modalities to use (None = all)")


@register
class VBPR(EmbeddingRecommender[VBPRParams]):
    """Content-aware BPR (He & McAuley 2016): free factors plus a learned projection of item content.

    Why: the content part scores items that have content but few or no interactions, and the learned
    modality weights (renormalised over the modalities an item has) say which content helps.
    """

    name = "vbpr"
    params_class = VBPRParams
    uses_features = True
    net: _VBPRNet

    def build(self, dataset: Dataset) -> nn.Module:
        self._mods = select_modalities(dataset, self.hp.modalities)
        if not self._mods:
            raise DataError(
                "VBPR needs item features; the dataset has none (encode them first: modalrec encode)",
                field="modalities",
            )
        feats, masks = prepared_features(dataset, self._mods)
        enc = ContentEncoder(feats, masks, self.hp.content_dim, self.hp.content_hidden)
        net = _VBPRNet(dataset.n_users, dataset.n_items, self.hp.dim, self.hp.content_dim, enc)
        warm = np.zeros(dataset.n_items, np.float32)
        warm[warm_items(dataset.train)] = 1.0
        net.warm.copy_(torch.as_tensor(warm))
        return net

    def propagate(self) -> tuple[torch.Tensor, torch.Tensor]:
        net = self.net
        c, cb = net.content()
        warm = net.warm[:, None]
        ones = torch.ones(net.user.weight.shape[0], 1)
        users = torch.cat([net.user.weight, net.theta.weight, ones], 1)
        items = torch.cat([net.item.weight * warm, c, net.bias.weight * warm + cb[:, None]], 1)
        return users, items

    def batch_loss(self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        net = self.net
        both = torch.cat([pos, neg])
        c, cb = net.content(both)
        u, t = net.user(users), net.theta(users)
        q, b = net.item(both), net.bias(both).squeeze(1)
        s = (torch.cat([u, u]) * q).sum(1) + (torch.cat([t, t]) * c).sum(1) + b + cb
        n = len(users)
        loss = bpr_loss(s[:n], s[n:])
        reg = (u.pow(2).sum() + t.pow(2).sum() + q.pow(2).sum() + b.pow(2).sum()) / 2
        creg = sum(p.pow(2).sum() for name, p in net.content.named_parameters() if name.endswith("weight"))
        return loss + self.hp.reg * reg / n + self.hp.content_reg * creg

    def _train(self, dataset: Dataset, *, progress: bool) -> None:
        self.train_bpr(dataset, progress=progress, sampler=WarmSampler)
        with torch.no_grad():
            w = self.net.content.weights().numpy()
        self.meta["modalities"] = list(self._mods)
        self.meta["modality_weights"] = {m: float(w[k]) for k, m in enumerate(self._mods)}
