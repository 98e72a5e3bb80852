"""Ensemble aligner: several aligners (or one aligner with several seeds) side by side.

Why: on small catalogues (ML-100K has ~1,300 training items with a text and a poster) a single
contrastive head is noisy -- each seed finds a slightly different shared space -- and linear and
nonlinear aligners make different mistakes. Concatenating the members' L2-normalised outputs,
each scaled by ``sqrt(weight)``, makes the cosine between two ensemble vectors the weighted mean of
the members' cosines, so retrieval ranks by the average member similarity.

Members are given as specs, ``{"aligner": "contrastive", "dim": 128, ...}``; ``seeds`` repeats every
spec with seeds ``seed, seed + 1, ...``. A spec may add ``"columns": {"text": [start, stop], ...}`` to
give its member only that block of a modality's columns: a view that concatenates a semantic and a
lexical encoding (MiniLM next to character n-grams) then feeds a learned aligner and a
:class:`~modalrec.align.LexicalAligner` from one matrix. Persistence goes through the one :class:`Aligner` format:
member states are stored under ``m<k>.`` prefixes and their facts in ``meta["members"]``.
"""

from __future__ import annotations

from typing import Any, Required, Self

import numpy as np
from pydantic import ConfigDict, Field, field_validator, model_validator, with_config
from typing_extensions import TypedDict  # pydantic needs this one before Python 3.12

from modalrec.align.base import ALIGNERS, Aligner, create, l2_normalize, register
from modalrec.core.errors import ConfigError
from modalrec.core.params import Params


@with_config(ConfigDict(extra="allow"))
class MemberSpec(TypedDict, total=False):
    """One ensemble member: ``{"aligner": NAME, **its hyperparameters}``, optionally ``columns``.

    ``columns`` maps a modality to the ``[start, stop)`` block of its columns the member reads; every
    other key is a hyperparameter of the member aligner, checked against its declaration.
    """

    aligner: Required[str]
    columns: dict[str, tuple[int, int]]


def _member_hyperparameters(spec: MemberSpec) -> dict[str, Any]:
    return {k: v for k, v in spec.items() if k not in ("aligner", "columns")}


class EnsembleParams(Params):
    """Hyperparameters of :class:`EnsembleAligner`."""

    members: list[MemberSpec] = Field(
        default_factory=list,
        description='member specs {"aligner": name, **hyperparameters, "columns": {modality: [start, stop]}}',
    )
    seeds: int = Field(1, ge=1, description="copies of every member spec, each fitted with its own seed")
    weights: list[float] | None = Field(
        None, description="one weight >= 0 per member spec, shared by its seed copies (None: equal weights)"
    )

    @field_validator("members")
    @classmethod
    def _members_are_valid_aligners(cls, members: list[MemberSpec]) -> list[MemberSpec]:
        for k, spec in enumerate(members):
            if spec["aligner"] == EnsembleAligner.name:
                raise ValueError("ensemble members cannot be ensembles")
            for start, stop in spec.get("columns", {}).values():
                if not 0 <= start < stop:
                    raise ValueError(f"member {k}: columns [{start}, {stop}] are not 0 <= start < stop")
            try:
                klass = ALIGNERS.get_or_raise(spec["aligner"])
                klass.params_class.build("aligner", spec["aligner"], _member_hyperparameters(spec))
            except ConfigError as e:
                raise ValueError(f"member {k}: {e}") from None
        return members

    @field_validator("weights")
    @classmethod
    def _weights_are_non_negative(cls, weights: list[float] | None) -> list[float] | None:
        if weights is not None and any(w < 0 for w in weights):
            raise ValueError("weights must be >= 0")
        return weights

    @model_validator(mode="after")
    def _one_weight_per_member(self) -> Self:
        if self.weights is not None and self.members and len(self.weights) != len(self.members):
            raise ValueError(
                f"weights must give one number per member spec: {len(self.weights)} weights, "
                f"{len(self.members)} members"
            )
        return self


