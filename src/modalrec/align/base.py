"""The one Aligner protocol, its registry and persistence.

Why a protocol: every aligner (linear/CCA, contrastive, cross-attention, MMD/adversarial, entity graph,
collaborative) maps each modality's raw features into one shared ``k``-dimensional space. Fusion,
search, explanations and the alignment report only need ``transform(modality, X)``, so they work with
any of them, and the conformance check in :mod:`modalrec.align.checks` holds each aligner to the same
contract (like scikit-learn's ``check_estimator``).

Inputs are plain arrays: ``views`` maps a modality name to float32 ``[n_items, d_m]`` rows (row ``i`` of
every view is the same item), and ``masks`` maps a modality to a bool ``[n_items]`` presence mask
(missing rows may hold anything, typically zeros). ``valid_items`` are item indices the aligner must
not train on but may use for early stopping / model selection.

Persistence: an aligner is a directory with ``aligner.json`` (class name, hyperparameters, JSON
state) and ``aligner.safetensors`` (all arrays). No pickle.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Annotated, Any, ClassVar, Literal, Self

import numpy as np
from pydantic import AfterValidator

from modalrec.core.errors import DataError
from modalrec.core.persistence import Component, P
from modalrec.core.registry import Registry

ALIGNERS: Registry[type[Aligner[Any]]] = Registry("aligner", populate="modalrec.align")


def register(cls: type[Aligner[Any]]) -> type[Aligner[Any]]:
    """Class decorator: make an aligner available by its ``name`` to configs and the CLI."""
    return ALIGNERS.register(cls.name)(cls)


def create(name: str, **params: Any) -> Aligner[Any]:
    """Instantiate a registered aligner by name (hyperparameters validated against its declaration).

    >>> create("cca", dim=8).get_params()["dim"]
    8
    """
    return ALIGNERS.get_or_raise(name)(**params)


def _auto_or_non_negative(value: str | float) -> str | float:
    if not isinstance(value, str) and value < 0:
        raise ValueError("must be 'auto' or a number >= 0")
    return value


#: A regularisation strength: a number >= 0 (relative to the data scale), or ``"auto"`` to choose it
#: on validation items. (The range lives in a validator: pydantic cannot put ``ge`` on a union.)
RegStrength = Annotated[Literal["auto"] | float, AfterValidator(_auto_or_non_negative)]


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero).

    >>> l2_normalize(np.array([[3.0, 4.0], [0.0, 0.0]])).astype(float).round(3).tolist()
    [[0.6, 0.8], [0.0, 0.0]]
    """
    x = np.asarray(x, dtype=np.float32)
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return (x / np.maximum(n, eps)).astype(np.float32)


def check_views(
    views: dict[str, np.ndarray], masks: dict[str, np.ndarray] | None
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], int]:
    """Validate shapes, cast to float32 and fill default (all-present) masks.

    Raises :class:`DataError` naming the modality when row counts differ or values are not finite
    on present rows, because a silent NaN would poison every aligner's normal equations.
    """
    if not views:
        raise DataError("no modality views given to the aligner")
    n = None
    out: dict[str, np.ndarray] = {}
    out_masks: dict[str, np.ndarray] = {}
    for m, X in views.items():
        X = np.asarray(X, dtype=np.float32)
        if X.ndim != 2:
            raise DataError(f"view must be 2-d [n_items, d], got shape {X.shape}", field=m)
        if n is None:
            n = X.shape[0]
        elif X.shape[0] != n:
            raise DataError(f"view has {X.shape[0]} rows but the first view has {n}", field=m)
        mk = np.ones(n, dtype=bool) if masks is None or m not in masks else np.asarray(masks[m], dtype=bool)
        if mk.shape != (n,):
            raise DataError(f"mask has shape {mk.shape}, expected ({n},)", field=m)
        if not np.isfinite(X[mk]).all():  # missing rows may be NaN: they are ignored
            raise DataError("view has NaN or infinite values on present rows", field=m)
        out[m] = X
        out_masks[m] = mk
    assert n is not None
    return out, out_masks, n


