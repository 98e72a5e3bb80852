"""Distribution alignment for partly paired modalities: MMD and an adversarial modality discriminator.

Why: in real catalogues many items have only one modality (no poster, no audio). Contrastive
losses can only use the paired items; these aligners also use the unpaired ones by asking that the
*distributions* of projected vectors match across modalities, either by a kernel two-sample statistic
(maximum mean discrepancy with a mixture of RBF bandwidths) or by projections that fool a modality
discriminator (gradient reversal, as in domain-adversarial training). The paired items (if any) still
anchor the pairing with InfoNCE; without any pairs only the distribution is matched, which aligns the
spaces up to symmetries of the data.
"""

from __future__ import annotations

from itertools import combinations
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from modalrec.align.base import register, selection_split
from modalrec.align.contrastive import ContrastiveAligner, _Heads
from modalrec.core.losses import info_nce


def mmd_rbf(
    x: torch.Tensor, y: torch.Tensor, bandwidths: tuple[float, ...] = (0.1, 0.2, 0.5, 1.0, 2.0)
) -> torch.Tensor:
    """Biased MMD^2 estimate between samples ``x`` and ``y`` with a sum of RBF kernels.

    >>> g = torch.Generator().manual_seed(0)
    >>> a = torch.randn(200, 3, generator=g); b = torch.randn(200, 3, generator=g)
    >>> float(mmd_rbf(a, b)) < float(mmd_rbf(a, b + 2.0))
    True
    """
    xy = torch.cat([x, y])
    d2 = torch.cdist(xy, xy).pow(2)
    k = torch.stack([torch.exp(-d2 / (2 * h * h)) for h in bandwidths]).sum(0)
    n = len(x)
    return k[:n, :n].mean() + k[n:, n:].mean() - 2 * k[:n, n:].mean()


class _GradReverse(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, alpha):  # type: ignore[override]
        ctx.alpha = alpha
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        return -ctx.alpha * grad, None


class _AdvHeads(_Heads):
    def __init__(self, dims, dim, hidden, dropout, temperature):
        super().__init__(dims, dim, hidden, dropout, temperature)
        self.disc = nn.Sequential(nn.Linear(dim, 64), nn.ReLU(), nn.Linear(64, len(dims)))


@register
class MMDAligner(ContrastiveAligner):
    """Projection heads trained with InfoNCE on paired items + ``mmd_weight`` x MMD on all items.

    Items with a single modality take part through the MMD term, so a catalogue where only a few
    items have both a poster and a text can still be aligned.
    """

    name = "mmd"

    @classmethod
    def default_params(cls) -> dict[str, Any]:
        return {**super().default_params(), "mmd_weight": 1.0, "hidden": None}

    def _extra(self, net, z, present) -> torch.Tensor:
        terms = []
        for a, b in combinations(z, 2):
            za, zb = z[a][present[a]], z[b][present[b]]
            if len(za) >= 2 and len(zb) >= 2:
                terms.append(mmd_rbf(za, zb))
        return torch.stack(terms).mean() if terms else torch.zeros(())

    def _loss(self, net, batch, present):
        z = {m: net(m, x) for m, x in batch.items()}
        losses = []
        for a, b in combinations(z, 2):
            both = present[a] & present[b]
            if int(both.sum()) >= 2:
                losses.append(info_nce(z[a][both], z[b][both], scale=net.scale))
        total = torch.stack(losses).mean() if losses else torch.zeros(())
        return total + self.params[self._weight_key] * self._extra(net, z, present)

    _weight_key = "mmd_weight"

    def _fit(self, views, masks, train, *, seed, progress):
        Xs = self._standardize(views, masks, train)
        _, val_rows = selection_split(train, masks, self.modalities[:2], seed=seed, min_valid=10)
        n_present = sum(masks[m].astype(int) for m in self.modalities)
        # unpaired items train too (that is the point); only validation rows are held back
        fit_rows = np.flatnonzero(train & (n_present >= 1) & ~np.isin(np.arange(len(train)), val_rows))
        torch.manual_seed(seed)
        net = self._build({m: X.shape[1] for m, X in Xs.items()})
        self._train(net, Xs, masks, fit_rows, val_rows, seed, progress)
        self._net = net
        self.meta["dim"] = self.params["dim"]
        self.meta["n_paired_train"] = int(
            (train & np.logical_and.reduce([masks[m] for m in self.modalities])).sum()
        )


@register
class AdversarialAligner(MMDAligner):
    """Like :class:`MMDAligner`, but a discriminator tries to tell the modality of a projected vector
    and the projections learn to fool it (gradient reversal with strength ``adv_weight``)."""

    name = "adversarial"

    @classmethod
    def default_params(cls) -> dict[str, Any]:
        p = {k: v for k, v in super().default_params().items() if k != "mmd_weight"}
        return {**p, "adv_weight": 0.5}

    _weight_key = "adv_weight"

    def _build(self, dims):
        p = self.params
        return _AdvHeads(dims, p["dim"], p["hidden"], p["dropout"], p["temperature"])

    def _extra(self, net, z, present):
        xs, ys = [], []
        for j, m in enumerate(z):
            zm = z[m][present[m]]
            xs.append(zm)
            ys.append(torch.full((len(zm),), j, dtype=torch.long))
        x = _GradReverse.apply(torch.cat(xs), 1.0)
        return F.cross_entropy(net.disc(x), torch.cat(ys))
