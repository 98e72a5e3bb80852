"""The one Recommender protocol every model implements, plus the registry and persistence.

Why so small: like ``implicit``'s base class, a recommender only has to say how to ``fit`` and how to
``score`` a chunk of users; ranking, masking of seen items, chunking, saving and loading are shared
here so that every model behaves the same at the edges (and the conformance test in
``tests/models/test_conformance.py`` holds every model to it).

Persistence: a model is a directory holding ``model.json`` (class name + hyperparameters + extra
JSON state) and ``model.safetensors`` (all array state). No pickle.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import scipy.sparse as sp
import torch
from safetensors.numpy import load_file, save_file

from modalrec.errors import ConfigError, RunDirError
from modalrec.io import atomic_path, atomic_write_text

if TYPE_CHECKING:
    from modalrec.data.dataset import Dataset

REGISTRY: dict[str, type[Recommender]] = {}


def register(cls: type[Recommender]) -> type[Recommender]:
    """Class decorator: make a model available by its ``name`` to configs and the CLI."""
    REGISTRY[cls.name] = cls
    return cls


def create(name: str, **params: Any) -> Recommender:
    """Instantiate a registered model by name with hyperparameters.

    >>> import modalrec.models
    >>> create("popularity").name
    'popularity'
    """
    import modalrec.models  # noqa: F401  (populates the registry)

    try:
        cls = REGISTRY[name.lower()]
    except KeyError:
        known = ", ".join(sorted(REGISTRY))
        raise ConfigError(f"unknown model {name!r}; known models: {known}") from None
    try:
        return cls(**params)
    except TypeError as e:
        raise ConfigError(f"bad hyperparameters for model {name!r}: {e}") from None


def chunks(n: int, size: int) -> Iterator[slice]:
    """Consecutive slices of ``range(n)`` of at most ``size`` elements."""
    for start in range(0, n, size):
        yield slice(start, min(n, start + size))


def topk_scores(scores: np.ndarray | torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices and values of the top ``k`` per row, sorted by descending score.

    >>> idx, val = topk_scores(np.array([[0.25, 0.75, 0.5]], dtype=np.float32), 2)
    >>> idx.tolist(), val.tolist()
    ([[1, 2]], [[0.75, 0.5]])
    """
    t = torch.as_tensor(scores)
    k = min(k, t.shape[1])
    val, idx = torch.topk(t, k, dim=1, largest=True, sorted=True)
    return idx.numpy().astype(np.int64), val.numpy().astype(np.float32)


def mask_rows(scores: torch.Tensor, seen: sp.csr_matrix | None, rows: np.ndarray) -> torch.Tensor:
    """Set the scores of already-seen items to -inf, in place, for the given user rows."""
    if seen is None:
        return scores
    sub = seen[rows]
    if sub.nnz:
        r = np.repeat(np.arange(len(rows)), np.diff(sub.indptr))
        scores[torch.as_tensor(r), torch.as_tensor(sub.indices.astype(np.int64))] = -np.inf
    return scores


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


