"""Blend: a weighted sum of several recommenders' per-user standardised scores, weights chosen on validation.

Why: models that rank by different evidence make different mistakes. A graph model trained with a
softmax loss ranks by learned user/item vectors; (content) EASE ranks by item-item regression
weights over the user's history. Their errors are only partly correlated, so a blend can beat both,
the oldest trick of recommender competitions. Scores live on different scales (cosines vs regression
outputs), so each member's scores are standardised **per user** over the items (z-score) first.

Honesty: the weights are searched on a simplex grid with validation Recall@20 (every member already
early-stops on validation), never on test; the grid and the chosen point are kept in ``meta``. By
default only the *tune* half of the validation users (:func:`modalrec.evaluation.validation_halves`,
fixed seed) chooses the weights, so the other half can choose among a blend and other models without
reusing the users the weights were fitted to (``weight_users = "all"`` restores the old behaviour).

Example (TOML)::

    [model]
    name = "blend"
    members = [{model = "graphmm", params = {loss = "softmax"}}, {model = "ease_content", params = {}}]

A member may itself be a blend with fixed ``weights``: a *seed bag* (one setting fitted with several
seeds, averaged with equal weights) removes the seed-to-seed variance of a trained model without fitting
any weight (on TikTok, 3 seeds of our graph model: Recall@20 .1177 -> .1213, benchmarks/results/multimodal.md).
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any, Literal, NotRequired

import numpy as np
import torch
from pydantic import ConfigDict, Field, with_config
from typing_extensions import TypedDict  # pydantic needs this one before Python 3.12

from modalrec.core.errors import ConfigError
from modalrec.core.params import Params
from modalrec.models.base import REGISTRY, Recommender, create, register

if TYPE_CHECKING:
    from modalrec.data.dataset import Dataset


def simplex_grid(n: int, steps: int) -> list[tuple[float, ...]]:
    """All weight vectors of ``n`` non-negative entries in multiples of 1/(steps-1) that sum to 1.

    >>> simplex_grid(2, 3)
    [(0.0, 1.0), (0.5, 0.5), (1.0, 0.0)]
    >>> len(simplex_grid(3, 11))
    66
    """
    if n == 1:
        return [(1.0,)]
    m = max(1, steps - 1)
    out = []
    for c in itertools.product(range(m + 1), repeat=n - 1):
        if sum(c) <= m:
            out.append((*tuple(x / m for x in c), (m - sum(c)) / m))
    return sorted(out)


def standardise_rows(s: torch.Tensor) -> torch.Tensor:
    """Per-row z-score (constant rows become 0).

    >>> standardise_rows(torch.tensor([[1.0, 2.0, 3.0], [5.0, 5.0, 5.0]])).tolist()
    [[-1.0, 0.0, 1.0], [0.0, 0.0, 0.0]]
    """
    if s.numel() == 0:  # no users (or no items): nothing to standardise, and std() would warn
        return s.clone()
    mu = s.mean(1, keepdim=True)
    sd = s.std(1, keepdim=True)
    return torch.where(sd > 1e-12, (s - mu) / sd.clamp_min(1e-12), torch.zeros_like(s))


@with_config(ConfigDict(extra="forbid"))
class BlendMember(TypedDict):
    """One member of a blend: a registered model name and its hyperparameters (TOML:
    ``{model = "ease", params = {l2 = 300.0}}``). A TypedDict, so it is stored exactly as given."""

    model: str
    params: NotRequired[dict[str, Any] | None]


class BlendParams(Params):
    """Blend: the member models, and either fixed weights or the grid the weights are chosen from."""

    members: list[BlendMember] | None = Field(
        None, description="member models, each {model = NAME, params = {...}} (at least one)"
    )
    weights: list[float] | None = Field(
        None, description="fixed non-negative weight per member (None = chosen on validation)"
    )
    weight_steps: int = Field(11, ge=2, description="grid points per weight axis, 0 to 1 (validation search)")
    modalities: list[str] | str | None = Field(
        None, description="modalities given to every content member that does not set its own"
    )
    weight_users: Literal["tune_half", "all"] = Field(
        "tune_half",
        description="validation users that choose the weights: the seeded tune half (the select half stays "
        "free for choosing among models) or all of them",
    )
    halves_seed: int = Field(2024, description="seed of the validation halves (weight_users = tune_half)")


@register
class Blend(Recommender[BlendParams]):
    """Weighted sum of member models' per-user standardised scores; weights searched on validation.

    Why: models that rank by different evidence (learned vectors, item-item regression) make partly
    uncorrelated mistakes, so a blend can beat each member; standardising per user puts scores of
    different scales on one footing.
    """

    name = "blend"
    params_class = BlendParams
    uses_features = True

    def _specs(self) -> list[dict[str, Any]]:
        members = self.hp.members
        if not members:
            raise ConfigError("blend needs members = [{model = NAME, params = {...}}, ...] (at least one)")
        specs = []
        for m in members:
            params = dict(m.get("params") or {})
            cls = REGISTRY.get(m["model"].lower())
            if cls is not None and cls.uses_features and self.hp.modalities is not None:
                params.setdefault("modalities", self.hp.modalities)
            specs.append({"model": m["model"], "params": params})
        w = self.hp.weights
        if w is not None and (len(w) != len(specs) or min(w) < 0 or sum(w) <= 0):
            raise ConfigError(f"blend weights {w} must be {len(specs)} non-negative numbers, not all 0")
        return specs

    def _fit(self, dataset: Dataset, *, progress: bool) -> None:
        from modalrec.evaluation import evaluate

        specs = self._specs()
        # members early-stop on the caller's criterion (the validator given to Blend.fit)
        val = self._validator
        self._members = [
            create(s["model"], **s["params"]).fit(dataset, progress=progress, validator=val) for s in specs
        ]
        self.meta["members"] = [m.meta for m in self._members]
        if self.hp.weights is not None:
            self._weights = list(self.hp.weights)
            self.meta["blend_weights"] = self._weights
            return
        # Every grid point ranks the same validation users: standardise each member's scores for them
        # once (users x items per member) instead of re-scoring every member at every point.
        users = self._weight_users(dataset)
        row_of = np.full(self.n_users, -1, dtype=np.int64)
        row_of[users] = np.arange(len(users))
        with torch.no_grad():
            cached = [standardise_rows(m._score(users).float()) for m in self._members]

        def scorer(chunk: np.ndarray) -> torch.Tensor:
            rows = torch.as_tensor(row_of[chunk])
            return sum(w * c[rows] for w, c in zip(self._weights, cached, strict=True))  # type: ignore[return-value]

        grid = []
        best: tuple[float, tuple[float, ...]] | None = None
        for w in simplex_grid(len(specs), self.hp.weight_steps):
            self._weights = list(w)
            res = evaluate(self, dataset, "valid", ks=(20,), scorer=scorer, users=users)
            r = float(res.metrics["recall@20"])
            grid.append({"weights": list(w), "valid_recall@20": r})
            if best is None or r > best[0]:
                best = (r, w)
        assert best is not None
        self._weights = list(best[1])
        self.meta["weights_grid"] = grid
        self.meta["best_valid_recall@20"] = best[0]
        self.meta["blend_weights"] = self._weights
        self.meta["weights_chosen_on"] = {
            "users": self.hp.weight_users,
            "n_users": len(users),
            "halves_seed": self.hp.halves_seed if self.hp.weight_users == "tune_half" else None,
        }

    def _weight_users(self, dataset: Dataset) -> np.ndarray:
        """Validation users whose Recall@20 chooses the weights (the tune half unless told otherwise)."""
        from modalrec.evaluation import validation_halves

        if self.hp.weight_users == "all":
            return np.flatnonzero(np.diff(dataset.target("valid").indptr) > 0)
        return validation_halves(dataset, self.hp.halves_seed)[0]

    @property
    def weights(self) -> list[float]:
        """The blend weights in member order (chosen on validation unless given)."""
        return list(self._weights)

    def _score(self, users: np.ndarray) -> torch.Tensor:
        total: torch.Tensor | None = None
        for w, m in zip(self._weights, self._members, strict=True):
            if w == 0:
                continue
            s = w * standardise_rows(m._score(users).float())
            total = s if total is None else total + s
        if total is None:
            return torch.zeros(len(users), self.n_items)
        return total

    def _state_to_save(self) -> dict[str, np.ndarray]:
        out = {"weights": np.asarray(self._weights, dtype=np.float64)}
        for k, m in enumerate(self._members):
            out.update({f"m{k}.{name}": arr for name, arr in m._state_to_save().items()})
        return out

    def _restore(self, state: dict[str, np.ndarray]) -> None:
        self._weights = [float(x) for x in state["weights"]]
        self._members = []
        metas = self.meta.get("members", [])
        for k, s in enumerate(self._specs()):
            m = create(s["model"], **s["params"])
            m.n_users, m.n_items = self.n_users, self.n_items
            m.meta = metas[k] if k < len(metas) else {}
            prefix = f"m{k}."
            m._restore({n[len(prefix) :]: a for n, a in state.items() if n.startswith(prefix)})
            self._members.append(m)
