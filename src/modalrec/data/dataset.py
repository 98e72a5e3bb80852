"""The in-memory :class:`Dataset`: id maps, item table, split matrices and precomputed features.

Why this shape: every model, encoder and metric in modalrec works on dense int indices and
scipy CSR matrices (users x items), while users speak in string ids. The Dataset is the one place
that holds both, so that nothing else needs to translate.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import polars as pl
import scipy.sparse as sp

from modalrec.core.errors import DataError
from modalrec.data.report import ValidationReport


def interaction_matrix(users: np.ndarray, items: np.ndarray, n_users: int, n_items: int) -> sp.csr_matrix:
    """Binary float32 CSR matrix with a 1 for every (user, item) pair; duplicates collapse to 1.

    >>> m = interaction_matrix(np.array([0, 0, 1]), np.array([2, 2, 0]), 2, 3)
    >>> m.toarray().tolist()
    [[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]
    """
    data = np.ones(len(users), dtype=np.float32)
    m = sp.csr_matrix(
        (data, (np.asarray(users, dtype=np.int64), np.asarray(items, dtype=np.int64))),
        shape=(n_users, n_items),
        dtype=np.float32,
    )
    m.sum_duplicates()
    m.data[:] = 1.0
    m.sort_indices()
    return m


@dataclass
class Dataset:
    """A catalogue with interactions, split into train / valid / test.

    Attributes:
        name: short name used in reports and run directories.
        user_ids: external user id (str) for every dense user index.
        item_ids: external item id (str) for every dense item index.
        train, valid, test: binary float32 CSR matrices of shape (n_users, n_items).
        items: optional item table, one row per item index, with an ``item_id`` column first
            followed by text fields and media path columns.
        features: precomputed item features per modality, float32 [n_items, d].
        feature_masks: per modality, bool [n_items]: True where the feature row is present.
        cold_items: item indices held out of training entirely (cold-start split), else None.
        text_fields / media_columns: which item columns hold text, and media paths per modality.
        report: the validation report of the load.
    """

    name: str
    user_ids: np.ndarray
    item_ids: np.ndarray
    train: sp.csr_matrix
    valid: sp.csr_matrix
    test: sp.csr_matrix
    items: pl.DataFrame | None = None
    features: dict[str, np.ndarray] = field(default_factory=dict)
    feature_masks: dict[str, np.ndarray] = field(default_factory=dict)
    cold_items: np.ndarray | None = None
    text_fields: list[str] = field(default_factory=list)
    media_columns: dict[str, str] = field(default_factory=dict)
    split_name: str = ""
    report: ValidationReport = field(default_factory=ValidationReport)

    def __post_init__(self) -> None:
        shape = (len(self.user_ids), len(self.item_ids))
        for part in ("train", "valid", "test"):
            m = getattr(self, part)
            if m.shape != shape:
                raise ValueError(f"{part} matrix has shape {m.shape}, expected {shape}")
        for name, feat in self.features.items():
            if feat.shape[0] != shape[1]:
                raise DataError(
                    f"feature matrix has {feat.shape[0]} rows but the catalogue has {shape[1]} items",
                    field=name,
                )
        self._user_index: dict[str, int] | None = None
        self._item_index: dict[str, int] | None = None

    # ------------------------------------------------------------------ sizes and maps
    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    def user_index(self, user_id: str) -> int:
        """Dense index of an external user id; raises :class:`DataError` for unknown users."""
        if self._user_index is None:
            self._user_index = {str(u): i for i, u in enumerate(self.user_ids)}
        try:
            return self._user_index[str(user_id)]
        except KeyError:
            raise DataError(f"unknown user id {user_id!r}", field="user") from None

    def item_index(self, item_id: str) -> int:
        """Dense index of an external item id; raises :class:`DataError` for unknown items."""
        if self._item_index is None:
            self._item_index = {str(i): k for k, i in enumerate(self.item_ids)}
        try:
            return self._item_index[str(item_id)]
        except KeyError:
            raise DataError(f"unknown item id {item_id!r}", field="item") from None

    # ------------------------------------------------------------------ derived views
    def seen(self, split: str = "test") -> sp.csr_matrix:
        """Items to mask when ranking for ``split``: train for valid; train + valid for test."""
        if split == "valid":
            return self.train
        if split == "test":
            return (self.train + self.valid).tocsr()
        if split == "train":
            return sp.csr_matrix(self.train.shape, dtype=np.float32)
        raise ValueError(f"unknown split {split!r}; expected train, valid or test")

    def target(self, split: str) -> sp.csr_matrix:
        if split not in ("train", "valid", "test"):
            raise ValueError(f"unknown split {split!r}; expected train, valid or test")
        return getattr(self, split)

    def item_popularity(self) -> np.ndarray:
        """Number of training interactions per item (int64)."""
        return np.asarray(self.train.sum(axis=0)).ravel().astype(np.int64)

    def item_texts(self, fields: Iterable[str] | None = None, sep: str = " | ") -> list[str]:
        """One string per item, joining ``fields`` (default: :attr:`text_fields`); empty if none."""
        cols = list(fields) if fields is not None else list(self.text_fields)
        if self.items is None or not cols:
            return [""] * self.n_items
        parts = [self.items[c].cast(pl.Utf8).fill_null("").to_list() for c in cols]
        return [sep.join(p for p in row if p) for row in zip(*parts, strict=True)]

    def summary(self) -> dict[str, int | float | str]:
        """Counts that every report prints first."""
        n = self.train.nnz + self.valid.nnz + self.test.nnz
        return {
            "dataset": self.name,
            "split": self.split_name,
            "users": self.n_users,
            "items": self.n_items,
            "interactions": int(n),
            "train": int(self.train.nnz),
            "valid": int(self.valid.nnz),
            "test": int(self.test.nnz),
            "density": float(n) / max(1, self.n_users * self.n_items),
            "cold_items": 0 if self.cold_items is None else len(self.cold_items),
            "modalities": ",".join(sorted(self.features)) or "-",
        }