class Recommender(ABC):
    """Base class: subclasses set ``name`` and implement ``_fit``, ``_score`` and state I/O.

    Subclasses keep hyperparameters as plain attributes set in ``__init__`` from keyword arguments
    (the ``get_params``/``clone`` contract of scikit-learn), and any learned arrays in
    ``self._state`` (a dict of numpy arrays) so that ``save``/``load`` need no per-model code.
    """

    name: ClassVar[str] = "base"
    #: Whether the model uses item content features (multimodal models set True).
    uses_features: ClassVar[bool] = False

    def __init__(self, **params: Any) -> None:
        unknown = set(params) - set(self.default_params())
        if unknown:
            raise TypeError(
                f"unknown hyperparameters {sorted(unknown)}; known: {sorted(self.default_params())}"
            )
        self.params: dict[str, Any] = {**self.default_params(), **params}
        self._state: dict[str, np.ndarray] = {}
        self.meta: dict[str, Any] = {}
        self.n_users = 0
        self.n_items = 0

    # ------------------------------------------------------------------ hyperparameters
    @classmethod
    def default_params(cls) -> dict[str, Any]:
        return {}

    def get_params(self) -> dict[str, Any]:
        return dict(self.params)

    def clone(self) -> Recommender:
        """A new unfitted model with the same hyperparameters."""
        return type(self)(**self.get_params())

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params.items())
        return f"{type(self).__name__}({args})"

    # ------------------------------------------------------------------ protocol
    def fit(self, dataset: Dataset, *, progress: bool = True) -> Recommender:
        """Learn from ``dataset.train``; models with early stopping validate on ``dataset.valid``."""
        self.n_users, self.n_items = dataset.n_users, dataset.n_items
        self.meta = {}
        self._fit(dataset, progress=progress)
        self.meta.setdefault("n_users", self.n_users)
        self.meta.setdefault("n_items", self.n_items)
        return self

    @abstractmethod
    def _fit(self, dataset: Dataset, *, progress: bool) -> None: ...

    @abstractmethod
    def _score(self, users: np.ndarray) -> torch.Tensor:
        """float32 scores [len(users), n_items] for a chunk of dense user indices."""

    @property
    def is_fitted(self) -> bool:
        return self.n_items > 0

    def score(self, users: np.ndarray | list[int]) -> np.ndarray:
        """Scores of every item for each user, float32 [len(users), n_items]."""
        self._check_fitted()
        users = self._check_users(users)
        return self._score(users).detach().float().numpy()

    def recommend(
        self,
        users: np.ndarray | list[int],
        k: int = 10,
        *,
        exclude: sp.csr_matrix | None = None,
        chunk_size: int = 2048,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` item indices and scores for each user, skipping items in ``exclude`` rows.

        ``exclude`` is a users x items matrix (typically the training interactions); items with a
        non-zero entry are never recommended to that user. Users are scored in chunks so that the
        full user x item matrix is never built.
        """
        self._check_fitted()
        users = self._check_users(users)
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
    def _state_to_save(self) -> dict[str, np.ndarray]:
        """Arrays to persist; default: ``self._state``. Override to export torch parameters."""
        return self._state

    def _restore(self, state: dict[str, np.ndarray]) -> None:
        """Rebuild the fitted model from saved arrays; default: keep them in ``self._state``."""
        self._state = state

    def save(self, directory: str | Path) -> Path:
        """Write ``model.json`` + ``model.safetensors`` into ``directory`` (atomically, file by file)."""
        self._check_fitted()
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        state = {k: np.ascontiguousarray(v) for k, v in self._state_to_save().items()}
        with atomic_path(d / "model.safetensors") as tmp:
            save_file(state, str(tmp))
        info = {
            "model": self.name,
            "params": self.params,
            "n_users": self.n_users,
            "n_items": self.n_items,
            "meta": self.meta,
        }
        atomic_write_text(d / "model.json", json.dumps(info, indent=2, default=_json_default))
        return d

    @classmethod
    def load(cls, directory: str | Path) -> Recommender:
        """Load a model saved by :meth:`save`; the class is taken from ``model.json``."""
        d = Path(directory)
        try:
            info = json.loads((d / "model.json").read_text())
            state = load_file(str(d / "model.safetensors"))
        except FileNotFoundError as e:
            raise RunDirError(f"{d}: no saved model ({e.filename} is missing)") from None
        except (json.JSONDecodeError, OSError) as e:
            raise RunDirError(f"{d}: saved model is unreadable: {e}") from None
        model = create(info["model"], **info["params"])
        if cls is not Recommender and not isinstance(model, cls):
            raise RunDirError(f"{d} holds a {info['model']!r} model, not {cls.name!r}")
        model.n_users, model.n_items = int(info["n_users"]), int(info["n_items"])
        model.meta = info.get("meta", {})
        model._restore(state)
        return model


def _json_default(o: Any) -> Any:
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
