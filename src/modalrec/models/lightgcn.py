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
    cuts = np.searchsorted(a.indptr, np.linspace(0, a.nnz, workers + 1)[1:-1])
    bounds = [0, *[int(c) for c in cuts], a.shape[0]]

    def block(k: int) -> None:
        r0, r1 = bounds[k], bounds[k + 1]
        if r1 <= r0:
            return
        s0, s1 = a.indptr[r0], a.indptr[r1]
        part = sp.csr_matrix(
            (a.data[s0:s1], a.indices[s0:s1], a.indptr[r0 : r1 + 1] - s0), shape=(r1 - r0, a.shape[1])
        )
        out[r0:r1] = part @ x

    list(_pool(workers).map(block, range(workers)))
    return out


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
        ctx.a_t = a_t
        ctx.workers = workers
        return torch.from_numpy(csr_matmul(a, x.detach().numpy(), workers))

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[None, None, torch.Tensor, None]:
        return None, None, torch.from_numpy(csr_matmul(ctx.a_t, grad.contiguous().numpy(), ctx.workers)), None


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


def lightgcn_propagate(
    r: sp.csr_matrix,
    r_t: sp.csr_matrix,
    eu: torch.Tensor,
    ei: torch.Tensor,
    n_layers: int,
    workers: int = 1,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean of layer outputs 0..n_layers of LightGCN propagation on the bipartite graph."""
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
        return _Embeddings(dataset.n_users, dataset.n_items, self.hp.dim)

    def propagate(self) -> tuple[torch.Tensor, torch.Tensor]:
        return lightgcn_propagate(
            self._r,
            self._r_t,
            self.net.user.weight,
            self.net.item.weight,
            self.hp.n_layers,
            resolve_workers(self.hp.threads),
        )
