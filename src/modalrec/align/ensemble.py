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

from typing import Any

import numpy as np

from modalrec.align.base import Aligner, create, l2_normalize, register
from modalrec.core.errors import ConfigError


@register
class EnsembleAligner(Aligner):
    """Concatenation of member aligners' normalised outputs (cosine = weighted mean member cosine).

    >>> rng = np.random.default_rng(0)
    >>> t = rng.normal(size=(200, 6)).astype(np.float32); i = t @ rng.normal(size=(6, 9)).astype(np.float32)
    >>> ens = EnsembleAligner(members=[{"aligner": "ridge", "reference": "image"}, {"aligner": "cca", "dim": 4}])
    >>> ens = ens.fit({"text": t, "image": i})
    >>> ens.dim, ens.transform("text", t[:2]).shape
    (13, (2, 13))
    """

    name = "ensemble"

    @classmethod
    def default_params(cls) -> dict[str, Any]:
        return {"members": [], "seeds": 1, "weights": None}

    def _specs(self) -> list[dict[str, Any]]:
        members = self.params["members"]
        if not members:
            raise ConfigError("the ensemble aligner needs at least one member spec, e.g. {'aligner': 'cca'}")
        for s in members:
            if not isinstance(s, dict) or "aligner" not in s:
                raise ConfigError(f"ensemble member must be a dict with an 'aligner' key, got {s!r}")
            if s["aligner"] == self.name:
                raise ConfigError("ensemble members cannot be ensembles")
        return [dict(s) for s in members for _ in range(int(self.params["seeds"]))]

    def _weights(self, k: int) -> np.ndarray:
        w = self.params["weights"]
        if w is None:
            return np.ones(k, dtype=np.float32)
        w = np.repeat(np.asarray(w, dtype=np.float32), int(self.params["seeds"]))
        if len(w) != k or (w < 0).any():
            raise ConfigError(
                f"weights must give one non-negative number per member, got {self.params['weights']}"
            )
        return w

    def _columns(self, spec: dict[str, Any], views: dict[str, np.ndarray]) -> dict[str, list[int]]:
        cols = spec.get("columns") or {}
        if not isinstance(cols, dict):
            raise ConfigError(f"ensemble member 'columns' must map a modality to [start, stop], got {cols!r}")
        out = {}
        for m, se in cols.items():
            if m not in views:
                raise ConfigError(
                    f"ensemble member 'columns' names modality {m!r}, not among {sorted(views)}"
                )
            start, stop = (int(x) for x in se)
            if not 0 <= start < stop <= views[m].shape[1]:
                raise ConfigError(
                    f"ensemble member columns {se} for {m!r} are outside its {views[m].shape[1]} columns"
                )
            out[m] = [start, stop]
        return out

    def _fit(self, views, masks, train, *, seed, progress):
        specs = self._specs()
        w = self._weights(len(specs))
        valid = np.flatnonzero(~train)
        self._members: list[Aligner] = []
        facts = []
        for k, spec in enumerate(specs):
            params = {key: v for key, v in spec.items() if key not in ("aligner", "columns")}
            cols = self._columns(spec, views)
            al = create(spec["aligner"], **params)
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

    def _transform(self, modality, X):
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
