"""Recommenders on one protocol (see :mod:`modalrec.models.base`).

Importing this package registers every built-in model, so ``create("lightgcn", dim=64)`` works.
"""

from modalrec.models import als, blend, bprmf, coldstart, ease, fusion, itemknn, lightgcn, popularity  # noqa: F401  (registration)
from modalrec.models.als import ALS
from modalrec.models.base import REGISTRY, Recommender, create, register
from modalrec.models.blend import Blend
from modalrec.models.bprmf import BPRMF
from modalrec.models.coldstart import ColdStart
from modalrec.models.ease import EASE, ContentEASE
from modalrec.models.fusion import FusionRecommender
from modalrec.models.graphmm import GraphMM
from modalrec.models.itemknn import ItemKNN
from modalrec.models.lightgcn import LightGCN
from modalrec.models.popularity import Popularity
from modalrec.models.vbpr import VBPR

__all__ = [
    "ALS",
    "BPRMF",
    "EASE",
    "REGISTRY",
    "VBPR",
    "Blend",
    "ColdStart",
    "ContentEASE",
    "FusionRecommender",
    "GraphMM",
    "ItemKNN",
    "LightGCN",
    "Popularity",
    "Recommender",
    "create",
    "register",
]
