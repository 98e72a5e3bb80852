"""LightGCN (He et al., SIGIR 2020): linear propagation over the user-item graph, BPR loss.

Speed: propagation uses the bipartite blocks of the normalised adjacency, R_hat (users x items) and
its transpose, as two CSR matrices, instead of one (U+I) x (U+I) matrix: the same maths with half
the index traffic. The backward pass of ``R_hat @ X`` is ``R_hat^T @ G``, which we already have as a
CSR matrix, so a tiny custom autograd function keeps both directions on the fast CSR kernel
(``benchmarks/baselines.py`` measures the per-epoch time against RecBole's LightGCN).

Scale: with ``propagation="shared"`` (the training loop in :mod:`modalrec.models.embedding`) one
propagation serves a whole group of mini-batches, so an epoch costs ``steps_per_epoch`` propagations
instead of one per mini-batch of 2048: linear in the interactions instead of quadratic
(``benchmarks/graph_linear.py`` measures both). With ``threads`` >= 2 each sparse product is split by
rows over that many threads (scipy releases the GIL in its CSR kernel), the same numbers either way.
"""

from __future__ import annotations

import functools
import os
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp
import torch
from pydantic import Field
from torch import nn

from modalrec.models.base import register
from modalrec.models.embedding import EmbeddingRecommender, GraphTrainingParams
from modalrec.models.graph_order import ItemOrderCache, ItemOrderedBlocks, to_given, to_positions

if TYPE_CHECKING:
    from modalrec.data.dataset import Dataset


def normalised_blocks(train: sp.csr_matrix) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """D_u^-1/2 R D_i^-1/2 (users x items) and its transpose, as float32 scipy CSR matrices."""
    r = train.tocsr().astype(np.float32)
    du = np.asarray(r.sum(axis=1)).ravel()
    di = np.asarray(r.sum(axis=0)).ravel()
    du_inv = np.where(du > 0, 1.0 / np.sqrt(np.maximum(du, 1e-12)), 0.0).astype(np.float32)
    di_inv = np.where(di > 0, 1.0 / np.sqrt(np.maximum(di, 1e-12)), 0.0).astype(np.float32)
    norm = (sp.diags(du_inv) @ r @ sp.diags(di_inv)).astype(np.float32).tocsr()
    norm.sort_indices()
    norm_t = norm.T.tocsr()
    norm_t.sort_indices()
    return norm, norm_t


#: Products with fewer stored entries than this stay on one thread (thread hand-off costs more).
PARALLEL_MIN_NNZ = 200_000


@functools.lru_cache(maxsize=4)
def _pool(workers: int) -> ThreadPoolExecutor:
    """One long-lived pool per worker count (threads are cheap to keep, costly to start per product)."""
    return ThreadPoolExecutor(max_workers=workers, thread_name_prefix="modalrec-spmm")


def resolve_workers(threads: int) -> int:
    """Threads for sparse products: ``threads`` (the model's setting), 0 = every core."""
    return threads if threads > 0 else os.cpu_count() or 1


def csr_matmul(a: sp.csr_matrix, x: np.ndarray, workers: int = 1, min_nnz: int | None = None) -> np.ndarray:
    """``a @ x`` for CSR ``a``, split into ``workers`` row blocks of equal stored entries.

            Why: scipy's CSR kernel is single-threaded but releases the GIL, so row blocks computed in threads
            use both cores of this machine; each output row is computed exactly as in one call (same bytes).
        Matrices with fewer than ``min_nnz`` stored entries (default :data:`PARALLEL_MIN_NNZ`) stay on one
    thread.

            >>> a = sp.random(50, 40, density=0.2, random_state=0, format="csr", dtype=np.float32)
            >>> x = np.random.default_rng(0).standard_normal((40, 3)).astype(np.float32)
            >>> bool((csr_matmul(a, x, workers=3, min_nnz=0) == a @ x).all())
            True
    """
    if workers <= 1 or a.nnz < (PARALLEL_MIN_NNZ if min_nnz is None else min_nnz):
        return np.asarray(a @ x)
    x = np.ascontiguousarray(x)
    out = np.empty((a.shape[0], x.shape[1]), dtype=np.result_type(a.dtype, x.dtype))

    bounds = _row_bounds(a, workers)

    def block(k: int) -> None:
        r0, r1 = bounds[k], bounds[k + 1]
        if r1 > r0:
            out[r0:r1] = _rows(a, r0, r1) @ x

    list(_pool(workers).map(block, range(workers)))
    return out


def _row_bounds(a: sp.csr_matrix, blocks: int) -> list[int]:
    """Row cuts of ``a`` into ``blocks`` runs of (about) equal stored entries."""
    cuts = np.searchsorted(a.indptr, np.linspace(0, a.nnz, blocks + 1)[1:-1])
    return [0, *[int(c) for c in cuts], a.shape[0]]