def train_mask(n: int, valid_items: np.ndarray | None) -> np.ndarray:
    """Boolean [n]: True for items the aligner may train on (everything but ``valid_items``)."""
    t = np.ones(n, dtype=bool)
    if valid_items is not None and len(valid_items):
        t[np.asarray(valid_items, dtype=np.int64)] = False
    return t


class Standardizer:
    """Centre and scale a modality (per-feature mean, one global scale), optionally PCA-reduce.

    Why one global scale instead of per-feature: encoder features have a few strong and many weak
    dimensions; per-feature scaling would amplify noise dimensions, which hurts ridge/CCA on small
    catalogues. PCA (fitted on training rows) keeps the ``pca`` strongest directions.
    """

    def __init__(self, pca: int | None = None, l2: bool = True) -> None:
        self.pca = pca
        self.l2 = l2
        self.mean: np.ndarray | None = None
        self.scale = 1.0
        self.components: np.ndarray | None = None

    def fit(self, X: np.ndarray) -> Standardizer:
        X = l2_normalize(X) if self.l2 else np.asarray(X, dtype=np.float32)
        self.mean = X.mean(axis=0)
        Xc = X - self.mean
        if self.pca is not None and self.pca < min(Xc.shape):
            _, _, vt = np.linalg.svd(Xc.astype(np.float64), full_matrices=False)
            self.components = vt[: self.pca].T.astype(np.float32)
            Xc = Xc @ self.components
        self.scale = float(np.sqrt((Xc**2).sum(axis=1).mean()) + 1e-12)
        return self

    def transform(self, X: np.ndarray) -> np.ndarray:
        assert self.mean is not None, "Standardizer is not fitted"
        X = l2_normalize(X) if self.l2 else np.asarray(X, dtype=np.float32)
        Xc = X - self.mean
        if self.components is not None:
            Xc = Xc @ self.components
        return (Xc / self.scale).astype(np.float32)

    @property
    def out_dim(self) -> int:
        assert self.mean is not None
        return self.components.shape[1] if self.components is not None else len(self.mean)

    def state(self, prefix: str) -> dict[str, np.ndarray]:
        assert self.mean is not None
        s = {
            f"{prefix}.mean": self.mean,
            f"{prefix}.scale": np.array([self.scale], dtype=np.float32),
            f"{prefix}.l2": np.array([1.0 if self.l2 else 0.0], dtype=np.float32),
        }
        if self.components is not None:
            s[f"{prefix}.components"] = self.components
        return s

    @classmethod
    def from_state(cls, state: dict[str, np.ndarray], prefix: str) -> Standardizer:
        st = cls(l2=bool(state[f"{prefix}.l2"][0]))
        st.mean = state[f"{prefix}.mean"]
        st.scale = float(state[f"{prefix}.scale"][0])
        st.components = state.get(f"{prefix}.components")
        st.pca = None if st.components is None else st.components.shape[1]
        return st


