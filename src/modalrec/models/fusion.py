"""A content recommender that learns how to fuse modalities: user vectors dot fused item vectors.

Why: fusion weights only mean something relative to a task. Training the fusion module end to end
with BPR on the interactions (early stopping on validation Recall@20, like every trained model) makes
the learned modality weights answer "which modality explains what users do", and the fused item
vector depends on content only, so new items are scored like old ones.

Registered as ``"fusion"`` in the model registry when this module is imported.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal, cast

import numpy as np
import torch
from pydantic import Field
from torch import nn

from modalrec.core.errors import DataError
from modalrec.fusion.modules import create_fusion
from modalrec.models.base import register
from modalrec.models.embedding import EmbeddingParams, EmbeddingRecommender, bpr_loss

if TYPE_CHECKING:
    from modalrec.data.dataset import Dataset


class _FusionNet(nn.Module):
    def __init__(
        self,
        n_users: int,
        feats: dict[str, np.ndarray],
        masks: dict[str, np.ndarray],
        fusion: str,
        dim: int,
        **fp: Any,
    ):
        super().__init__()
        self.fusion = create_fusion(fusion, {m: f.shape[1] for m, f in feats.items()}, dim=dim, **fp)
        self.user = nn.Embedding(n_users, self.fusion.out_dim)
        nn.init.normal_(self.user.weight, std=0.1)
        self.names = list(feats)
        for m in self.names:
            f = feats[m].astype(np.float32)
            f = f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)
            self.register_buffer(f"x_{m}", torch.as_tensor(f), persistent=False)
            self.register_buffer(f"p_{m}", torch.as_tensor(masks[m].astype(bool)), persistent=False)

    def items(self) -> torch.Tensor:
        z = {m: getattr(self, f"x_{m}") for m in self.names}
        p = {m: getattr(self, f"p_{m}") for m in self.names}
        return self.fusion(z, p)


class FusionParams(EmbeddingParams):
    """Fusion recommender: the latent-factor settings plus which fusion module combines which modalities."""

    lr: float = Field(0.005, gt=0, description="Adam learning rate")
    reg: float = Field(1e-4, ge=0, description="L2 weight on the batch's user vectors")
    fusion: Literal["concat", "weighted_sum", "attention", "gated"] = Field(
        "weighted_sum", description="fusion module (modalrec.fusion) that combines the item's modalities"
    )
    modalities: list[str] | None = Field(None, description="feature modalities to fuse (None = all)")
    impute: bool = Field(
        False, description="fill a missing modality from the item's others instead of re-weighting"
    )


@register
class FusionRecommender(EmbeddingRecommender[FusionParams]):
    """Content recommender that learns how to fuse modalities: score(u, i) = <user_u, fusion(features_i)>.

    Why: trained end to end with BPR, the mask-aware fusion's modality weights answer "which modality
    explains what users do", and since item vectors depend on content only, new items score like old.
    """

    name = "fusion"
    params_class = FusionParams
    uses_features = True

    def build(self, dataset: Dataset) -> nn.Module:
        mods = self.hp.modalities or sorted(dataset.features)
        if not mods:
            raise DataError("the fusion recommender needs item features; the dataset has none")
        missing = [m for m in mods if m not in dataset.features]
        if missing:
            raise DataError(f"modalities {missing} have no features in the dataset", field="modalities")
        feats = {m: dataset.features[m] for m in mods}
        masks = {m: dataset.feature_masks.get(m, np.ones(dataset.n_items, bool)) for m in mods}
        return _FusionNet(dataset.n_users, feats, masks, self.hp.fusion, self.hp.dim, impute=self.hp.impute)

    @property
    def _net(self) -> _FusionNet:
        return cast(_FusionNet, self.net)

    def propagate(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self._net.user.weight, self._net.items()

    def batch_loss(self, users: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> torch.Tensor:
        u = self._net.user.weight[users]
        items = self._net.items()
        loss = bpr_loss((u * items[pos]).sum(1), (u * items[neg]).sum(1))
        return loss + self.hp.reg * u.pow(2).sum() / (2 * len(users))

    def _finalise(self) -> None:
        super()._finalise()
        net = self._net
        fu = net.fusion
        with torch.no_grad():
            z = {m: getattr(net, f"x_{m}") for m in net.names}
            p = {m: getattr(net, f"p_{m}") for m in net.names}
            self.meta["modality_weights"] = fu.modality_weights(z, p)
        self.meta["fusion"] = type(fu).name
