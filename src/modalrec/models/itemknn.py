"""Item-based k-nearest-neighbours with cosine similarity on the training interactions.

Why keep it: it is the strongest simple baseline on many catalogues, it needs no training loop, and
its sparse top-k similarity matrix is cheap to store (three CSR arrays in safetensors). The similarity
is computed sparsely (co-occurring pairs only, pruned block by block), so it scales to 10^5-10^6 items.

``pop_weight`` (default 0: plain ItemKNN, scores unchanged bit for bit) blends item popularity into the
score. Why: on catalogues whose users have one or two training items and whose targets are popular
(TikTok: median 2 training items; benchmarks/results/itemknn_popularity.json) the cosine neighbours of
those items are not the popular ones, and plain ItemKNN stays below Popularity at every ``k``/``shrink``
(issue 18). A linear blend of a neighbourhood score with a popularity prior is the standard remedy; the
asymmetric cosine (Aiolli 2013), which moves the similarity towards ``P(i | j)``, was tried on TikTok
validation and barely moved it (.0295 -> .0315), since for a one-item user it ranks like raw co-counts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp
import torch
from pydantic import Field

from modalrec.core.params import Params
from modalrec.models.base import Recommender, interactions_from_state, interactions_state, register
from modalrec.models.neighbors import cooccurrence_topk

if TYPE_CHECKING:
    from modalrec.data.dataset import Dataset


def cosine_item_similarity(
    train: sp.csr_matrix, k: int, shrink: float = 0.0, block: int = 2048
) -> sp.csr_matrix:
    """Item x item cosine similarity of the columns of ``train``, top ``k`` per item, no self-loops.

    Sparse all the way (:func:`modalrec.models.neighbors.cooccurrence_topk`): only co-occurring pairs
    are computed, and each block of rows is pruned to its top ``k`` before the next, so no dense item x
    item array (nor a dense ``block x n_items`` slab) is ever allocated. The result is bit-identical to
    the former dense-block computation (tests/models/test_neighbors.py keeps it as the reference).
    """
    return cooccurrence_topk(train, k, shrink, block).cosine


class ItemKNNParams(Params):
    """ItemKNN: neighbourhood size and similarity shrinkage."""

    k: int = Field(100, ge=1, description="neighbours kept per item (top-k cosine similarities)")
    shrink: float = Field(
        0.0, ge=0, description="added to the cosine denominator: damps rarely co-seen pairs"
    )
    pop_weight: float = Field(
        0.0,
        ge=0,
        le=1,
        description="popularity blend: (1 - w) * neighbourhood score / its max per user + w * popularity "
        "/ its max; 0 = plain ItemKNN (unchanged scores), 1 = Popularity",
    )


@register
class ItemKNN(Recommender[ItemKNNParams]):
    """Item-based nearest neighbours: score(u, i) = sum over the user's training items j of sim(j, i).

    ``sim`` is the cosine similarity of item interaction columns, top-``k`` per item. Why: the
    strongest simple baseline on sparse catalogues, no training loop, and a sparse similarity matrix
    that is cheap to store and serve. With ``pop_weight`` w > 0 the score is
    ``(1 - w) * s(u, i) / max_i s(u, i) + w * pop(i) / max pop`` (both parts in [0, 1], so one w means
    the same on every data set; a user without neighbour scores is ranked by popularity): see the module
    docstring for why.
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
        self._pop = torch.from_numpy((pop / max(pop.max(), 1.0)).astype(np.float32))

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
        w = float(self.hp.pop_weight)
        if w == 0.0:  # plain ItemKNN: the very computation it always had
            return s + self._tiebreak
        top = s.max(dim=1, keepdim=True).values
        top = torch.where(top > 0, top, torch.ones_like(top))  # no neighbour score: popularity ranks
        return (1.0 - w) * (s / top) + w * self._pop + self._tiebreak