def _rows(a: sp.csr_matrix, r0: int, r1: int) -> sp.csr_matrix:
    """Rows ``r0:r1`` of CSR ``a`` as a CSR matrix over the same arrays (no copy of the entries)."""
    s0, s1 = a.indptr[r0], a.indptr[r1]
    return sp.csr_matrix(
        (a.data[s0:s1], a.indices[s0:s1], a.indptr[r0 : r1 + 1] - s0), shape=(r1 - r0, a.shape[1])
    )


#: Fixed number of partial sums of :func:`scatter_matmul` (not the thread count: the same bytes
#: whatever ``workers`` is).
SCATTER_BLOCKS = 2


def scatter_matmul(a_t: sp.csr_matrix, x: np.ndarray, workers: int = 1) -> np.ndarray:
    """``a_t.T @ x`` through the CSC view of ``a_t`` (scipy's column kernel): each stored entry adds
    ``x``'s row into a row of the (smaller) output.

    Why: for the users -> items product of a 1M-user graph, gathering user rows in CSR order jumps
    around a 256 MB table, while the column kernel reads ``x`` in order and scatters into the 51 MB
    item table: 0.41 s instead of 0.75 s per product at size M on one thread. The rows of ``a_t`` are
    cut into :data:`SCATTER_BLOCKS` runs whose partial sums are added in a fixed order, so one or two
    threads give the same bytes.

    >>> a = sp.random(40, 300, density=0.05, random_state=0, format="csr", dtype=np.float32)
    >>> x = np.random.default_rng(0).standard_normal((40, 3)).astype(np.float32)
    >>> bool(np.allclose(scatter_matmul(a, x), a.T @ x, atol=1e-6))
    True
    """
    x = np.ascontiguousarray(x)
    bounds = _row_bounds(a_t, SCATTER_BLOCKS)

    def part(k: int) -> np.ndarray:
        r0, r1 = bounds[k], bounds[k + 1]
        return np.asarray(_rows(a_t, r0, r1).T @ x[r0:r1])

    blocks = range(SCATTER_BLOCKS)
    parts = list(_pool(workers).map(part, blocks)) if workers > 1 else [part(k) for k in blocks]
    out = parts[0]
    for p in parts[1:]:
        out += p
    return out


def product(a: sp.csr_matrix, a_t: sp.csr_matrix, x: np.ndarray, workers: int = 1) -> np.ndarray:
    """``a @ x`` by the faster kernel: the column scatter (:func:`scatter_matmul` on ``a_t``, the
    transpose of ``a``) when the output has at most half the rows of ``x`` and the product is large,
    else the row-split CSR gather (:func:`csr_matmul`). Small graphs (every benchmark data set) keep
    the CSR path and its exact bytes."""
    if a.shape[0] * 2 <= a.shape[1] and a.nnz >= PARALLEL_MIN_NNZ:
        return scatter_matmul(a_t, x, workers)
    return csr_matmul(a, x, workers)


class _SpMM(torch.autograd.Function):
    """y = A @ x with A a constant scipy CSR matrix; grad_x = A^T @ grad_y (precomputed CSR).

    Why scipy and not torch.sparse: on this 2-core CPU, scipy's CSR kernel was as fast as torch's
    single-threaded CSR kernel and 5-6x faster than torch's multi-threaded one whenever the machine
    had any other load (measured on Amazon Baby: 11 ms vs 65 ms per product). The tensors are
    shared with numpy without copies; ``workers`` > 1 splits the rows over threads (:func:`csr_matmul`).
    """

    @staticmethod
    def forward(
        ctx: Any, a: sp.csr_matrix, a_t: sp.csr_matrix, x: torch.Tensor, workers: int
    ) -> torch.Tensor:
        ctx.a, ctx.a_t = a, a_t
        ctx.workers = workers
        return torch.from_numpy(product(a, a_t, x.detach().numpy(), workers))

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[None, None, torch.Tensor, None]:
        grad_x = product(ctx.a_t, ctx.a, grad.contiguous().numpy(), ctx.workers)
        return None, None, torch.from_numpy(grad_x), None


def spmm(a: sp.csr_matrix, a_t: sp.csr_matrix, x: torch.Tensor, workers: int = 1) -> torch.Tensor:
    """Sparse (constant) times dense with a CSR backward; see :class:`_SpMM`."""
    return _SpMM.apply(a, a_t, x, workers)


class _Embeddings(nn.Module):
    def __init__(self, n_users: int, n_items: int, dim: int) -> None:
        super().__init__()
        self.user = nn.Embedding(n_users, dim)
        self.item = nn.Embedding(n_items, dim)
        nn.init.xavier_uniform_(self.user.weight)
        nn.init.xavier_uniform_(self.item.weight)


