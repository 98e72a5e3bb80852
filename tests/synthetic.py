"""Synthetic data for tests: a small clustered interaction set every model can learn from in seconds.

A plain module (not a conftest) so that test files can import it: pytest runs with
``--import-mode=importlib`` and ``pythonpath = ["tests", ...]`` (pyproject.toml).
"""

from __future__ import annotations

import numpy as np

from modalrec.data.dataset import Dataset, interaction_matrix


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
    rng = np.random.default_rng(seed)
    item_cluster = np.arange(n_items) % n_clusters
    rows, cols, labels = [], [], []
    for u in range(n_users):
        c = u % n_clusters
        own = np.flatnonzero(item_cluster == c)
        other = np.flatnonzero(item_cluster != c)
        n_own = round(per_user * 0.9)
        items = np.concatenate(
            [rng.choice(own, n_own, replace=False), rng.choice(other, per_user - n_own, replace=False)]
        )
        rng.shuffle(items)
        rows += [u] * per_user
        cols += items.tolist()
        labels += [1] + [2, 2] + [0] * (per_user - 3)
    r, c, lab = np.array(rows), np.array(cols), np.array(labels)
    cold = None
    if cold_share:
        cold = np.sort(rng.choice(n_items, round(cold_share * n_items), replace=False))
        lab = np.where(np.isin(c, cold), 2, lab)
    mats = [interaction_matrix(r[lab == k], c[lab == k], n_users, n_items) for k in range(3)]
    features: dict[str, np.ndarray] = {}
    masks: dict[str, np.ndarray] = {}
    if with_features:
        centres = rng.normal(size=(n_clusters, 16)).astype(np.float32)
        text = centres[item_cluster] + 0.3 * rng.normal(size=(n_items, 16)).astype(np.float32)
        proj = rng.normal(size=(16, 24)).astype(np.float32)
        image = (centres[item_cluster] @ proj + 3.0 * rng.normal(size=(n_items, 24))).astype(np.float32)
        img_mask = rng.random(n_items) >= missing_image
        image[~img_mask] = 0.0
        features = {"text": text, "image": image}
        masks = {"text": np.ones(n_items, bool), "image": img_mask}
    return Dataset(
        name="clustered",
        user_ids=np.array([f"u{i}" for i in range(n_users)]),
        item_ids=np.array([f"i{i}" for i in range(n_items)]),
        train=mats[0],
        valid=mats[1],
        test=mats[2],
        features=features,
        feature_masks=masks,
        cold_items=cold,
        split_name="fixed",
    )
