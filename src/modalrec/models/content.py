"""Content plumbing shared by the multimodal recommenders: feature preparation, kNN graphs, sampling.

Why one module: VBPR, the graph model and the hybrid model must treat features the same way so
that an ablation that changes the model does not silently change the preprocessing too:

* **Mask-aware standardisation.** Each modality is centred and scaled with statistics of the rows
  that are *present*; a missing row becomes the mean (zero after centring), so it does not inject an
  arbitrary "all-zeros poster" that sits far from every real one. Models additionally receive the
  presence masks and weight modalities by presence.
* **Frozen item-item kNN graphs** (LATTICE/FREEDOM): cosine top-k neighbours per modality; items
  without the modality get no edges; symmetric normalisation.
* **Warm-only negatives.** Items that never occur in training (cold-start items) are excluded from
  negative sampling: otherwise BPR learns "items whose content looks like the cold ones are bad",
  exactly the items the cold-start protocol asks about. Content models train with the one BPR loop
  of :meth:`~modalrec.models.embedding.EmbeddingRecommender.train_bpr`, passing :class:`WarmSampler`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

from modalrec.core.errors import DataError
from modalrec.models.training import BPRSampler

if TYPE_CHECKING:
    from modalrec.data.dataset import Dataset


def select_modalities(dataset: Dataset, modalities: list[str] | str | None) -> list[str]:
    """The modalities a model uses: ``None`` = every feature of the dataset (sorted).

    Raises :class:`DataError` naming the missing modality, so a config typo fails loudly.
    """
    if isinstance(modalities, str):
        modalities = [m.strip() for m in modalities.split(",") if m.strip()]
    mods = list(modalities) if modalities else sorted(dataset.features)
    missing = [m for m in mods if m not in dataset.features]
    if missing:
        known = ", ".join(sorted(dataset.features)) or "none"
        raise DataError(
            f"modalities {missing} have no features in the dataset (available: {known})", field="modalities"
        )
    return mods


def optional_modalities(dataset: Dataset, modalities: list[str] | str | None) -> list[str]:
    """Like :func:`select_modalities` for models that also run without content: a data set without
    features, or ``modalities = []`` (the "none (CF)" ablation), gives no modalities."""
    if modalities == [] or not dataset.features:
        return []
    return select_modalities(dataset, modalities)


def presence(dataset: Dataset, modality: str) -> np.ndarray:
    """bool [n_items]: True where the modality's feature row is real (default: all present)."""
    mask = dataset.feature_masks.get(modality)
    if mask is None:
        return np.ones(dataset.n_items, dtype=bool)
    return np.asarray(mask, dtype=bool)


def standardise(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Centre and scale with statistics of present rows; absent rows become 0 (= mean imputation).

    The result is scaled so that an average present row has unit L2 norm, which keeps projections of
    modalities of different width on one scale.

    >>> x = np.array([[1.0, 2.0], [3.0, 6.0], [100.0, 100.0]], dtype=np.float32)
    >>> z = standardise(x, np.array([True, True, False]))
    >>> z[2].tolist(), round(float(np.linalg.norm(z[:2], axis=1).mean()), 3)
    ([0.0, 0.0], 1.0)
    """
    x = np.asarray(x, dtype=np.float32)
    out = np.zeros_like(x)
    if not mask.any():
        return out
    pres = x[mask]
    mu = pres.mean(0)
    sd = pres.std(0)
    z = (pres - mu) / np.where(sd > 1e-8, sd, 1.0)
    scale = float(np.linalg.norm(z, axis=1).mean())
    out[mask] = z / max(scale, 1e-8)
    return out.astype(np.float32)


def prepared_features(
    dataset: Dataset, modalities: list[str]
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Standardised features and presence masks for the chosen modalities."""
    feats, masks = {}, {}
    for m in modalities:
        masks[m] = presence(dataset, m)
        feats[m] = standardise(dataset.features[m], masks[m])
    return feats, masks


def knn_graph(
    x: np.ndarray, mask: np.ndarray, k: int, *, chunk: int = 2048, exact_max: int | None = None
) -> sp.csr_matrix:
    """Cosine kNN graph D^-1/2 A D^-1/2 (A: top-``k`` per row, 0/1, no self loops; D: row degrees),
    the normalisation of LATTICE/FREEDOM (A is not symmetric, so rows sum to 1).

    Rows of absent items have no edges and are nobody's neighbour. Up to ``exact_max`` present items
    (default :data:`modalrec.models.neighbors.EXACT_MAX`) the search is exact, in row chunks (memory
    ``chunk x n_items`` floats); above, a faiss IVF-Flat index answers it (recall measured in
    benchmarks/results/itemitem.md). No dense item x item matrix either way.

    >>> x = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9]], dtype=np.float32)
    >>> g = knn_graph(x, np.ones(4, bool), k=1)
    >>> g.toarray().round(2).tolist()
    [[0.0, 1.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0], [0.0, 0.0, 1.0, 0.0]]
    """
    from modalrec.models.neighbors import EXACT_MAX, feature_topk

    n = x.shape[0]
    rows, cols = feature_topk(
        x, mask, k, exact_max=EXACT_MAX if exact_max is None else exact_max, chunk=chunk
    )
    if len(rows) == 0:
        return sp.csr_matrix((n, n), dtype=np.float32)
    a = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(n, n))
    return degree_normalised(a)


