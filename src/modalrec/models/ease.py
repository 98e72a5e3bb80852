"""EASE (Steck 2019) and its content-augmented form: closed-form item-item linear recommenders.

Why EASE: on dense catalogues such as MovieLens it is the strongest simple baseline there is (on our
ML-100K split it beats LightGCN by about .025 Recall@20 and .03 NDCG@20), it has one hyperparameter,
and it fits in seconds with no training loop, so there is no early stopping to get wrong.

    B = argmin ||X - X B||^2 + l2 ||B||^2   subject to diag(B) = 0
      = I - P / diag(P),   P = (X^T X + l2 I)^-1                         score(u) = x_u B

Why the content form (:class:`ContentEASE`): item content enters as **pseudo-users**, one per feature
dimension, stacked under the interaction matrix ("collective" side information, Jeunen, Van Balen &
Goethals 2020, *Closing the gap: exploiting side-information for linear recommendation*). In Gram form
that adds ``w_m F_m F_m^T`` per modality to ``X^T X``: items whose content agrees now explain each other a
little even where users did not co-consume them, and an item with no interactions at all (cold start)
still gets a column of ``B`` through its content. ``w_m = content_weight * tr(X^T X) / tr(F_m F_m^T)``,
so ``content_weight`` is the content's share of the Gram diagonal, independent of feature scale and
width. Features go through the same mask-aware standardisation as every content model
(:func:`modalrec.models.content.prepared_features`): a missing modality adds nothing for that item.

Cost: one dense ``n_items x n_items`` inverse (float64): fine to ~20k items (3 GB per copy); above
``max_items``, or above the memory budget (:func:`modalrec.core.memory.check_allocation`), the fit
refuses with a clear error instead of exhausting memory, and names the alternative:

Why :class:`NeighborEASE` (``ease_knn``): EASE's constrained solution is, column by column, a ridge
regression of item ``j`` on all other items; restricting the regressors to ``j``'s top ``N``
co-occurrence neighbours keeps the closed form (one ``N x N`` solve per item, no training loop) at
``O(n_items N)`` memory, so it runs past 20k items. The Gram entries among the neighbours are read from
the Gram sparsified to each item's top-``N`` list (pairs in neither list count as 0, as in SANSA,
Spisak et al. 2023). With every item in every neighbourhood it *is* EASE (a test checks it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import numpy as np
import scipy.linalg
import scipy.sparse as sp
import torch
from pydantic import Field
from typing_extensions import TypeVar

from modalrec.core.errors import ConfigError
from modalrec.core.memory import check_allocation, human_bytes
from modalrec.core.params import Params
from modalrec.models.base import Recommender, interactions_from_state, interactions_state, register
from modalrec.models.content import optional_modalities, prepared_features
from modalrec.models.neighbors import cooccurrence_topk, neighbor_ease_weights

if TYPE_CHECKING:
    from modalrec.data.dataset import Dataset


#: Dense ``n_items^2`` float64 arrays alive at the peak of an EASE fit: the Gram matrix, its
#: regularised copy (factorised in place), the identity right-hand side, the inverse and ``B``.
DENSE_COPIES = 5
ALTERNATIVE = (
    "use ease_knn (EASE restricted to each item's top co-occurrence neighbours, sparse) "
    "or itemknn, which need no item x item dense matrix"
)


def ease_weights(gram: np.ndarray, l2: float) -> np.ndarray:
    """EASE's closed form from a Gram matrix: ``B = I - P / diag(P)``, ``P = (gram + l2 I)^-1``, diag 0.

    >>> x = np.array([[1, 1, 0], [1, 1, 0], [0, 1, 1]], dtype=np.float64)
    >>> b = ease_weights(x.T @ x, 0.5)
    >>> np.diag(b).tolist(), bool(b[0, 1] > b[0, 2])
    ([0.0, 0.0, 0.0], True)
    """
    if l2 <= 0:
        raise ConfigError(f"EASE needs l2 > 0 (got {l2}): without it the Gram matrix may be singular")
    g = np.array(gram, dtype=np.float64, copy=True)
    g[np.diag_indices_from(g)] += l2
    p = scipy.linalg.cho_solve(scipy.linalg.cho_factor(g, overwrite_a=True), np.eye(len(g)))
    b = p / -np.diag(p)[None, :]
    np.fill_diagonal(b, 0.0)
    return b


class EASEParams(Params):
    """EASE: the ridge penalty, and a guard against a dense inverse that would not fit in memory."""

    l2: float = Field(300.0, gt=0, description="ridge penalty on B (larger = smoother, more popularity-like)")
    max_items: int = Field(20000, ge=1, description="refuse to fit above this many items (dense n^2 inverse)")


class ContentEASEParams(EASEParams):
    """Content EASE: EASE's settings plus how much of the Gram diagonal content pseudo-users get."""

    content_weight: float = Field(
        0.2, ge=0, description="content's share of the Gram diagonal, per modality (0 = plain EASE)"
    )
    modalities: list[str] | str | None = Field(
        None, description="feature modalities used as pseudo-users (None = all; [] = none)"
    )


#: The hyperparameter class of an EASE model.
EP = TypeVar("EP", bound=EASEParams, default=EASEParams)


