"""Synthetic data for tests: a small clustered interaction set every model can learn from in seconds.

A plain module (not a conftest) so that test files can import it: pytest runs with
``--import-mode=importlib`` and ``pythonpath = ["tests", ...]`` (pyproject.toml).
"""

from __future__ import annotations

from modalrec.data.dataset import Dataset
from modalrec.models.checks import make_check_dataset


def make_clustered(
    n_users: int = 120,
    n_items: int = 80,
    n_clusters: int = 4,
    per_user: int = 12,
    seed: int = 0,
    with_features: bool = False,
    cold_share: float = 0.0,
    missing_image: float = 0.2,
) -> Dataset:
    """Users and items fall into clusters; users interact mostly (90%) within their own cluster.

    A learnable signal with a known answer: a model that captures the clusters beats popularity.
    Split: per user, one interaction to valid, two to test, the rest to train.

    ``with_features``: items also get a clean ``text`` feature (cluster centre + small noise) and a
    noisy ``image`` feature missing for a ``missing_image`` share of items (mask False, row zeros),
    for the multimodal models. ``cold_share``: that share of items is cold (every interaction with
    them goes to test; listed in ``cold_items``). Both default off, leaving the data unchanged.
    """
    return make_check_dataset(
        n_users,
        n_items,
        n_clusters=n_clusters,
        per_user=per_user,
        n_cold=round(cold_share * n_items),
        with_features=with_features,
        missing_image=missing_image,
        seed=seed,
        name="clustered",
    )
