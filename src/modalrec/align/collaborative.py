"""Collaborative alignment: map content into the space of item embeddings learned from interactions.

Why: a new item has no interactions, so a collaborative model cannot place it; but its text and image
exist. Fitting a map from content to the collaborative item embeddings of *warm* items (those with
interactions) lets a cold item land where warm items with similar content -- as judged by what users
did with them, not by raw feature similarity -- sit. Scoring a cold item is then the usual user factor
dot product.

The target view (``target``, default ``"cf"``) holds the collaborative item embeddings with a mask
that marks warm items; every other view is content. The aligned space *is* the collaborative space,
so ``transform(target, E)`` returns ``E`` unchanged (user factors stay valid).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from pydantic import Field

from modalrec.align.base import Aligner, RegStrength, Standardizer, paired_rows, register, selection_split
from modalrec.align.linear import REG_GRID, ridge_solve
from modalrec.core.params import Params


def pure_svd(train: sp.spmatrix, dim: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """User and item factors of a truncated SVD of the binary interaction matrix (PureSVD).

    Scores are ``user_factors @ item_factors.T``; item factors are ``V * sqrt(s)`` and user factors
    ``U * sqrt(s)`` so both sides carry half of the spectrum.

    >>> m = sp.csr_matrix(np.array([[1, 1, 0], [1, 1, 0], [0, 0, 1]], dtype=np.float32))
    >>> u, v = pure_svd(m, 2)
    >>> np.allclose(u @ v.T, m.toarray(), atol=1e-5)
    True
    """
    from scipy.sparse.linalg import svds

    X = sp.csr_matrix(train, dtype=np.float64)
    k = min(dim, min(X.shape) - 1)
    rng = np.random.default_rng(seed)
    v0 = rng.normal(size=min(X.shape))
    U, s, Vt = svds(X, k=k, v0=v0)
    order = np.argsort(s)[::-1]
    U, s, Vt = U[:, order], s[order], Vt[order]
    r = np.sqrt(s)
    return (U * r).astype(np.float32), (Vt.T * r).astype(np.float32)


class CollaborativeParams(Params):
    """Hyperparameters of :class:`CollaborativeAligner`."""

    target: str = Field(
        "cf", description="view holding the collaborative item embeddings (its mask marks warm items)"
    )
    reg: RegStrength = Field(
        "auto",
        description="ridge strength >= 0 relative to the data scale, or 'auto' (validation MSE on warm items)",
    )
    pca_in: int | None = Field(None, ge=1, description="PCA size of each content modality (None: all)")
    l2_input: bool = Field(True, description="L2-normalise every content row before centring and scaling")


@register
class CollaborativeAligner(Aligner[CollaborativeParams]):
    """Ridge maps from each content modality (and from all of them together) into a CF item space.

    What it learns: a linear map (with bias) from content to the collaborative item embeddings of warm
    items, for each content modality and for every subset of them. Why: the shared space *is* the
    collaborative space, so a cold item mapped from its content is scored with the existing user
    factors; :meth:`transform_joint` maps each item with exactly the subset of modalities it has
    (missing modalities are left out, not zero-filled). With ``reg="auto"`` the strength is chosen by
    validation MSE on warm items outside training -- never on cold test items.

    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(300, 5)).astype(np.float32); cf = x @ rng.normal(size=(5, 3)).astype(np.float32)
    >>> warm = np.arange(300) < 250
    >>> al = CollaborativeAligner(reg=1e-6, l2_input=False).fit({"text": x, "cf": cf}, {"cf": warm})
    >>> err = np.abs(al.transform("text", x[250:]) - cf[250:]).max()
    >>> bool(err < 1e-2 * np.abs(cf).max())
    True
    """

    name = "collaborative"
    params_class = CollaborativeParams

    @property
    def content_modalities(self) -> list[str]:
        return [m for m in self.modalities if m != self.hp.target]

    def _prep(self, modality: str, X: np.ndarray) -> np.ndarray:
        Z = Standardizer.from_state(self._state, f"std.{modality}").transform(X)
        return np.concatenate([Z, np.ones((len(Z), 1), np.float32)], axis=1)  # bias column

    def _select(self, X_fit, Y_fit, X_val, Y_val) -> float:
        best = (np.inf, REG_GRID[0])
        for r in REG_GRID:
            W = ridge_solve(X_fit, Y_fit, r)
            err = float(((X_val @ W - Y_val) ** 2).mean())
            if err < best[0]:
                best = (err, r)
        return best[1]

    def _reg(self, X: np.ndarray, Y: np.ndarray, fit_rows: np.ndarray, val_rows: np.ndarray) -> float:
        """The configured ridge strength, or with ``reg="auto"`` the grid value of lowest validation MSE."""
        if self.hp.reg == "auto":
            return self._select(X[fit_rows], Y[fit_rows], X[val_rows], Y[val_rows])
        return self.hp.reg

    def _fit(
        self,
        views: dict[str, np.ndarray],
        masks: dict[str, np.ndarray],
        train: np.ndarray,
        *,
        seed: int,
        progress: bool,
    ) -> None:
        tgt = self.hp.target
        if tgt not in views:
            raise ValueError(f"target view {tgt!r} (collaborative item embeddings) is missing")
        Y = views[tgt]
        content = self.content_modalities
        P = {}
        for m in content:
            st = Standardizer(pca=self.hp.pca_in, l2=self.hp.l2_input).fit(views[m][train & masks[m]])
            self._state.update(st.state(f"std.{m}"))
            P[m] = self._prep(m, views[m])
        chosen: dict[str, float] = {}
        for m in content:
            fit_rows, val_rows = selection_split(train, masks, [m, tgt], seed=seed)
            reg = self._reg(P[m], Y, fit_rows, val_rows)
            rows = np.flatnonzero(train & masks[m] & masks[tgt])
            self._state[f"W.{m}"] = ridge_solve(P[m][rows], Y[rows], reg).astype(np.float32)
            chosen[m] = reg
        # one map per non-empty subset of content modalities (2^M - 1 of them, M is small): an item
        # is mapped with exactly the modalities it has, no imputation and no compromise between them
        for subset in _subsets(content)[len(content) :]:
            key = "+".join(subset)
            X = np.concatenate([P[m][:, :-1] for m in subset] + [P[subset[0]][:, -1:]], axis=1)
            fit_rows, val_rows = selection_split(train, masks, [*subset, tgt], seed=seed)
            reg = self._reg(X, Y, fit_rows, val_rows)
            rows = paired_rows(masks, train, [*subset, tgt])
            self._state[f"W.{key}"] = ridge_solve(X[rows], Y[rows], reg).astype(np.float32)
            chosen[key] = reg
        self.meta.update(
            {"dim": int(Y.shape[1]), "reg": chosen, "target": tgt, "n_warm": int((train & masks[tgt]).sum())}
        )

    def _transform(self, modality: str, X: np.ndarray) -> np.ndarray:
        if modality == self.hp.target:
            return X
        return self._prep(modality, X) @ self._state[f"W.{modality}"]

    def transform_joint(
        self, views: dict[str, np.ndarray], masks: dict[str, np.ndarray] | None = None
    ) -> np.ndarray:
        """All present content modalities of each item together into the CF space.

        Each item uses the map fitted for exactly its set of present modalities; items with no
        content at all get zeros (they cannot be placed).
        """
        content = [m for m in self.content_modalities if m in views]
        n = len(views[content[0]])
        mk = {
            m: np.ones(n, bool) if masks is None or m not in masks else np.asarray(masks[m], bool)
            for m in content
        }
        P = {m: self._prep(m, np.asarray(views[m], np.float32)) for m in content}
        out = np.zeros((n, self.dim), dtype=np.float32)
        for subset in _subsets(content):
            key = "+".join(subset)
            if f"W.{key}" not in self._state:
                continue
            rows = np.logical_and.reduce([mk[m] for m in subset])
            for m in content:
                if m not in subset:
                    rows &= ~mk[m]
            if rows.any():
                X = np.concatenate([P[m][rows, :-1] for m in subset] + [P[subset[0]][rows, -1:]], axis=1)
                out[rows] = X @ self._state[f"W.{key}"]
        return out


def _subsets(mods: list[str]) -> list[tuple[str, ...]]:
    """Non-empty subsets in order of size (singletons first), each in the order of ``mods``."""
    from itertools import combinations

    return [c for r in range(1, len(mods) + 1) for c in combinations(mods, r)]