@register
class EASE(Recommender[EP]):
    """Closed-form item-item linear model (Steck 2019): ``score(u) = x_u B``, B from one matrix inverse.

    Why: on dense catalogues it is the strongest simple baseline there is, and it fits in seconds with
    no training loop, so there is no early stopping to get wrong.
    """

    name = "ease"
    params_class: ClassVar[type[Params]] = EASEParams

    def _fit(self, dataset: Dataset, *, progress: bool) -> None:
        n = dataset.n_items
        if n > self.hp.max_items:
            raise ConfigError(
                f"{self.name}: {n} items need a dense {n}^2 inverse (about {human_bytes(DENSE_COPIES * 8.0 * n * n)}; "
                f"over max_items={self.hp.max_items}); {ALTERNATIVE}"
            )
        check_allocation(
            DENSE_COPIES * 8.0 * n * n,
            what=f"{self.name}: the dense {n} x {n} float64 Gram matrix and its inverse ({DENSE_COPIES} copies)",
            alternative=ALTERNATIVE,
        )
        x = dataset.train.tocsr().astype(np.float64)
        gram = (x.T @ x).toarray()
        gram = self._augment(gram, dataset)
        b = ease_weights(gram, self.hp.l2)
        self._set(dataset.train, b.astype(np.float32))

    def _augment(self, gram: np.ndarray, dataset: Dataset) -> np.ndarray:
        """Hook for side information; plain EASE uses the interactions only."""
        return gram

    def _set(self, train: sp.csr_matrix, b: np.ndarray) -> None:
        self._train = train.tocsr().astype(np.float32)
        # B under the name serving looks for (as ItemKNN's ``_sim``): a history vector h scores
        # h @ B, so feedback folds in at once and "similar items" reads a row of B.
        self._sim = np.ascontiguousarray(b, dtype=np.float32)

    def _state_to_save(self) -> dict[str, np.ndarray]:
        return {"b": self._sim, **interactions_state(self._train)}

    def _restore(self, state: dict[str, np.ndarray]) -> None:
        train = interactions_from_state(state, (self.n_users, self.n_items))
        self._set(train, state["b"])

    def _score(self, users: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.asarray(self._train[users] @ self._sim, dtype=np.float32))


@register
class ContentEASE(EASE[ContentEASEParams]):
    """EASE with item content as pseudo-users (collective side information): ``X^T X + sum_m w_m F_m F_m^T``.

    Why: items whose content agrees explain each other a little even where users did not co-consume
    them, and an item without interactions (cold start) still gets a column of B through its content.
    """

    name = "ease_content"
    params_class = ContentEASEParams
    uses_features = True

    def _augment(self, gram: np.ndarray, dataset: Dataset) -> np.ndarray:
        mods = optional_modalities(dataset, self.hp.modalities)
        alpha = self.hp.content_weight  # >= 0: validated by ContentEASEParams
        self.meta["modalities"] = list(mods)
        if alpha == 0:
            return gram
        feats, _ = prepared_features(dataset, mods)
        scale = float(np.trace(gram))
        for m in mods:
            f = feats[m].astype(np.float64)
            c = f @ f.T
            tr = float(np.trace(c))
            if tr > 0:
                gram = gram + (alpha * scale / tr) * c
        return gram


class NeighborEASEParams(Params):
    """Neighbour-restricted EASE: the ridge penalty and how many neighbours each item regresses on."""

    l2: float = Field(100.0, gt=0, description="ridge penalty on B (larger = smoother, more popularity-like)")
    neighbors: int = Field(
        100, ge=1, description="regressors per item: its top co-occurrence neighbours by cosine (N)"
    )
    shrink: float = Field(
        0.0, ge=0, description="cosine shrinkage used to pick the neighbours (damps rarely co-seen pairs)"
    )


@register
class NeighborEASE(Recommender[NeighborEASEParams]):
    """EASE restricted to each item's top-N co-occurrence neighbours: sparse B, closed form, no dense inverse.

    Why: EASE past 20k items. Column ``j`` of B is the ridge regression of item ``j`` on its ``N``
    neighbours, ``B[S_j, j] = (G_SS + l2 I)^-1 G_Sj`` with ``G`` the Gram matrix sparsified to the top-N
    lists (EASE is the case ``S_j`` = all other items); B keeps ``N`` entries per column, so it stores
    and scores like ItemKNN's similarity.
    """

    name = "ease_knn"
    params_class = NeighborEASEParams

    def _fit(self, dataset: Dataset, *, progress: bool) -> None:
        co = cooccurrence_topk(dataset.train, self.hp.neighbors, self.hp.shrink)
        b, fixed = neighbor_ease_weights(co, self.hp.l2)
        # items whose system the sparsified Gram left indefinite (solved with a raised diagonal)
        self.meta["indefinite_systems"] = fixed
        self._set(dataset.train, b)

    def _set(self, train: sp.csr_matrix, b: sp.csr_matrix) -> None:
        self._train = train.tocsr().astype(np.float32)
        # B under the name serving looks for (a sparse item x item matrix, as ItemKNN's ``_sim``)
        self._sim = b.tocsr().astype(np.float32)

    def _state_to_save(self) -> dict[str, np.ndarray]:
        return {
            "b_indptr": self._sim.indptr.astype(np.int64),
            "b_indices": self._sim.indices.astype(np.int64),
            "b_data": self._sim.data,
            **interactions_state(self._train),
        }

    def _restore(self, state: dict[str, np.ndarray]) -> None:
        shape = (self.n_items, self.n_items)
        b = sp.csr_matrix((state["b_data"], state["b_indices"], state["b_indptr"]), shape=shape)
        self._set(interactions_from_state(state, (self.n_users, self.n_items)), b)

    def _score(self, users: np.ndarray) -> torch.Tensor:
        return torch.from_numpy((self._train[users] @ self._sim).toarray().astype(np.float32))
