"""BPR matrix factorisation (Rendle et al., 2009): the classic latent-factor baseline."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from modalrec.models.base import register
from modalrec.models.embedding import EmbeddingParams, EmbeddingRecommender

if TYPE_CHECKING:
    from modalrec.data.dataset import Dataset


class _MF(nn.Module):
    def __init__(self, n_users: int, n_items: int, dim: int) -> None:
        super().__init__()
        self.user = nn.Embedding(n_users, dim)
        self.item = nn.Embedding(n_items, dim)
        nn.init.xavier_uniform_(self.user.weight)
        nn.init.xavier_uniform_(self.item.weight)


class BPRMFParams(EmbeddingParams):
    """BPR-MF has exactly the shared latent-factor settings."""


@register
class BPRMF(EmbeddingRecommender[BPRMFParams]):
    """Matrix factorisation trained with BPR: the classic latent-factor baseline every model must beat.

    One free vector per user and per item, scored by dot product, trained with BPR + L2 on the batch's
    rows (MMRec's BPR); LightGCN and the multimodal models share its training loop and stopping rule.
    """

    name = "bprmf"
    params_class = BPRMFParams

    def build(self, dataset: Dataset) -> nn.Module:
        return _MF(dataset.n_users, dataset.n_items, self.hp.dim)

    def propagate(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.net.user.weight, self.net.item.weight

    def batch_loss(self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        # Only the batch rows are gathered: no need to touch the full tables as LightGCN must.
        u, p, n = self.net.user(users), self.net.item(pos), self.net.item(neg)
        loss = torch.nn.functional.softplus((u * n).sum(1) - (u * p).sum(1)).mean()
        reg = (u.pow(2).sum() + p.pow(2).sum() + n.pow(2).sum()) / 2
        return loss + self.hp.reg * reg / len(users)
