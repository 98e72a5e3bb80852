"""Item-based k-nearest-neighbours with cosine similarity on the training interactions.

Why keep it: it is the strongest simple baseline on many catalogues, it needs no training loop, and
its sparse top-k similarity matrix is cheap to store (three CSR arrays in safetensors).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp
import torch
from pydantic import Field

from modalrec.core.params import Params
from modalrec.models.base import Recommender, chunks, interactions_from_state, interactions_state, register

if TYPE_CHECKING:
    from modalrec.data.dataset import Dataset


def topk_sparse_rows(sim: sp.csr_matrix, k: int) -> sp.csr_matrix:
    """Keep the ``k`` largest entries of each row of a CSR matrix (vectorised per row block)."""
    sim = sim.tocsr()
    rows, cols, vals = [], [], []
    for r in range(sim.shape[0]):
        a, b = sim.indptr[r], sim.indptr[r + 1]
        if b - a == 0:
            continue
        v = sim.data[a:b]
        c = sim.indices[a:b]
        if b - a > k:
            sel = np.argpartition(-v, k - 1)[:k]
            v, c = v[sel], c[sel]
        rows.append(np.full(len(c), r, dtype=np.int64))
        cols.append(c)
        vals.append(v)
    if not rows:
        return sp.csr_matrix(sim.shape, dtype=np.float32)
    out = sp.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
        shape=sim.shape,
        dtype=np.float32,
    )
    out.sort_indices()
    return out


def cosine_item_similarity(
    train: sp.csr_matrix, k: int, shrink: float = 0.0, block: int = 2048
) -> sp.csr_matrix:
    """Item x item cosine similarity of the columns of ``train``, top ``k`` per item, no self-loops."""
    x = train.tocsc().astype(np.float32)
    norms = np.sqrt(np.asarray(x.power(2).sum(axis=0)).ravel())
    xt = x.T.tocsr()
    n = x.shape[1]
    parts = []
    for sl in chunks(n, block):
        s = (xt[sl] @ x).toarray()
        denom = norms[sl][:, None] * norms[None, :] + shrink + 1e-12
        s = s / denom
        s[np.arange(s.shape[0]), np.arange(sl.start, sl.stop)] = 0.0
        parts.append(topk_sparse_rows(sp.csr_matrix(s), k))
    return sp.vstack(parts).tocsr()


class ItemKNNParams(Params):
    """ItemKNN: neighbourhood size and similarity shrinkage."""

    k: int = Field(100, ge=1, description="neighbours kept per item (top-k cosine similarities)")
    shrink: float = Field(
        0.0, ge=0, description="added to the cosine denominator: damps rarely co-seen pairs"
    )


@register
class ItemKNN(Recommender[ItemKNNParams]):
    """Item-based nearest neighbours: score(u, i) = sum over the user's training items j of sim(j, i).

    ``sim`` is the cosine similarity of item interaction columns, top-``k`` per item. Why: the
    strongest simple baseline on sparse catalogues, no training loop, and a sparse similarity matrix
    that is cheap to store and serve.
    """

    name = "itemknn"
    params_class = ItemKNNParams

    def _fit(self, dataset: Dataset, *, progress: bool) -> None:
        sim = cosine_item_similarity(dataset.train, self.hp.k, self.hp.shrink)
        self._set(dataset.train, sim)

    def _set(self, train: sp.csr_matrix, sim: sp.csr_matrix) -> None:
        self._train = train.tocsr().astype(np.float32)
        self._sim = sim.tocsr().astype(np.float32)
        # Tie-breaker: on sparse data many candidates share the neighbourhood score (often 0 for a user
        # whose items have no co-occurring neighbours); popularity orders them instead of item index.
        # The weight is below any difference in similarity sums that float32 can tell apart.
        pop = np.asarray(self._train.sum(axis=0)).ravel()
        self._tiebreak = torch.from_numpy((1e-6 * pop / max(pop.max(), 1.0)).astype(np.float32))

    def _state_to_save(self) -> dict[str, np.ndarray]:
        return {
            "sim_indptr": self._sim.indptr.astype(np.int64),
            "sim_indices": self._sim.indices.astype(np.int64),
            "sim_data": self._sim.data,
            **interactions_state(self._train),
        }

    def _restore(self, state: dict[str, np.ndarray]) -> None:
        sim = sp.csr_matrix(
            (state["sim_data"], state["sim_indices"], state["sim_indptr"]), shape=(self.n_items, self.n_items)
        )
        train = interactions_from_state(state, (self.n_users, self.n_items))
        self._set(train, sim)

    def _score(self, users: np.ndarray) -> torch.Tensor:
        s = torch.from_numpy((self._train[users] @ self._sim).toarray().astype(np.float32))
        return s + self._tiebreak