def layer_mean(
    r: sp.csr_matrix, r_t: sp.csr_matrix, xu: np.ndarray, xi: np.ndarray, n_layers: int, workers: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Mean of layers 0..n_layers of ``x -> [[0, R], [R^T, 0]] x`` in numpy, sums kept in place.

    >>> r = sp.csr_matrix(np.array([[0.5, 0.0], [0.5, 0.5]], dtype=np.float32))
    >>> u, i = layer_mean(r, r.T.tocsr(), np.ones((2, 1), np.float32), np.zeros((2, 1), np.float32), 1)
    >>> u.ravel().tolist(), i.ravel().tolist()
    ([0.5, 0.5], [0.5, 0.25])
    """
    su, si = xu, xi  # layer 0: never written to (the first sum makes new arrays)
    for layer in range(n_layers):
        xu, xi = product(r, r_t, xi, workers), product(r_t, r, xu, workers)
        if layer == 0:
            su, si = np.add(su, xu), np.add(si, xi)
        else:
            su += xu
            si += xi
    if n_layers == 0:
        return xu.copy(), xi.copy()
    su /= n_layers + 1
    si /= n_layers + 1
    return su, si


class _LayerMean(torch.autograd.Function):
    """LightGCN's whole propagation as one autograd node.

    Why: the normalised adjacency [[0, R], [R^T, 0]] is symmetric, so the backward pass of the layer
    mean is the same layer mean applied to the gradients. One node with in-place sums replaces 4 x
    n_layers autograd nodes and their table-sized temporaries: at size M (1M users) those cost 1.6 s
    of a 7 s shared step (benchmarks/results/epoch_profile.md).
    """

    @staticmethod
    def forward(
        ctx: Any,
        r: sp.csr_matrix,
        r_t: sp.csr_matrix,
        eu: torch.Tensor,
        ei: torch.Tensor,
        n_layers: int,
        workers: int,
        order: np.ndarray | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        xi = to_positions(ei.detach().numpy(), order)
        su, si = layer_mean(r, r_t, eu.detach().numpy(), xi, n_layers, workers)
        ctx.graph = (r, r_t, n_layers, workers, eu.shape[1], su.dtype, order)
        return torch.from_numpy(su), torch.from_numpy(to_given(si, order))

    @staticmethod
    def backward(ctx: Any, gu: torch.Tensor | None, gi: torch.Tensor | None) -> tuple[Any, ...]:
        r, r_t, n_layers, workers, dim, dtype, order = ctx.graph
        gu_np = np.zeros((r.shape[0], dim), dtype) if gu is None else gu.contiguous().numpy()
        gi_np = np.zeros((r.shape[1], dim), dtype) if gi is None else gi.contiguous().numpy()
        du, di = layer_mean(r, r_t, gu_np, to_positions(gi_np, order), n_layers, workers)
        return None, None, torch.from_numpy(du), torch.from_numpy(to_given(di, order)), None, None, None


def lightgcn_propagate(
    r: sp.csr_matrix,
    r_t: sp.csr_matrix,
    eu: torch.Tensor,
    ei: torch.Tensor,
    n_layers: int,
    workers: int = 1,
    fused: bool = False,
    ordered: ItemOrderedBlocks | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean of layer outputs 0..n_layers of LightGCN propagation on the bipartite graph.

    ``fused`` runs it as one autograd node (:class:`_LayerMean`: same maths, fewer temporaries; the
    shared-propagation path uses it), on ``ordered`` (``r`` and ``r_t`` with the items renumbered,
    :class:`ItemOrderedBlocks`) when given. Off, every layer is its own autograd step: the exact bytes
    of the per-batch path that the committed benchmark rows were measured with.
    """
    if fused:
        if ordered is not None:
            r, r_t = ordered.r, ordered.r_t
        order = None if ordered is None else ordered.order
        return _LayerMean.apply(r, r_t, eu, ei, n_layers, workers, order)  # type: ignore[no-any-return]
    su, si = eu, ei
    for _ in range(n_layers):
        eu, ei = spmm(r, r_t, ei, workers), spmm(r_t, r, eu, workers)
        su, si = su + eu, si + ei
    return su / (n_layers + 1), si / (n_layers + 1)


class LightGCNParams(GraphTrainingParams):
    """LightGCN: the latent-factor settings, how propagation is shared, and the depth of propagation."""

    n_layers: int = Field(2, ge=0, description="propagation layers over the user-item graph (0 = BPR-MF)")


@register
class LightGCN(EmbeddingRecommender[LightGCNParams]):
    """Graph collaborative filtering: embeddings smoothed over the user-item graph, layer-mean readout.

    Why: neighbours' embeddings carry the collaborative signal that plain BPR-MF must learn from scratch;
    LightGCN keeps only the linear propagation (no weights, no non-linearity), which trains fastest and
    is the standard strong baseline of the multimodal literature.
    """

    name = "lightgcn"
    params_class = LightGCNParams

    def build(self, dataset: Dataset) -> nn.Module:
        self._r, self._r_t = normalised_blocks(dataset.train)
        self._item_order = ItemOrderCache(self.hp.item_order)
        return _Embeddings(dataset.n_users, dataset.n_items, self.hp.dim)

    def propagate(self) -> tuple[torch.Tensor, torch.Tensor]:
        fused = self.shares_propagation()
        return lightgcn_propagate(
            self._r,
            self._r_t,
            self.net.user.weight,
            self.net.item.weight,
            self.hp.n_layers,
            resolve_workers(self.hp.threads),
            fused=fused,
            ordered=self._item_order.blocks(self._r, self._r_t) if fused else None,
        )
