"""Linear aligners: ridge least squares into a reference modality, and (generalised) CCA.

Why both: the naive objective ``min ||A x_text - B x_image||^2`` is minimised by ``A = B = 0``. Two
classical ways to forbid that trivial map:

* :class:`RidgeAligner` fixes ``B`` (the reference modality keeps its own standardised, PCA-reduced
  coordinates) and solves a ridge regression for ``A`` -- "least squares with the target fixed";
* :class:`CCAAligner` constrains both: the projected views must have identity covariance
  (``A^T C_tt A = I``), which is canonical correlation analysis. With more than two modalities it is
  the MAXVAR generalised CCA (all views regress onto one shared orthonormal ``G``), which reduces to
  ordinary CCA for two.

Both have closed forms, so they are fast baselines; ``reg="auto"`` picks the regularisation on
validation items (never on test items) by mean cross-modal Recall@10.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from modalrec.align.base import (
    Aligner,
    Standardizer,
    paired_rows,
    register,
    selection_split,
)
from modalrec.align.metrics import mean_recall

# relative to the mean eigenvalue; encoder features of small catalogues often want 3-30
REG_GRID = (1e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0)


def ridge_solve(X: np.ndarray, Y: np.ndarray, reg: float) -> np.ndarray:
    """``argmin_W ||X W - Y||^2 + reg * tr(X^T X)/d * ||W||^2`` (regulariser relative to the data scale).

    >>> X = np.eye(3); ridge_solve(X, 2 * X, 1e-9).round(3).tolist()
    [[2.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 2.0]]
    """
    X = X.astype(np.float64)
    Y = Y.astype(np.float64)
    G = X.T @ X
    lam = reg * np.trace(G) / max(1, G.shape[0])
    G[np.diag_indices_from(G)] += lam
    return np.linalg.solve(G, X.T @ Y)


def _inv_sqrt(C: np.ndarray) -> np.ndarray:
    w, V = np.linalg.eigh(C)
    w = np.maximum(w, 1e-12)
    return (V / np.sqrt(w)) @ V.T


@register
class RidgeAligner(Aligner):
    """Ridge regression of every modality onto the reference modality's (standardised, PCA) space.

    Hyperparameters:
        reference: modality whose coordinates define the shared space (default: the first view).
        dim: PCA dimension of the reference space (None: keep all).
        reg: ridge strength relative to the mean eigenvalue, or ``"auto"`` (validation selection).
        pca_in: optional PCA dimension of the source modalities before the regression.

    >>> rng = np.random.default_rng(0)
    >>> t = rng.normal(size=(200, 6)).astype(np.float32); i = t @ rng.normal(size=(6, 5)).astype(np.float32)
    >>> al = RidgeAligner(reference="image", reg=1e-4, l2_input=False).fit({"text": t, "image": i})
    >>> from modalrec.align.metrics import mean_recall
    >>> mean_recall(al.transform("text", t), al.transform("image", i), k=1) > 0.95
    True
    """

    name = "ridge"

    @classmethod
    def default_params(cls) -> dict[str, Any]:
        return {"reference": None, "dim": None, "reg": "auto", "pca_in": None, "l2_input": True}

    def _fit(self, views, masks, train, *, seed, progress):
        p = self.params
        ref = p["reference"] or self.modalities[0]
        if ref not in views:
            raise ValueError(f"reference modality {ref!r} is not among the views {self.modalities}")
        std_ref = Standardizer(pca=p["dim"], l2=p["l2_input"]).fit(views[ref][train & masks[ref]])
        self._state.update(std_ref.state(f"std.{ref}"))
        Y_all = std_ref.transform(views[ref])
        chosen: dict[str, float] = {}
        for m in self.modalities:
            if m == ref:
                continue
            fit_rows, val_rows = selection_split(train, masks, [m, ref], seed=seed)
            rows = paired_rows(masks, train, [m, ref])
            std_m = Standardizer(pca=p["pca_in"], l2=p["l2_input"]).fit(views[m][train & masks[m]])
            X_all = std_m.transform(views[m])
            if p["reg"] == "auto":
                best = (-1.0, REG_GRID[0])
                for r in REG_GRID:
                    W = ridge_solve(X_all[fit_rows], Y_all[fit_rows], r)
                    score = mean_recall(X_all[val_rows] @ W, Y_all[val_rows])
                    if score > best[0]:
                        best = (score, r)
                reg = best[1]
            else:
                reg = float(p["reg"])
            chosen[m] = reg
            self._state.update(std_m.state(f"std.{m}"))
            self._state[f"W.{m}"] = ridge_solve(X_all[rows], Y_all[rows], reg).astype(np.float32)
        self.meta.update({"reference": ref, "dim": std_ref.out_dim, "reg": chosen})

    def _transform(self, modality, X):
        st = Standardizer.from_state(self._state, f"std.{modality}")
        Z = st.transform(X)
        if modality == self.meta["reference"]:
            return Z
        return Z @ self._state[f"W.{modality}"]


@register
class CCAAligner(Aligner):
    """Regularised (generalised, MAXVAR) CCA: every view regresses onto one orthonormal ``G``.

    Constraint ``G^T G = I`` (equivalently: projected views have unit covariance) rules out the zero
    map. Dimensions are weighted by ``corr ** power`` so that weakly correlated directions count less
    in cosine retrieval.

    Hyperparameters: ``dim`` (k), ``reg`` (float or ``"auto"``), ``pca_in`` (PCA before CCA),
    ``power`` (eigenvalue weighting; 0 = plain CCA coordinates).

    >>> rng = np.random.default_rng(0)
    >>> z = rng.normal(size=(300, 4)).astype(np.float32)
    >>> a = z @ rng.normal(size=(4, 10)).astype(np.float32); b = z @ rng.normal(size=(4, 7)).astype(np.float32)
    >>> cca = CCAAligner(dim=4, reg=1e-4, l2_input=False).fit({"a": a, "b": b})
    >>> [round(c, 2) for c in cca.meta["correlations"]]
    [1.0, 1.0, 1.0, 1.0]
    """

    name = "cca"

    @classmethod
    def default_params(cls) -> dict[str, Any]:
        return {"dim": 64, "reg": "auto", "pca_in": None, "power": 1.0, "l2_input": True}

    def _solve(
        self, Xs: dict[str, np.ndarray], reg: float, k: int
    ) -> tuple[dict[str, np.ndarray], np.ndarray]:
        n = next(iter(Xs.values())).shape[0]
        Zs, inv = [], {}
        for m, X in Xs.items():
            X = X.astype(np.float64)
            C = X.T @ X / n
            C[np.diag_indices_from(C)] += reg * np.trace(C) / C.shape[0]
            inv[m] = np.linalg.inv(C)
            Zs.append(X @ _inv_sqrt(C))
        Z = np.concatenate(Zs, axis=1)
        # left singular vectors of Z via the (small) eigenproblem of Z^T Z
        evals, V = np.linalg.eigh(Z.T @ Z)
        order = np.argsort(evals)[::-1]
        k = min(k, Z.shape[1], n)
        s = np.sqrt(np.maximum(evals[order[:k]], 1e-12))
        G = (Z @ V[:, order[:k]]) / s * np.sqrt(n)
        s = s / np.sqrt(n)  # singular values of Z / sqrt(n): s^2 = 1 + (views - 1) * correlation
        W = {}
        for m, X in Xs.items():
            Wm = inv[m] @ X.astype(np.float64).T @ G / n
            # the constraint: each projected view has unit variance per canonical direction
            proj = X.astype(np.float64) @ Wm
            W[m] = Wm / np.maximum(proj.std(axis=0), 1e-12)
        n_views = len(Xs)
        # s^2 = 1 + (n_views - 1) * mean pairwise correlation for MAXVAR; map back to a correlation.
        corr = np.clip((s[:k] ** 2 - 1) / max(1, n_views - 1), 0.0, 1.0)
        return W, corr

    def _fit(self, views, masks, train, *, seed, progress):
        p = self.params
        mods = self.modalities
        stds = {
            m: Standardizer(pca=p["pca_in"], l2=p["l2_input"]).fit(views[m][train & masks[m]]) for m in mods
        }
        Xall = {m: stds[m].transform(views[m]) for m in mods}
        rows = paired_rows(masks, train, mods)
        if p["reg"] == "auto":
            fit_rows, val_rows = selection_split(train, masks, mods, seed=seed)
            best = (-1.0, REG_GRID[0])
            for r in REG_GRID:
                W, corr = self._solve({m: Xall[m][fit_rows] for m in mods}, r, p["dim"])
                w = corr ** p["power"]
                Z = [Xall[m][val_rows] @ W[m] * w for m in mods]
                score = np.mean(
                    [mean_recall(Z[i], Z[j]) for i in range(len(mods)) for j in range(i + 1, len(mods))]
                )
                if score > best[0]:
                    best = (float(score), r)
            reg = best[1]
        else:
            reg = float(p["reg"])
        W, corr = self._solve({m: Xall[m][rows] for m in mods}, reg, p["dim"])
        w = (corr ** p["power"]).astype(np.float32)
        for m in mods:
            self._state.update(stds[m].state(f"std.{m}"))
            self._state[f"W.{m}"] = (W[m] * w).astype(np.float32)
        self.meta.update({"dim": len(corr), "reg": reg, "correlations": corr.tolist(), "n_pairs": len(rows)})

    def _transform(self, modality, X):
        st = Standardizer.from_state(self._state, f"std.{modality}")
        return st.transform(X) @ self._state[f"W.{modality}"]
