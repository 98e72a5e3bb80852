"""Renumbering graph nodes for cache locality: the same products, faster on large graphs.

Why: a sparse product reads (or writes) a row of the dense table for every edge, in the order the edges
name them. Past ~10^5 items the tables outgrow the CPU cache (32 MB L3 here), and a product's time is
set by cache misses, not arithmetic. Renumbering the nodes so that rows used together sit together
changes no result beyond float rounding of the sums, and at size M it cuts a product's time by a
quarter (user-item graph, items by falling popularity) to two thirds (item-item kNN graph, reverse
Cuthill-McKee order). Both are used only by the shared propagation (large catalogues); the per-batch
path keeps the given order and its exact bytes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import reverse_cuthill_mckee


def inverse_permutation(order: np.ndarray) -> np.ndarray:
    """``inverse[order[k]] = k``: the position of each given index in ``order``.

    >>> inverse_permutation(np.array([2, 0, 1])).tolist()
    [1, 2, 0]
    """
    inverse = np.empty_like(order)
    inverse[order] = np.arange(order.size)
    return inverse


@dataclass(frozen=True, eq=False)
class ItemOrderedBlocks:
    """The normalised blocks with the items renumbered by falling degree, for the fused propagation.

    Why: past ~10^5 items the item table outgrows the CPU cache (200k items x 64 floats = 51 MB
    against a 32 MB L3 here), and every sparse product reads or writes its rows in the order the
    edges name them. Numbered by falling popularity, the rows most edges touch sit together and stay
    cached: 0.53 -> 0.41 s per product at size M on one thread, 0.30 -> 0.22 s on two (measured back
    to back; users reordered as well bought nothing more). The layer mean commutes with renumbering,
    so the result is the given order's up to float rounding of the sums (see :class:`modalrec.models.lightgcn._LayerMean`).

    >>> r = sp.csr_matrix(np.array([[1, 0, 2], [0, 0, 3]], dtype=np.float32))
    >>> g = ItemOrderedBlocks.of(r, r.T.tocsr())
    >>> g.order.tolist(), g.r.toarray().tolist()
    ([2, 0, 1], [[2.0, 1.0, 0.0], [3.0, 0.0, 0.0]])
    """

    #: the given-order user x items block these were made from (:meth:`follows` checks identity)
    source: sp.csr_matrix
    r: sp.csr_matrix
    r_t: sp.csr_matrix
    #: ``order[k]`` is the given index of the item at position k
    order: np.ndarray

    @classmethod
    def of(cls, r: sp.csr_matrix, r_t: sp.csr_matrix) -> ItemOrderedBlocks:
        order = np.argsort(-np.diff(r_t.indptr), kind="stable")
        rank = inverse_permutation(order)
        r_o = sp.csr_matrix(
            (r.data.copy(), rank[r.indices].astype(r.indices.dtype), r.indptr.copy()), shape=r.shape
        )
        r_o.sort_indices()
        r_t_o = r_t[order].tocsr()
        r_t_o.sort_indices()
        return cls(r, r_o, r_t_o, order)

    def follows(self, r: sp.csr_matrix) -> bool:
        """True while these are the renumbered copy of ``r`` (graphmm re-prunes its graph per epoch)."""
        return self.source is r


class ItemOrderCache:
    """The renumbered blocks of a model's current graph, rebuilt only when the graph object changes
    (graphmm re-prunes its graph every epoch; LightGCN's never changes). ``mode="local"`` renumbers
    (:class:`ItemOrderedBlocks`), ``mode="given"`` keeps the data set's item order (no copy)."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self._blocks: ItemOrderedBlocks | None = None

    def blocks(self, r: sp.csr_matrix, r_t: sp.csr_matrix) -> ItemOrderedBlocks | None:
        if self.mode == "given":
            return None
        if self._blocks is None or not self._blocks.follows(r):
            self._blocks = ItemOrderedBlocks.of(r, r_t)
        return self._blocks


def to_positions(x: np.ndarray, order: np.ndarray | None) -> np.ndarray:
    """Rows of an item table moved to their renumbered positions (a copy; as given without an order)."""
    return x if order is None else np.take(x, order, axis=0)


def to_given(x: np.ndarray, order: np.ndarray | None) -> np.ndarray:
    """The inverse of :func:`to_positions`."""
    if order is None:
        return x
    out = np.empty_like(x)
    out[order] = x
    return out


def permuted_square(g: sp.csr_matrix, order: np.ndarray) -> sp.csr_matrix:
    """``g`` with rows and columns renumbered: entry (a, b) of the result is ``g[order[a], order[b]]``."""
    out = g[order][:, order].tocsr()
    out.sort_indices()
    return out


@dataclass(frozen=True, eq=False)
class BandedGraph:
    """An item-item graph renumbered by reverse Cuthill-McKee (a small band around the diagonal), and
    its transpose.

    Why: a kNN graph joins items of similar content, scattered over the item numbering; renumbered by
    RCM, each item's neighbours sit close to it, so a product reads a few nearby rows of the item table
    instead of jumping over all of it. At size M (200k items, k = 10): 0.21-0.22 s -> 0.07-0.10 s per
    product on one thread, 0.11-0.14 -> 0.05 s on two; the order costs 0.14 s once and moving a table
    into it and back ~0.016 s each way.

    >>> g = sp.csr_matrix(np.array([[0, 0, 1], [0, 0, 0], [1, 0, 0]], dtype=np.float32))
    >>> b = BandedGraph.of(g, g.T.tocsr())
    >>> b.g.toarray().tolist() == permuted_square(g, b.order).toarray().tolist()
    True
    """

    g: sp.csr_matrix
    g_t: sp.csr_matrix
    #: ``order[k]`` is the given index of the item at position k
    order: np.ndarray
    #: ``inverse[i]`` is the position of given item i
    inverse: np.ndarray

    @classmethod
    def of(cls, g: sp.csr_matrix, g_t: sp.csr_matrix) -> BandedGraph:
        order = reverse_cuthill_mckee((g + g_t).tocsr(), symmetric_mode=True).astype(np.int64)
        inverse = inverse_permutation(order)
        return cls(permuted_square(g, order), permuted_square(g_t, order), order, inverse)
