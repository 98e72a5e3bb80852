"""Losses shared by models and aligners (one copy each).

Why here: the symmetric InfoNCE loss serves contrastive aligners (learned scale on normalised heads)
and the self-supervised term of graph models (fixed temperature); both layers sit above ``core``.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


def info_nce(
    a: torch.Tensor,
    b: torch.Tensor,
    *,
    scale: torch.Tensor | None = None,
    temperature: float | None = None,
) -> torch.Tensor:
    """Symmetric InfoNCE: row ``i`` of ``a`` matches row ``i`` of ``b``; rows are expected normalised.

    Logits are ``scale * a @ b.T`` (a learnable scale) or ``a @ b.T / temperature`` (a fixed one);
    give exactly one of the two.

    >>> z = F.normalize(torch.eye(4), dim=1)
    >>> float(info_nce(z, z, scale=torch.tensor(50.0))) < 1e-6
    True
    >>> bool(info_nce(z, z, temperature=0.02) == info_nce(z, z, scale=torch.tensor(50.0)))
    True
    """
    if scale is not None and temperature is None:
        logits = scale * a @ b.T
    elif temperature is not None and scale is None:
        logits = a @ b.T / temperature
    else:
        raise ValueError("info_nce needs exactly one of scale and temperature")
    target = torch.arange(len(a))
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))
