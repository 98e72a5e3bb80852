"""Recommenders on one protocol (see :mod:`modalrec.models.base`)."""

from modalrec.models.base import REGISTRY, Recommender, create, register

__all__ = ["REGISTRY", "Recommender", "create", "register"]
