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
from typing import ClassVar

import numpy as np
import torch
from pydantic import Field
from torch import nn
from torch.nn import functional as F
from typing_extensions import TypeVar

from modalrec.align.base import register, selection_split
from modalrec.align.contrastive import ContrastiveAligner, ContrastiveParams, _Heads
from modalrec.core.losses import info_nce
from modalrec.core.params import Params


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


class DistributionParams(ContrastiveParams):
    """Hyperparameters shared by :class:`MMDAligner` and :class:`AdversarialAligner`."""

    hidden: int | None = Field(
        None, ge=0, description="hidden width of each modality's MLP head (None or 0: linear heads)"
    )


class MMDParams(DistributionParams):
    """Hyperparameters of :class:`MMDAligner`."""

    mmd_weight: float = Field(1.0, ge=0, description="weight of the MMD term next to InfoNCE")


class AdversarialParams(DistributionParams):
    """Hyperparameters of :class:`AdversarialAligner`."""

    adv_weight: float = Field(
        0.5, ge=0, description="weight of the modality discriminator's loss (gradient reversal)"
    )


DP = TypeVar("DP", bound=DistributionParams, default=MMDParams)


@register
class MMDAligner(ContrastiveAligner[DP]):
    """Projection heads trained with InfoNCE on paired items + ``mmd_weight`` x MMD on all items.

    What it learns: the contrastive aligner's heads, with a second objective that makes the
    distributions of projected vectors of the modalities match (maximum mean discrepancy, a mixture of
    RBF bandwidths). Why: items with a single modality take part through the MMD term, so a catalogue
    where only a few items have both a poster and a text can still be aligned.
    """

    name = "mmd"
    params_class: ClassVar[type[Params]] = MMDParams

    def _extra_weight(self) -> float:
        """Weight of :meth:`_extra` next to InfoNCE."""
        hp = self.hp
        assert isinstance(hp, MMDParams), f"{type(self).__name__} must override _extra_weight"
        return hp.mmd_weight

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
        return total + self._extra_weight() * self._extra(net, z, present)

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
        _, val_rows = selection_split(train, masks, self.modalities[:2], seed=seed, min_valid=10)
        n_present = sum(masks[m].astype(int) for m in self.modalities)
        # unpaired items train too (that is the point); only validation rows are held back
        fit_rows = np.flatnonzero(train & (n_present >= 1) & ~np.isin(np.arange(len(train)), val_rows))
        torch.manual_seed(seed)
        net = self._build({m: X.shape[1] for m, X in Xs.items()})
        self._train(net, Xs, masks, fit_rows, val_rows, seed, progress)
        self._net = net
        self.meta["dim"] = self.hp.dim
        self.meta["n_paired_train"] = int(
            (train & np.logical_and.reduce([masks[m] for m in self.modalities])).sum()
        )


@register
class AdversarialAligner(MMDAligner[AdversarialParams]):
    """Like :class:`MMDAligner`, but a discriminator tries to tell the modality of a projected vector
    and the projections learn to fool it (gradient reversal with strength ``adv_weight``).

    What it learns: the heads plus a small modality classifier on the shared space. Why: when the
    discriminator cannot tell a text vector from an image vector, the modalities' distributions in
    the shared space match, as in domain-adversarial training -- also for unpaired items.
    """

    name = "adversarial"
    params_class = AdversarialParams

    def _extra_weight(self) -> float:
        return self.hp.adv_weight

    def _build(self, dims):
        hp = self.hp
        return _AdvHeads(dims, hp.dim, hp.hidden, hp.dropout, hp.temperature)

    def _extra(self, net, z, present):
        xs, ys = [], []
        for j, m in enumerate(z):
            zm = z[m][present[m]]
            xs.append(zm)
            ys.append(torch.full((len(zm),), j, dtype=torch.long))
        x = _GradReverse.apply(torch.cat(xs), 1.0)
        return F.cross_entropy(net.disc(x), torch.cat(ys))