class Aligner(Component[P], ABC):
    """Base class: subclasses set ``name`` and ``params_class`` and implement ``_fit``, ``_transform``.

    Hyperparameters are declared once in the aligner's :class:`~modalrec.core.params.Params` class
    and read as ``self.hp.<name>``; learned arrays live in ``self._state`` (name -> numpy array) so
    that save/load (:class:`~modalrec.core.persistence.Component`) need no per-aligner code, and
    JSON-able facts in ``self.meta``.
    """

    kind: ClassVar[str] = "aligner"
    stem: ClassVar[str] = "aligner"
    registry: ClassVar[Registry[Any]] = ALIGNERS

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self.modalities: list[str] = []
        self.input_dims: dict[str, int] = {}

    # ------------------------------------------------------------------ protocol
    def fit(
        self,
        views: dict[str, np.ndarray],
        masks: dict[str, np.ndarray] | None = None,
        *,
        valid_items: np.ndarray | None = None,
        seed: int = 0,
        progress: bool = False,
    ) -> Self:
        """Learn the maps into the shared space from items with two or more modalities present.

        ``valid_items`` are never trained on; aligners that early-stop or select hyperparameters
        use them for that (and only for that).
        """
        views, masks, n = check_views(views, masks)
        if len(views) < self.min_modalities:
            raise DataError(f"{type(self).__name__} needs at least {self.min_modalities} modalities")
        # rows of missing modalities may hold anything (NaN included); zero them so that no training
        # step ever multiplies a NaN by a zero gradient
        views = {m: np.where(masks[m][:, None], X, 0.0).astype(np.float32) for m, X in views.items()}
        self.modalities = list(views)
        self.input_dims = {m: int(X.shape[1]) for m, X in views.items()}
        self._state = {}
        self.meta = {}
        self._fit(views, masks, train_mask(n, valid_items), seed=seed, progress=progress)
        return self

    min_modalities: ClassVar[int] = 2

    @abstractmethod
    def _fit(
        self,
        views: dict[str, np.ndarray],
        masks: dict[str, np.ndarray],
        train: np.ndarray,
        *,
        seed: int,
        progress: bool,
    ) -> None: ...

    @abstractmethod
    def _transform(self, modality: str, X: np.ndarray) -> np.ndarray: ...

    @property
    def is_fitted(self) -> bool:
        return bool(self.modalities)

    @property
    def dim(self) -> int:
        """Dimension ``k`` of the shared space."""
        return int(self.meta["dim"])

    def transform(self, modality: str, X: np.ndarray) -> np.ndarray:
        """Map raw features of one modality, float32 ``[n, d_m]``, into the shared space ``[n, k]``."""
        if not self.is_fitted:
            raise RuntimeError(f"{type(self).__name__} is not fitted; call fit() or load() first")
        if modality not in self.modalities:
            raise DataError(
                f"aligner was fitted on {self.modalities}, not on modality {modality!r}", field=modality
            )
        X = np.asarray(X, dtype=np.float32)
        if X.ndim == 1:
            X = X[None, :]
        if X.shape[1] != self.input_dims[modality]:
            raise DataError(
                f"expected {self.input_dims[modality]} features, got {X.shape[1]}", field=modality
            )
        if len(X) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.asarray(self._transform(modality, X), dtype=np.float32)

    def transform_all(
        self, views: dict[str, np.ndarray], masks: dict[str, np.ndarray] | None = None
    ) -> dict[str, np.ndarray]:
        """Every fitted modality mapped into the shared space; missing rows (mask False) are zero."""
        out: dict[str, np.ndarray] = {}
        for m in self.modalities:
            if m not in views:
                continue
            Z = self.transform(m, views[m])
            if masks is not None and m in masks:
                Z[~np.asarray(masks[m], dtype=bool)] = 0.0
            out[m] = Z
        return out

    # ------------------------------------------------------------------ persistence
    def _facts(self) -> dict[str, Any]:
        return {"modalities": self.modalities, "input_dims": self.input_dims}

    def _restore_facts(self, info: dict[str, Any]) -> None:
        self.modalities = list(info["modalities"])
        self.input_dims = {k: int(v) for k, v in info["input_dims"].items()}


def paired_rows(masks: dict[str, np.ndarray], train: np.ndarray, modalities: list[str]) -> np.ndarray:
    """Indices of training items where every modality in ``modalities`` is present."""
    ok = train.copy()
    for m in modalities:
        ok &= masks[m]
    return np.flatnonzero(ok)


def selection_split(
    train: np.ndarray,
    masks: dict[str, np.ndarray],
    modalities: list[str],
    *,
    seed: int,
    frac: float = 0.15,
    min_valid: int = 20,
) -> tuple[np.ndarray, np.ndarray]:
    """(fit rows, validation rows) of fully paired items for early stopping / model selection.

    Validation rows are the caller's held-out ``valid_items`` (everything outside ``train``) when
    there are at least ``min_valid`` paired ones; otherwise a seeded ``frac`` of the training pairs
    is carved out, so selection never looks at items the caller reserved for testing.
    """
    everything = np.ones_like(train)
    paired_all = paired_rows(masks, everything, modalities)
    fit_rows = paired_all[train[paired_all]]
    val_rows = paired_all[~train[paired_all]]
    if len(val_rows) >= min_valid:
        return fit_rows, val_rows
    rng = np.random.default_rng(seed)
    perm = rng.permutation(fit_rows)
    n_val = max(min(min_valid, len(perm) // 2), round(frac * len(perm)))
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])