def degree_normalised(a: sp.csr_matrix) -> sp.csr_matrix:
    """Binarise ``a`` and normalise it as D^-1/2 A D^-1/2 with D the row degrees (LATTICE/FREEDOM)."""
    a = sp.csr_matrix(a, dtype=np.float32, copy=True)
    a.eliminate_zeros()
    a.data[:] = 1.0
    deg = np.asarray(a.sum(1)).ravel()
    dinv = np.where(deg > 0, 1.0 / np.sqrt(np.maximum(deg, 1e-12)), 0.0).astype(np.float32)
    g = (sp.diags(dinv) @ a @ sp.diags(dinv)).astype(np.float32).tocsr()
    g.sort_indices()
    return g


def interaction_knn_graph(train: sp.csr_matrix, k: int) -> sp.csr_matrix:
    """Item-item graph from the interactions alone: each item's top-``k`` cosine co-occurrence
    neighbours (ItemKNN's similarity, computed sparsely), normalised as :func:`knn_graph`. Items never
    interacted with have no edges.

    >>> r = sp.csr_matrix(np.array([[1, 1, 0], [1, 1, 0], [0, 0, 1]], np.float32))
    >>> interaction_knn_graph(r, 1).toarray().tolist()
    [[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0]]
    """
    from modalrec.models.neighbors import cooccurrence_topk

    return degree_normalised(cooccurrence_topk(train, max(1, k)).cosine)


def warm_items(train: sp.csr_matrix) -> np.ndarray:
    """Indices of items with at least one training interaction."""
    return np.flatnonzero(np.diff(train.tocsc().indptr) > 0)


class WarmSampler(BPRSampler):
    """BPR triplets whose negatives are drawn from ``allowed`` items only (default: warm items)."""

    def __init__(
        self, train: sp.csr_matrix, rng: np.random.Generator, allowed: np.ndarray | None = None
    ) -> None:
        super().__init__(train, rng)
        self.allowed = np.asarray(allowed if allowed is not None else warm_items(train), dtype=np.int64)
        if len(self.allowed) == 0:
            self.allowed = np.arange(self.n_items, dtype=np.int64)

    def draw(self, size: int) -> np.ndarray:
        return self.allowed[self.rng.integers(0, len(self.allowed), size=size)]


def degree_pruned_blocks(
    train: sp.csr_matrix, keep: float, rng: np.random.Generator
) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """FREEDOM's degree-sensitive edge pruning: keep a ``keep`` share of user-item edges, sampled
    with probability proportional to 1/sqrt(d_u d_i) (edges between hubs go first), then normalise.

    >>> r = sp.csr_matrix(np.ones((3, 4), np.float32))
    >>> a, at = degree_pruned_blocks(r, 0.5, np.random.default_rng(0))
    >>> (a > 0).sum() == 6, at.shape
    (np.True_, (4, 3))
    """
    from modalrec.models.lightgcn import normalised_blocks

    coo = train.tocoo()
    if keep >= 1.0 or coo.nnz == 0:
        return normalised_blocks(train)
    du = np.asarray(train.sum(1)).ravel()
    di = np.asarray(train.sum(0)).ravel()
    w = 1.0 / np.sqrt(du[coo.row] * di[coo.col])
    n_keep = max(1, round(keep * coo.nnz))
    idx = rng.choice(coo.nnz, size=n_keep, replace=False, p=w / w.sum())
    pruned = sp.csr_matrix((coo.data[idx], (coo.row[idx], coo.col[idx])), shape=train.shape, dtype=np.float32)
    return normalised_blocks(pruned)
