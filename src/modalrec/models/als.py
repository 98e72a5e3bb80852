"""Implicit-feedback ALS (Hu, Koren & Volinsky 2008) through the ``implicit`` package.

Why: the standard fast baseline at production scale. Each iteration solves every user and every item
vector in closed form (conjugate gradient), so an iteration costs O(interactions x dim + (users +
items) x dim^2): linear in the data, and ``implicit`` spreads it over all cores. modalrec adds what it
adds to every trained model: early stopping on the validation criterion and its own save/load.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from pydantic import Field

from modalrec.core.params import Params
from modalrec.models.base import Recommender, register
from modalrec.models.training import train_with_early_stopping

if TYPE_CHECKING:
    from implicit.cpu.als import AlternatingLeastSquares

    from modalrec.data.dataset import Dataset


class ALSParams(Params):
    """ALS: vector size, regularisation, confidence scaling and the iteration schedule."""

    dim: int = Field(64, ge=1, description="size of the user and item vectors")
    reg: float = Field(0.01, ge=0, description="L2 regularisation of the least-squares solves")
    alpha: float = Field(1.0, gt=0, description="confidence of an observed interaction (C = alpha x R)")
    epochs: int = Field(15, ge=1, description="most ALS iterations (early stopping may end sooner)")
    eval_every: int = Field(1, ge=1, description="validate every this many iterations")
    patience: int = Field(3, ge=1, description="validation checks without improvement before stopping")
    seed: int = Field(2024, ge=0, description="random seed of the initial vectors")
    threads: int = Field(0, ge=0, description="solver threads (0 = every core)")


@register
class ALS(Recommender[ALSParams]):
    """Implicit-feedback matrix factorisation by alternating least squares (``implicit`` package).

    score(u, i) = <user_u, item_i>, learned from confidence-weighted interactions; one iteration
    touches every interaction once, so the cost grows linearly with the data.
    """

    name = "als"
    params_class = ALSParams

    def _solver(self) -> AlternatingLeastSquares:
        from implicit.cpu.als import AlternatingLeastSquares

        return AlternatingLeastSquares(
            factors=self.hp.dim,
            regularization=self.hp.reg,
            alpha=1.0,  # confidence is scaled here, once, so the stored model is self-explanatory
            iterations=1,
            use_cg=True,
            calculate_training_loss=False,
            num_threads=self.hp.threads,
            random_state=self.hp.seed,
            dtype=np.float32,
        )

    def _fit(self, dataset: Dataset, *, progress: bool) -> None:
        from threadpoolctl import threadpool_limits

        with threadpool_limits(1, "blas"):  # implicit warns at construction about threaded BLAS
            solver = self._solver()
        confidence = (dataset.train.tocsr() * self.hp.alpha).astype(np.float32)

        def run_epoch(_: int) -> float:
            with threadpool_limits(1, "blas"):  # implicit parallelises itself; threaded BLAS slows it
                solver.fit(confidence, show_progress=False)
            self._set(solver.user_factors, solver.item_factors)
            return 0.0  # the training loss is not computed (it costs another pass)

        def get_state() -> dict[str, torch.Tensor]:
            return {k: torch.from_numpy(v.copy()) for k, v in self._state.items()}

        def set_state(state: dict[str, torch.Tensor]) -> None:
            self._set(state["user_factors"].numpy(), state["item_factors"].numpy())

        train_with_early_stopping(
            self,
            dataset,
            run_epoch=run_epoch,
            get_state=get_state,
            set_state=set_state,
            epochs=self.hp.epochs,
            eval_every=self.hp.eval_every,
            patience=self.hp.patience,
            progress=progress,
        )

    def _set(self, users: np.ndarray, items: np.ndarray) -> None:
        self._state = {
            "user_factors": np.ascontiguousarray(users, dtype=np.float32),
            "item_factors": np.ascontiguousarray(items, dtype=np.float32),
        }

    def _score(self, users: np.ndarray) -> torch.Tensor:
        u = torch.from_numpy(self._state["user_factors"][users])
        return u @ torch.from_numpy(self._state["item_factors"]).T
