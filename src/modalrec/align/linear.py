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

import numpy as np
from pydantic import Field

from modalrec.align.base import (
    Aligner,
    RegStrength,
    Standardizer,
    paired_rows,
    register,
    selection_split,
)
from modalrec.align.metrics import mean_recall
from modalrec.core.params import Params

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


class RidgeParams(Params):
    """Hyperparameters of :class:`RidgeAligner`."""

    reference: str | None = Field(
        None, description="modality whose own coordinates are the shared space (None: the first view)"
    )
    dim: int | None = Field(
        None, ge=1, description="PCA size of the reference space, i.e. the shared dimension (None: all)"
    )
    reg: RegStrength = Field(
        "auto",
        description="ridge strength >= 0 relative to the mean eigenvalue, or 'auto' (chosen on validation items)",
    )
    pca_in: int | None = Field(
        None, ge=1, description="PCA size of each source modality before the regression (None: all)"
    )
    l2_input: bool = Field(True, description="L2-normalise every input row before centring and scaling")


@register
class RidgeAligner(Aligner[RidgeParams]):
    """Ridge regression of every modality onto the reference modality's (standardised, PCA) space.

    What it learns: one linear map per non-reference modality, fitted by regularised least squares
    onto the reference modality's own standardised coordinates. Why: fixing the target side rules out
    the trivial all-zero map without any constraint, and the closed form makes it the fast, strong
    baseline every learned aligner has to beat.

    >>> rng = np.random.default_rng(0)
    >>> t = rng.normal(size=(200, 6)).astype(np.float32); i = t @ rng.normal(size=(6, 5)).astype(np.float32)
    >>> al = RidgeAligner(reference="image", reg=1e-4, l2_input=False).fit({"text": t, "image": i})
    >>> from modalrec.align.metrics import mean_recall
    >>> mean_recall(al.transform("text", t), al.transform("image", i), k=1) > 0.95
    True
    """

    name = "ridge"
    params_class = RidgeParams

    def _fit(
        self,
        views: dict[str, np.ndarray],
        masks: dict[str, np.ndarray],
        train: np.ndarray,
        *,
        seed: int,
        progress: bool,
    ) -> None:
        hp = self.hp
        ref = hp.reference or self.modalities[0]
        if ref not in views:
            raise ValueError(f"reference modality {ref!r} is not among the views {self.modalities}")
        std_ref = Standardizer(pca=hp.dim, l2=hp.l2_input).fit(views[ref][train & masks[ref]])
        self._state.update(std_ref.state(f"std.{ref}"))
        Y_all = std_ref.transform(views[ref])
        chosen: dict[str, float] = {}
        for m in self.modalities:
            if m == ref:
                continue
            fit_rows, val_rows = selection_split(train, masks, [m, ref], seed=seed)
            rows = paired_rows(masks, train, [m, ref])
            std_m = Standardizer(pca=hp.pca_in, l2=hp.l2_input).fit(views[m][train & masks[m]])
            X_all = std_m.transform(views[m])
            if hp.reg == "auto":
                best = (-1.0, REG_GRID[0])
                for r in REG_GRID:
                    W = ridge_solve(X_all[fit_rows], Y_all[fit_rows], r)
                    score = mean_recall(X_all[val_rows] @ W, Y_all[val_rows])
                    if score > best[0]:
                        best = (score, r)
                reg = best[1]
            else:
                reg = hp.reg
            chosen[m] = reg
            self._state.update(std_m.state(f"std.{m}"))
            self._state[f"W.{m}"] = ridge_solve(X_all[rows], Y_all[rows], reg).astype(np.float32)
        self.meta.update({"reference": ref, "dim": std_ref.out_dim, "reg": chosen})

    def _transform(self, modality: str, X: np.ndarray) -> np.ndarray:
        st = Standardizer.from_state(self._state, f"std.{modality}")
        Z = st.transform(X)
        if modality == self.meta["reference"]:
            return Z
        return Z @ self._state[f"W.{modality}"]


class CCAParams(Params):
    """Hyperparameters of :class:`CCAAligner`."""

    dim: int = Field(64, ge=1, description="number of canonical directions kept (shared dimension k)")
    reg: RegStrength = Field(
        "auto",
        description="covariance shrinkage >= 0 relative to the mean eigenvalue, or 'auto' (chosen on validation items)",
    )
    pca_in: int | None = Field(None, ge=1, description="PCA size of each modality before CCA (None: all)")
    power: float = Field(
        1.0, ge=0, description="weight each direction by correlation ** power (0: plain CCA coordinates)"
    )
    l2_input: bool = Field(True, description="L2-normalise every input row before centring and scaling")


@register
class CCAAligner(Aligner[CCAParams]):
    """Regularised (generalised, MAXVAR) CCA: every view regresses onto one orthonormal ``G``.

    What it learns: one linear projection per modality such that the projected views are maximally
    correlated. Why: the constraint ``G^T G = I`` (equivalently: projected views have unit covariance)
    rules out the zero map symmetrically, without privileging a reference modality. Dimensions are
    weighted by ``corr ** power`` so that weakly correlated directions count less in cosine retrieval.

    >>> rng = np.random.default_rng(0)
    >>> z = rng.normal(size=(300, 4)).astype(np.float32)
    >>> a = z @ rng.normal(size=(4, 10)).astype(np.float32); b = z @ rng.normal(size=(4, 7)).astype(np.float32)
    >>> cca = CCAAligner(dim=4, reg=1e-4, l2_input=False).fit({"a": a, "b": b})
    >>> [round(c, 2) for c in cca.meta["correlations"]]
    [1.0, 1.0, 1.0, 1.0]
    """

    name = "cca"
    params_class = CCAParams

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

    def _fit(
        self,
        views: dict[str, np.ndarray],
        masks: dict[str, np.ndarray],
        train: np.ndarray,
        *,
        seed: int,
        progress: bool,
    ) -> None:
        hp = self.hp
        mods = self.modalities
        stds = {m: Standardizer(pca=hp.pca_in, l2=hp.l2_input).fit(views[m][train & masks[m]]) for m in mods}
        Xall = {m: stds[m].transform(views[m]) for m in mods}
        rows = paired_rows(masks, train, mods)
        if hp.reg == "auto":
            fit_rows, val_rows = selection_split(train, masks, mods, seed=seed)
            best = (-1.0, REG_GRID[0])
            for r in REG_GRID:
                W, corr = self._solve({m: Xall[m][fit_rows] for m in mods}, r, hp.dim)
                w = corr**hp.power
                Z = [Xall[m][val_rows] @ W[m] * w for m in mods]
                score = np.mean(
                    [mean_recall(Z[i], Z[j]) for i in range(len(mods)) for j in range(i + 1, len(mods))]
                )
                if score > best[0]:
                    best = (float(score), r)
            reg = best[1]
        else:
            reg = hp.reg
        W, corr = self._solve({m: Xall[m][rows] for m in mods}, reg, hp.dim)
        w = (corr**hp.power).astype(np.float32)
        for m in mods:
            self._state.update(stds[m].state(f"std.{m}"))
            self._state[f"W.{m}"] = (W[m] * w).astype(np.float32)
        self.meta.update({"dim": len(corr), "reg": reg, "correlations": corr.tolist(), "n_pairs": len(rows)})

    def _transform(self, modality: str, X: np.ndarray) -> np.ndarray:
        st = Standardizer.from_state(self._state, f"std.{modality}")
        return st.transform(X) @ self._state[f"W.{modality}"]
