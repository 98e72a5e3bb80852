"""LightGCN (He et al., SIGIR 2020): linear propagation over the user-item graph, BPR loss.

Speed: propagation uses the bipartite blocks of the normalised adjacency, R_hat (users x items) and
its transpose, as two torch CSR tensors, instead of one (U+I) x (U+I) matrix: the same maths with
half the index traffic. The backward pass of ``R_hat @ X`` is ``R_hat^T @ G``, which we already have
as a CSR tensor, so a tiny custom autograd function keeps both directions on the fast CSR kernel
(``benchmarks/baselines.py`` measures the per-epoch time against RecBole's LightGCN).
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from modalrec.models.base import register
from modalrec.models.embedding import EmbeddingRecommender

if TYPE_CHECKING:
    from modalrec.data.dataset import Dataset


def normalised_blocks(train: sp.csr_matrix) -> tuple[torch.Tensor, torch.Tensor]:
    """D_u^-1/2 R D_i^-1/2 and its transpose as float32 torch CSR tensors."""
    r = train.tocsr().astype(np.float32)
    du = np.asarray(r.sum(axis=1)).ravel()
    di = np.asarray(r.sum(axis=0)).ravel()
    du_inv = np.where(du > 0, 1.0 / np.sqrt(np.maximum(du, 1e-12)), 0.0).astype(np.float32)
    di_inv = np.where(di > 0, 1.0 / np.sqrt(np.maximum(di, 1e-12)), 0.0).astype(np.float32)
    norm = sp.diags(du_inv) @ r @ sp.diags(di_inv)
    return to_torch_csr(norm.tocsr()), to_torch_csr(norm.T.tocsr())


def to_torch_csr(m: sp.csr_matrix) -> torch.Tensor:
    m = m.tocsr()
    m.sort_indices()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
        return torch.sparse_csr_tensor(
            torch.from_numpy(m.indptr.astype(np.int64)),
            torch.from_numpy(m.indices.astype(np.int64)),
            torch.from_numpy(m.data.astype(np.float32)),
            size=m.shape,
            check_invariants=False,
        )


class _SpMM(torch.autograd.Function):
    """y = A @ x with A constant; grad_x = A^T @ grad_y using a precomputed CSR transpose."""

    @staticmethod
    def forward(ctx: Any, a: torch.Tensor, a_t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        ctx.a_t = a_t
        return a @ x

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[None, None, torch.Tensor]:
        return None, None, ctx.a_t @ grad


def spmm(a: torch.Tensor, a_t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
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
    r: torch.Tensor, r_t: torch.Tensor, eu: torch.Tensor, ei: torch.Tensor, n_layers: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean of layer outputs 0..n_layers of LightGCN propagation on the bipartite graph."""
    su, si = eu, ei
    for _ in range(n_layers):
        eu, ei = spmm(r, r_t, ei), spmm(r_t, r, eu)
        su, si = su + eu, si + ei
    return su / (n_layers + 1), si / (n_layers + 1)


@register
class LightGCN(EmbeddingRecommender):
    """LightGCN with ``n_layers`` propagation layers and layer-mean readout."""

    name = "lightgcn"

    @classmethod
    def default_params(cls) -> dict[str, Any]:
        return {**super().default_params(), "n_layers": 2}

    def build(self, dataset: Dataset) -> nn.Module:
        self._r, self._r_t = normalised_blocks(dataset.train)
        return _Embeddings(dataset.n_users, dataset.n_items, int(self.params["dim"]))

    def propagate(self) -> tuple[torch.Tensor, torch.Tensor]:
        return lightgcn_propagate(
            self._r, self._r_t, self.net.user.weight, self.net.item.weight, int(self.params["n_layers"])
        )
