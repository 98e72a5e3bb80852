"""The one Recommender protocol every model implements, plus the registry and persistence.

Why so small: like ``implicit``'s base class, a recommender only has to say how to ``fit`` and how to
``score`` a chunk of users; ranking, masking of seen items, chunking, saving and loading are shared
here so that every model behaves the same at the edges (and the shipped conformance checks in
:mod:`modalrec.models.checks` hold every registered model to it).

Persistence: a model is a directory holding ``model.json`` (class name + hyperparameters + extra
JSON state) and ``model.safetensors`` (all array state), written by the one persistence base of
:mod:`modalrec.core.persistence`. No pickle.

Validation during training is a callable passed in (``fit(..., validator=...)``): model code decides
*when* to validate, the caller decides *how*. The default is validation Recall@20 under the
full-ranking protocol of :mod:`modalrec.evaluation` (a layer below this one).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, Self

import numpy as np
import scipy.sparse as sp
import torch

from modalrec.core.errors import FitError
from modalrec.core.persistence import Component, P
from modalrec.core.ranking import check_scores_allocation, chunks, mask_rows, plan_chunk_size, topk_scores
from modalrec.core.registry import Registry

if TYPE_CHECKING:
    from modalrec.data.dataset import Dataset

__all__ = [
    "REGISTRY",
    "Recommender",
    "Validator",
    "chunks",
    "create",
    "interactions_from_state",
    "interactions_state",
    "mask_rows",
    "register",
    "topk_scores",
]

#: ``validator(model) -> float``: the early-stopping criterion (higher is better) on validation data.
Validator = Callable[["Recommender[Any]"], float]

REGISTRY: Registry[type[Recommender]] = Registry("model", populate="modalrec.models")


def register(cls: type[Recommender[Any]]) -> type[Recommender[Any]]:
    """Class decorator: make a model available by its ``name`` to configs and the CLI."""
    return REGISTRY.register(cls.name)(cls)


def create(name: str, **params: Any) -> Recommender:
    """Instantiate a registered model by name with hyperparameters (validated against its declaration).

    >>> create("popularity").name
    'popularity'
    >>> create("itemknn", k=-3)
    Traceback (most recent call last):
    modalrec.core.errors.ConfigError: model 'itemknn': hyperparameter 'k' = -3: Input should be greater than or equal to 1 (k: int >= 1)
    """
    return REGISTRY.get_or_raise(name)(**params)


def interactions_state(train: sp.csr_matrix) -> dict[str, np.ndarray]:
    """The arrays that store a binary user x item matrix (models that score from the user's history)."""
    return {"train_indptr": train.indptr.astype(np.int64), "train_indices": train.indices.astype(np.int64)}


def interactions_from_state(state: dict[str, np.ndarray], shape: tuple[int, int]) -> sp.csr_matrix:
    """Inverse of :func:`interactions_state`.

    >>> m = sp.csr_matrix(np.array([[0, 1], [1, 1]], dtype=np.float32))
    >>> interactions_from_state(interactions_state(m), (2, 2)).toarray().tolist()
    [[0.0, 1.0], [1.0, 1.0]]
    """
    ti = state["train_indices"]
    return sp.csr_matrix((np.ones(len(ti), dtype=np.float32), ti, state["train_indptr"]), shape=shape)


class Recommender(Component[P], ABC):
    """Base class: subclasses set ``name`` and ``params_class`` and implement ``_fit`` and ``_score``.

    Hyperparameters are declared once in the model's :class:`~modalrec.core.params.Params` class
    (type, default, range, meaning) and read as ``self.hp.<name>``; learned arrays live in
    ``self._state`` (a dict of numpy arrays) so that ``save``/``load`` (in
    :class:`~modalrec.core.persistence.Component`) need no per-model code.
    """

    kind: ClassVar[str] = "model"
    stem: ClassVar[str] = "model"
    registry: ClassVar[Registry[Any]] = REGISTRY
    #: Whether the model uses item content features (multimodal models set True).
    uses_features: ClassVar[bool] = False

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.n_users = 0
        self.n_items = 0
        self._validator: Validator | None = None

    # ------------------------------------------------------------------ protocol
    def fit(self, dataset: Dataset, *, progress: bool = True, validator: Validator | None = None) -> Self:
        """Learn from ``dataset.train``; models with early stopping call ``validator`` (default:
        Recall@20 on ``dataset.valid``, full ranking) and keep their best state.

        Raises :class:`~modalrec.core.errors.FitError` when training leaves NaN in the learned
        arrays (a diverged run), like ``implicit``'s ``_check_fit_errors``: a NaN model would
        otherwise rank items in arbitrary order without a word.
        """
        self.n_users, self.n_items = dataset.n_users, dataset.n_items
        self.meta = {}
        self._validator = validator if validator is not None else _default_validator(dataset)
        try:
            self._fit(dataset, progress=progress)
        finally:
            self._validator = None
        self.meta.setdefault("n_users", self.n_users)
        self.meta.setdefault("n_items", self.n_items)
        self._check_finite()
        return self

    def validate(self) -> float:
        """The validation criterion of the running ``fit`` (higher is better)."""
        if self._validator is None:
            raise RuntimeError("validate() is only available while fit() runs")
        return self._validator(self)

    def _check_finite(self) -> None:
        for key, arr in self._state_to_save().items():
            a = np.asarray(arr)
            # a sum is NaN when any entry is: no n^2 boolean temporary for EASE's dense weights
            if a.dtype.kind != "f" or not a.size or not np.isnan(a.sum(dtype=np.float64)):
                continue
            if np.isnan(a).any():
                n_bad = int(np.isnan(a).sum())
                self.n_users = self.n_items = 0  # a diverged model is not a fitted one
                raise FitError(
                    f"model {self.name!r}: training produced {n_bad} NaN values in {key!r} "
                    f"(diverged; lower the learning rate or raise the regularisation)"
                )

    @abstractmethod
    def _fit(self, dataset: Dataset, *, progress: bool) -> None: ...

    @abstractmethod
    def _score(self, users: np.ndarray) -> torch.Tensor:
        """float32 scores [len(users), n_items] for a chunk of dense user indices."""

    @property
    def is_fitted(self) -> bool:
        return self.n_items > 0

    def score(self, users: np.ndarray | list[int]) -> np.ndarray:
        """Scores of every item for each user, float32 [len(users), n_items].

        The result grows with users x items, so it is checked against the memory budget first
        (:func:`~modalrec.core.ranking.check_scores_allocation`); :meth:`recommend` ranks any number of
        users in chunks instead.
        """
        self._check_fitted()
        users = self._check_users(users)
        check_scores_allocation(
            2.0 * 4 * len(users) * self.n_items,  # the scores and one intermediate of the model
            what=f"{type(self).__name__}.score() of {len(users)} users x {self.n_items} items (float32)",
            alternative="use recommend() (top-k in chunks sized from the budget) or score fewer users per call",
        )
        return self._score(users).detach().float().numpy()

    def recommend(
        self,
        users: np.ndarray | list[int],
        k: int = 10,
        *,
        exclude: sp.csr_matrix | None = None,
        chunk_size: int | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` item indices and scores for each user, skipping items in ``exclude`` rows.

        ``exclude`` is a users x items matrix (typically the training interactions); items with a
        non-zero entry are never recommended to that user. Users are scored in chunks so that the
        full user x item matrix is never built: at most 2048 users, fewer for large catalogues so
        that a chunk stays within the memory budget (:func:`~modalrec.core.ranking.plan_chunk_size`,
        which refuses a given ``chunk_size`` that does not fit).
        """
        self._check_fitted()
        users = self._check_users(users)
        chunk_size = plan_chunk_size(self.n_items, chunk_size, n_users=len(users), max_users=2048)
        out_idx = np.empty((len(users), min(k, self.n_items)), dtype=np.int64)
        out_val = np.empty(out_idx.shape, dtype=np.float32)
        with torch.inference_mode():
            for sl in chunks(len(users), chunk_size):
                rows = users[sl]
                s = self._score(rows).float()
                s = mask_rows(s, exclude, rows)
                out_idx[sl], out_val[sl] = topk_scores(s, k)
        return out_idx, out_val

    def _check_fitted(self) -> None:
        if not self.is_fitted:
            raise RuntimeError(f"{type(self).__name__} is not fitted; call fit() or load() first")

    def _check_users(self, users: np.ndarray | list[int]) -> np.ndarray:
        u = np.asarray(users, dtype=np.int64).ravel()
        if len(u) and (u.min() < 0 or u.max() >= self.n_users):
            bad = u[(u < 0) | (u >= self.n_users)][0]
            raise IndexError(f"user index {bad} out of range [0, {self.n_users})")
        return u

    # ------------------------------------------------------------------ persistence
    def _facts(self) -> dict[str, Any]:
        return {"n_users": self.n_users, "n_items": self.n_items}

    def _restore_facts(self, info: dict[str, Any]) -> None:
        self.n_users, self.n_items = int(info["n_users"]), int(info["n_items"])


def _default_validator(dataset: Dataset) -> Validator:
    """Recall@20 on the validation split under the full-ranking protocol."""
    from modalrec.evaluation.protocol import recall_at

    return lambda model: recall_at(model, dataset, "valid", k=20)
