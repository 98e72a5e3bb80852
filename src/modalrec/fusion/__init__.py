"""Fusion of aligned modality vectors into one item vector (mask-aware); see :mod:`modalrec.fusion.modules`.

>>> sorted(FUSIONS)
['attention', 'concat', 'gated', 'weighted_sum']
"""

from modalrec.fusion.modules import (
    FUSIONS,
    AttentionFusion,
    ConcatFusion,
    Fusion,
    GatedFusion,
    WeightedSumFusion,
    create_fusion,
    masked_softmax,
)

__all__ = [
    "FUSIONS",
    "AttentionFusion",
    "ConcatFusion",
    "Fusion",
    "GatedFusion",
    "WeightedSumFusion",
    "create_fusion",
    "masked_softmax",
]
