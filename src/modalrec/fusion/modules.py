"""Fusion modules: combine per-modality item vectors into one item vector, aware of missing modalities.

Why mask-aware: zero-filling a missing poster makes the item look like "an item whose poster is the
average poster" only if features are centred, and in general drags it towards the origin, so items
with fewer modalities get systematically lower scores. Here a missing modality is *left out* and the
remaining ones are re-weighted (weights renormalised over the present modalities); optionally
(``impute=True``) a missing modality is filled with the mean of the item's present modalities in the
aligned space -- which only makes sense after alignment, when all modalities share one space.

Every module takes ``z: {modality: Tensor [B, d_m]}`` and ``mask: {modality: bool Tensor [B]}`` and
returns ``[B, out_dim]``. Inputs are first projected to a common size ``dim`` (a learned linear map,
or the identity when the input already has that size and ``project=False``) and L2-normalised, so
that learned modality weights are not confounded with feature scale and can be reported.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn
from torch.nn import functional as F

from modalrec.core.registry import Registry

FUSIONS: Registry[type[Fusion]] = Registry("fusion", populate="modalrec.fusion")


def register_fusion(cls: type[Fusion]) -> type[Fusion]:
    """Class decorator: make a fusion module available by its ``name``."""
    return FUSIONS.register(cls.name)(cls)


def create_fusion(name: str, dims: dict[str, int], **params: Any) -> Fusion:
    """Build a fusion module by name for inputs of the given per-modality sizes.

    >>> f = create_fusion("weighted_sum", {"text": 4, "image": 6}, dim=3)
    >>> f({"text": torch.ones(2, 4), "image": torch.ones(2, 6)}).shape
    torch.Size([2, 3])
    """
    return FUSIONS.get_or_raise(name)(dims, **params)


def masked_softmax(logits: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """Softmax over the last axis restricted to present entries; rows with nothing present give zeros.

    >>> masked_softmax(torch.zeros(1, 3), torch.tensor([[True, False, True]])).tolist()
    [[0.5, 0.0, 0.5]]
    """
    logits = logits.masked_fill(~present, float("-inf"))
    w = torch.softmax(logits, dim=-1)
    return torch.nan_to_num(w, nan=0.0)


class Fusion(nn.Module):
    """Base: projection + normalisation + mask handling; subclasses implement :meth:`combine`."""

    name: ClassVar[str] = "base"

    def __init__(
        self, dims: dict[str, int], dim: int | None = None, project: bool = True, impute: bool = False
    ):
        super().__init__()
        self.modalities = list(dims)
        self.dims = dict(dims)
        self.dim = int(dim if dim is not None else max(dims.values()))
        self.impute = impute
        same = all(d == self.dim for d in dims.values())
        self.project = project or not same
        self.proj = nn.ModuleDict(
            {
                m: nn.Linear(d, self.dim, bias=False) if self.project else nn.Identity()
                for m, d in dims.items()
            }
        )
        self.config = {"dims": self.dims, "dim": self.dim, "project": project, "impute": impute}

    @property
    def out_dim(self) -> int:
        return self.dim

    def prepare(
        self, z: dict[str, torch.Tensor], mask: dict[str, torch.Tensor] | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Stacked normalised inputs [B, M, dim] and presence [B, M] (imputed entries count as present)."""
        B = len(next(iter(z.values())))
        xs, ps = [], []
        for m in self.modalities:
            if m in z:
                xs.append(F.normalize(self.proj[m](z[m].float()), dim=-1))
                p = mask[m] if mask is not None and m in mask else torch.ones(B, dtype=torch.bool)
            else:
                xs.append(torch.zeros(B, self.dim))
                p = torch.zeros(B, dtype=torch.bool)
            ps.append(p.bool())
        X = torch.stack(xs, dim=1)
        P = torch.stack(ps, dim=1)
        X = X * P.unsqueeze(-1)
        if self.impute:
            cnt = P.sum(dim=1, keepdim=True).clamp(min=1).unsqueeze(-1)
            mean = F.normalize(X.sum(dim=1, keepdim=True) / cnt, dim=-1)
            any_present = P.any(dim=1, keepdim=True)
            X = torch.where(P.unsqueeze(-1), X, mean.expand_as(X))
            P = P | any_present
        return X, P

    def forward(
        self, z: dict[str, torch.Tensor], mask: dict[str, torch.Tensor] | None = None
    ) -> torch.Tensor:
        X, P = self.prepare(z, mask)
        return self.combine(X, P)

    def combine(self, X: torch.Tensor, P: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def modality_weights(
        self, z: dict[str, torch.Tensor] | None = None, mask: dict[str, torch.Tensor] | None = None
    ) -> dict[str, float]:
        """Mean weight each modality receives (over the given items for input-dependent fusions)."""
        raise NotImplementedError


@register_fusion
class ConcatFusion(Fusion):
    """Concatenation of the normalised blocks; present blocks are scaled by ``1/sqrt(#present)`` so
    every item vector has unit norm whatever is missing (cosine scores stay comparable)."""

    name = "concat"

    @property
    def out_dim(self) -> int:
        return self.dim * len(self.modalities)

    def combine(self, X, P):
        n = P.sum(dim=1, keepdim=True).clamp(min=1).float()
        return (X / n.sqrt().unsqueeze(-1)).flatten(1)

    def modality_weights(self, z=None, mask=None):
        return {m: 1.0 / len(self.modalities) for m in self.modalities}


@register_fusion
class WeightedSumFusion(Fusion):
    """``z = f(sum_m w_m x_m / sum_{m present} w_m)`` with learned global weights ``w = softmax(a)``.

    The weights are the report: which modality the task relies on. ``activation`` is ``"none"`` or
    ``"tanh"``.
    """

    name = "weighted_sum"

    def __init__(self, dims, dim=None, project=True, impute=False, activation: str = "none"):
        super().__init__(dims, dim, project, impute)
        self.logits = nn.Parameter(torch.zeros(len(self.modalities)))
        self.activation = activation
        self.config["activation"] = activation

    def combine(self, X, P):
        w = masked_softmax(self.logits.expand(P.shape), P)
        out = (w.unsqueeze(-1) * X).sum(dim=1)
        return torch.tanh(out) if self.activation == "tanh" else out

    def modality_weights(self, z=None, mask=None):
        w = torch.softmax(self.logits.detach(), dim=0)
        return {m: float(w[i]) for i, m in enumerate(self.modalities)}


@register_fusion
class AttentionFusion(Fusion):
    """Item-dependent weights: ``alpha_m = softmax_m(q . tanh(W x_m + b))`` over present modalities."""

    name = "attention"

    def __init__(self, dims, dim=None, project=True, impute=False, hidden: int = 64):
        super().__init__(dims, dim, project, impute)
        self.key = nn.Linear(self.dim, hidden)
        self.query = nn.Parameter(torch.zeros(hidden))
        self.mod_bias = nn.Parameter(torch.zeros(len(self.modalities)))
        self.config["hidden"] = hidden

    def attention(self, X, P):
        logits = torch.tanh(self.key(X)) @ self.query + self.mod_bias
        return masked_softmax(logits, P)

    def combine(self, X, P):
        return (self.attention(X, P).unsqueeze(-1) * X).sum(dim=1)

    def modality_weights(self, z=None, mask=None):
        if z is None:
            w = torch.softmax(self.mod_bias.detach(), dim=0)
        else:
            with torch.no_grad():
                X, P = self.prepare(z, mask)
                w = self.attention(X, P).sum(dim=0)
                w = w / w.sum().clamp(min=1e-12)
        return {m: float(w[i]) for i, m in enumerate(self.modalities)}


@register_fusion
class GatedFusion(Fusion):
    """Gated multimodal unit: per-dimension gates from all present modalities decide how much each
    modality contributes to each output dimension (``softmax`` over present modalities)."""

    name = "gated"

    def __init__(self, dims, dim=None, project=True, impute=False):
        super().__init__(dims, dim, project, impute)
        M = len(self.modalities)
        self.hidden = nn.ModuleList([nn.Linear(self.dim, self.dim) for _ in range(M)])
        self.gate = nn.Linear(M * self.dim, M * self.dim)

    def gates(self, X, P):
        B, M, D = X.shape
        logits = self.gate(X.flatten(1)).view(B, M, D)
        logits = logits.masked_fill(~P.unsqueeze(-1), float("-inf"))
        return torch.nan_to_num(torch.softmax(logits, dim=1), nan=0.0)

    def combine(self, X, P):
        H = torch.stack([torch.tanh(h(X[:, i])) for i, h in enumerate(self.hidden)], dim=1)
        return (self.gates(X, P) * H).sum(dim=1)

    def modality_weights(self, z=None, mask=None):
        if z is None:
            return {m: 1.0 / len(self.modalities) for m in self.modalities}
        with torch.no_grad():
            X, P = self.prepare(z, mask)
            g = self.gates(X, P).mean(dim=2).sum(dim=0)
            g = g / g.sum().clamp(min=1e-12)
        return {m: float(g[i]) for i, m in enumerate(self.modalities)}
