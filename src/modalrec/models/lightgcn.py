"""LightGCN (He et al., SIGIR 2020): linear propagation over the user-item graph, BPR loss.

Speed: propagation uses the bipartite blocks of the normalised adjacency, R_hat (users x items) and
its transpose, as two CSR matrices, instead of one (U+I) x (U+I) matrix: the same maths with half
the index traffic. The backward pass of ``R_hat @ X`` is ``R_hat^T @ G``, which we already have as a
CSR matrix, so a tiny custom autograd function keeps both directions on the fast CSR kernel
(``benchmarks/baselines.py`` measures the per-epoch time against RecBole's LightGCN).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp
import torch
from pydantic import Field
from torch import nn

from modalrec.models.base import register
from modalrec.models.embedding import EmbeddingParams, EmbeddingRecommender

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


class _SpMM(torch.autograd.Function):
    """y = A @ x with A a constant scipy CSR matrix; grad_x = A^T @ grad_y (precomputed CSR).

    Why scipy and not torch.sparse: on this 2-core CPU, scipy's CSR kernel was as fast as torch's
    single-threaded CSR kernel and 5-6x faster than torch's multi-threaded one whenever the machine
    had any other load (measured on Amazon Baby: 11 ms vs 65 ms per product). The tensors are
    shared with numpy without copies.
    """

    @staticmethod
    def forward(ctx: Any, a: sp.csr_matrix, a_t: sp.csr_matrix, x: torch.Tensor) -> torch.Tensor:
        ctx.a_t = a_t
        return torch.from_numpy(a @ x.detach().numpy())

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[None, None, torch.Tensor]:
        return None, None, torch.from_numpy(ctx.a_t @ grad.contiguous().numpy())


def spmm(a: sp.csr_matrix, a_t: sp.csr_matrix, x: torch.Tensor) -> torch.Tensor:
    """Sparse (constant) times dense with a CSR backward; see :class:`_SpMM`."""
    return _SpMM.apply(a, a_t, x)


class _Embeddings(nn.Module):
    def __init__(self, n_users: int, n_items: int, dim: int) -> None:
        super().__init__()
        self.user = nn.Embedding(n_users, dim)
        self.item = nn.Embedding(n_items, dim)
        nn.init.xavier_uniform_(self.user.weight)
        nn.init.xavier_uniform_(self.item.weight)


def lightgcn_propagate(
    r: sp.csr_matrix, r_t: sp.csr_matrix, eu: torch.Tensor, ei: torch.Tensor, n_layers: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean of layer outputs 0..n_layers of LightGCN propagation on the bipartite graph."""
    su, si = eu, ei
    for _ in range(n_layers):
        eu, ei = spmm(r, r_t, ei), spmm(r_t, r, eu)
        su, si = su + eu, si + ei
    return su / (n_layers + 1), si / (n_layers + 1)


class LightGCNParams(EmbeddingParams):
    """LightGCN: the latent-factor settings plus the depth of graph propagation."""

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
            self._r, self._r_t, self.net.user.weight, self.net.item.weight, self.hp.n_layers
        )
