"""Cross-modal alignment: map every modality into one shared space (see :mod:`modalrec.align.base`).

>>> sorted(ALIGNERS)[:3]
['adversarial', 'cca', 'collaborative']
"""

from modalrec.align.attention import CrossAttentionAligner
from modalrec.align.base import ALIGNERS, Aligner, create, l2_normalize, register
from modalrec.align.collaborative import CollaborativeAligner, pure_svd
from modalrec.align.contrastive import ContrastiveAligner
from modalrec.align.distribution import AdversarialAligner, MMDAligner
from modalrec.align.ensemble import EnsembleAligner
from modalrec.align.entity import EntityAligner, EntityGraph
from modalrec.align.interactions import InteractionAligner
from modalrec.align.lexical import LexicalAligner
from modalrec.align.linear import CCAAligner, RidgeAligner
from modalrec.align.metrics import cross_modal_ranks, mean_recall, retrieval_metrics

__all__ = [
    "ALIGNERS",
    "AdversarialAligner",
    "Aligner",
    "CCAAligner",
    "CollaborativeAligner",
    "ContrastiveAligner",
    "CrossAttentionAligner",
    "EnsembleAligner",
    "EntityAligner",
    "EntityGraph",
    "InteractionAligner",
    "LexicalAligner",
    "MMDAligner",
    "RidgeAligner",
    "create",
    "cross_modal_ranks",
    "l2_normalize",
    "mean_recall",
    "pure_svd",
    "register",
    "retrieval_metrics",
]