@register
class EnsembleAligner(Aligner[EnsembleParams]):
    """Concatenation of member aligners' normalised outputs (cosine = weighted mean member cosine).

    What it learns: each member aligner, fitted on its own (and on its own block of columns when the
    spec says so). Why: members make different mistakes -- seeds of a contrastive head, linear vs
    nonlinear maps, learned vs lexical -- and ranking by the weighted mean of their cosines averages
    those mistakes out. Member specs are validated against the members' own hyperparameter
    declarations when the ensemble is built.

    >>> rng = np.random.default_rng(0)
    >>> t = rng.normal(size=(200, 6)).astype(np.float32); i = t @ rng.normal(size=(6, 9)).astype(np.float32)
    >>> ens = EnsembleAligner(members=[{"aligner": "ridge", "reference": "image"}, {"aligner": "cca", "dim": 4}])
    >>> ens = ens.fit({"text": t, "image": i})
    >>> ens.dim, ens.transform("text", t[:2]).shape
    (13, (2, 13))
    """

    name = "ensemble"
    params_class = EnsembleParams

    def _specs(self) -> list[MemberSpec]:
        """Every member spec, repeated ``seeds`` times."""
        if not self.hp.members:
            raise ConfigError("the ensemble aligner needs at least one member spec, e.g. {'aligner': 'cca'}")
        return [spec for spec in self.hp.members for _ in range(self.hp.seeds)]

    def _weights(self, k: int) -> np.ndarray:
        if self.hp.weights is None:
            return np.ones(k, dtype=np.float32)
        return np.repeat(np.asarray(self.hp.weights, dtype=np.float32), self.hp.seeds)

    def _columns(self, spec: MemberSpec, views: dict[str, np.ndarray]) -> dict[str, list[int]]:
        """The member's column block of each modality, checked against the views' widths."""
        out = {}
        for m, (start, stop) in spec.get("columns", {}).items():
            if m not in views:
                raise ConfigError(
                    f"ensemble member 'columns' names modality {m!r}, not among {sorted(views)}"
                )
            if not 0 <= start < stop <= views[m].shape[1]:
                raise ConfigError(
                    f"ensemble member columns {[start, stop]} for {m!r} are outside its "
                    f"{views[m].shape[1]} columns"
                )
            out[m] = [start, stop]
        return out

    def _fit(
        self,
        views: dict[str, np.ndarray],
        masks: dict[str, np.ndarray],
        train: np.ndarray,
        *,
        seed: int,
        progress: bool,
    ) -> None:
        specs = self._specs()
        w = self._weights(len(specs))
        valid = np.flatnonzero(~train)
        self._members: list[Aligner] = []
        facts: list[dict[str, Any]] = []
        for k, spec in enumerate(specs):
            cols = self._columns(spec, views)
            al = create(spec["aligner"], **_member_hyperparameters(spec))
            # seeds differ per copy of a spec; different specs with the same seed are fine
            al.fit(_sliced(views, cols), masks, valid_items=valid, seed=seed + k, progress=progress)
            self._members.append(al)
            facts.append(
                {
                    "aligner": al.name,
                    "params": al.get_params(),
                    "modalities": al.modalities,
                    "input_dims": al.input_dims,
                    "meta": al.meta,
                    "dim": al.dim,
                    "weight": float(w[k]),
                    "columns": cols,
                }
            )
        self.meta.update({"members": facts, "dim": int(sum(f["dim"] for f in facts))})

    def _transform(self, modality: str, X: np.ndarray) -> np.ndarray:
        blocks = [
            l2_normalize(al.transform(modality, _sliced({modality: X}, f.get("columns", {}))[modality]))
            * np.sqrt(f["weight"] / sum(g["weight"] for g in self.meta["members"]))
            for al, f in zip(self._members, self.meta["members"], strict=True)
        ]
        return np.concatenate(blocks, axis=1)

    def _state_to_save(self) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for k, al in enumerate(self._members):
            for key, v in al._state_to_save().items():
                out[f"m{k}.{key}"] = v
        return out

    def _restore(self, state: dict[str, np.ndarray]) -> None:
        self._members = []
        for k, f in enumerate(self.meta["members"]):
            al = create(f["aligner"], **f["params"])
            al.modalities = list(f["modalities"])
            al.input_dims = {m: int(d) for m, d in f["input_dims"].items()}
            al.meta = f["meta"]
            prefix = f"m{k}."
            al._restore({key[len(prefix) :]: v for key, v in state.items() if key.startswith(prefix)})
            self._members.append(al)


def _sliced(views: dict[str, np.ndarray], columns: dict[str, list[int]]) -> dict[str, np.ndarray]:
    """Each view cut to its member's ``[start, stop)`` columns (views without a block stay whole)."""
    return {m: X[:, columns[m][0] : columns[m][1]] if m in columns else X for m, X in views.items()}
