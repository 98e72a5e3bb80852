"""Collaborative alignment trained end to end on interactions: a content tower into the CF space.

The content tower itself (standardisation, MLP, training, pseudo-cold validation) lives in
:mod:`modalrec.models.coldstart`, where the ``coldstart`` recommender blends it with a collaborative
model; this aligner exposes the same tower as an :class:`~modalrec.align.base.Aligner`.

Why, next to :class:`~modalrec.align.collaborative.CollaborativeAligner`: that aligner first learns a
collaborative space (PureSVD) and then regresses content onto it with a squared loss, which spends
its capacity on reproducing every latent dimension equally, whatever matters for ranking. Here the
collaborative space is learned *through* the content map: item vectors are ``f(content)`` (a small
MLP over all content modalities), user vectors are free, and both are trained with the multinomial
(softmax over all warm items) likelihood of each user's training interactions, the loss that ranks
well in Mult-VAE/EASE-style models. A cold item is placed by ``f`` alone, trained precisely so that
its dot product with user vectors predicts who interacts with it. Measured on the ML-100K cold-start
split (``benchmarks/alignment.py --parts coldstart``): it beats ridge-onto-PureSVD and content ItemKNN.

Because the tower overfits 1,500-odd warm items within a few hundred full-batch steps, training stops
early on a validation signal: the caller's ``validate(item_vectors, user_vectors) -> float`` (e.g.
Recall@20 of validation users over the cold items) or, by default, recall of a seeded 10% of the warm
items held out as pseudo-cold items. Several seeds are trained and their spaces concatenated (the
dot products add up: an ensemble that is still one user/item vector pair).

Missing modalities: each block is standardised on the items that have it; an absent block is the mean
(zero after centring) and a presence flag per modality lets the tower tell "average" from "missing".
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from modalrec.align.base import Aligner, register
from modalrec.core.errors import ConfigError, DataError
from modalrec.models.coldstart import (
    TowerData,
    TowerParams,
    Validate,
    fit_standardisation,
    holdout_items,
    load_towers,
    pseudo_cold_recall,
    tower_features,
    tower_vectors,
    train_towers,
)


class InteractionParams(TowerParams):
    """Hyperparameters of :class:`InteractionAligner`: those of the cold-start model's content tower."""


@register
class InteractionAligner(Aligner[InteractionParams]):
    """Content -> collaborative space, trained with the softmax likelihood of the interactions.

    What it learns: a content tower (an MLP over all content modalities plus presence flags) that
    gives item vectors, and free user vectors, trained together so that each user's softmax over the
    warm items puts mass on the items they interacted with. Why: a cold item is then placed by the
    tower alone, trained precisely so that its dot product with user vectors predicts who interacts
    with it, instead of regressing onto a fixed collaborative space with a squared loss.

    Fit with :meth:`fit` and ``interactions=`` (users x items, CSR; the columns of cold items are
    empty). ``user_vectors`` then scores every item: ``user_vectors @ transform_joint(...).T``.

    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(120, 6)).astype(np.float32)
    >>> taste = rng.normal(size=(40, 6))
    >>> R = sp.csr_matrix((taste @ x.T > 1.5).astype(np.float32))
    >>> al = InteractionAligner(dim=8, hidden=0, max_steps=60, eval_every=20, seeds=1)
    >>> al = al.fit({"text": x}, interactions=R)
    >>> al.transform("text", x).shape, al.user_vectors.shape
    ((120, 8), (40, 8))
    """

    name = "collaborative_softmax"
    params_class = InteractionParams
    min_modalities = 1

    def fit(  # type: ignore[override]
        self,
        views: dict[str, np.ndarray],
        masks: dict[str, np.ndarray] | None = None,
        *,
        interactions: sp.spmatrix | None = None,
        validate: Validate | None = None,
        valid_items: np.ndarray | None = None,
        seed: int = 0,
        progress: bool = False,
    ) -> InteractionAligner:
        """Learn the content tower and user vectors from ``interactions`` (users x items)."""
        if interactions is None:
            raise ConfigError(
                "collaborative_softmax aligns content to interactions: pass interactions= "
                "(a users x items matrix of training interactions)"
            )
        R = sp.csr_matrix(interactions, dtype=np.float32)
        n = len(next(iter(views.values())))
        if R.shape[1] != n:
            raise DataError(f"interactions have {R.shape[1]} item columns, the views {n} rows")
        self._R = R
        self._validate = validate
        try:
            super().fit(views, masks, valid_items=valid_items, seed=seed, progress=progress)
        finally:
            del self._R, self._validate
        return self

    # ------------------------------------------------------------------ features
    def _features(self, views: dict[str, np.ndarray], masks: dict[str, np.ndarray]) -> np.ndarray:
        """Standardised content blocks + one presence flag per modality, [n, sum(d_m) + M]."""
        return tower_features(self._state, views, masks, self.modalities)

    # ------------------------------------------------------------------ training, step by step
    def _fit(
        self,
        views: dict[str, np.ndarray],
        masks: dict[str, np.ndarray],
        train: np.ndarray,
        *,
        seed: int,
        progress: bool,
    ) -> None:
        R = self._R
        warm = np.asarray(R.sum(axis=0)).ravel() > 0
        warm &= train
        if warm.sum() < 10:
            raise DataError(f"only {int(warm.sum())} items have training interactions; need at least 10")
        self._state.update(fit_standardisation(views, masks, warm, self.modalities))
        F = self._features(views, masks)
        fit_items, pseudo = warm, np.zeros_like(warm)
        if self._validate is None:  # no validate(): a seeded share of warm items is held out
            fit_items, pseudo = holdout_items(warm, self.hp.holdout, np.random.default_rng(seed))
        validate = self._validate or pseudo_cold_recall(R, pseudo)
        state, history = train_towers(TowerData.build(F, R, fit_items), validate, self.hp, seed=seed)
        self._state.update(state)
        V = tower_vectors(self._towers(), F)
        ens = float(validate(V, self._state["user_vectors"]))
        self.meta.update(
            {
                "dim": self.hp.dim * self.hp.seeds,
                "n_warm": int(warm.sum()),
                "validation": "caller's validate()"
                if self._validate
                else f"pseudo-cold {int(pseudo.sum())} warm items",
                "valid_ensemble": ens,
                "seeds": history,
            }
        )

    @property
    def user_vectors(self) -> np.ndarray:
        """[n_users, dim]: user side of the collaborative space (score = user . item)."""
        return self._state["user_vectors"]

    def _towers(self) -> list[torch.nn.Module]:
        return load_towers(self._state, sum(self.input_dims.values()) + len(self.modalities), self.hp)

    def transform_joint(
        self, views: dict[str, np.ndarray], masks: dict[str, np.ndarray] | None = None
    ) -> np.ndarray:
        """Items with all their present content modalities into the collaborative space."""
        n = len(next(iter(views.values())))
        full = {
            m: np.asarray(views[m], np.float32) if m in views else np.zeros((n, d), np.float32)
            for m, d in self.input_dims.items()
        }
        mk = {
            m: (np.ones(n, bool) if masks is None or m not in masks else np.asarray(masks[m], bool))
            & (m in views)
            for m in self.modalities
        }
        return tower_vectors(self._towers(), self._features(full, mk))

    def _transform(self, modality: str, X: np.ndarray) -> np.ndarray:
        """One modality alone (the others absent) into the collaborative space."""
        return self.transform_joint({modality: X})
