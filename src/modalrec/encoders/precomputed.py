"""Precomputed features as a modality: one ``.npy`` per item, or one ``[n_items, d]`` matrix.

Why: many public data sets ship features instead of media (TikTok, MMRec folders). Any float dtype
is accepted and converted to float32; rows with NaN/inf or of the wrong length are marked missing
like any other bad content. Files are read with ``allow_pickle=False`` (object arrays are refused).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

from modalrec.core.errors import ConfigError
from modalrec.encoders.base import (
    CORRUPT_FILE,
    NO_CONTENT,
    TRUNCATED_FILE,
    UNSUPPORTED,
    WRONG_SHAPE,
    BaseEncoder,
    ContentError,
    read_ref_bytes,
    sha256_bytes,
)


def load_vector(data: bytes) -> np.ndarray:
    """A 1-d float32 vector from ``.npy`` bytes (a ``[1, d]`` array is flattened)."""
    try:
        arr = np.load(io.BytesIO(data), allow_pickle=False)
    except ValueError as e:
        msg = str(e)
        if "pickle" in msg:
            raise ContentError(UNSUPPORTED, "object arrays (pickles) are not accepted") from None
        reason = TRUNCATED_FILE if "cannot reshape" in msg or "size" in msg else CORRUPT_FILE
        raise ContentError(reason, msg) from None
    except (OSError, EOFError) as e:
        raise ContentError(CORRUPT_FILE, str(e)) from None
    if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "fiu":
        raise ContentError(UNSUPPORTED, f"not a numeric array (dtype {getattr(arr, 'dtype', '?')})")
    if arr.ndim == 2 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 1:
        raise ContentError(WRONG_SHAPE, f"expected a vector, got shape {arr.shape}")
    return arr.astype(np.float32)


class NpyFileEncoder(BaseEncoder):
    """One ``.npy`` vector file per item; ``dim`` is given or taken from the first readable file.

    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> np.save(d / "a.npy", np.arange(3, dtype=np.float16))
    >>> enc = NpyFileEncoder().fit([str(d / "a.npy")])
    >>> enc.encode([str(d / "a.npy")]).tolist()
    [[0.0, 1.0, 2.0]]
    """

    name = "npy-file"
    modality = "features"
    version = "1"

    def __init__(self, dim: int | None = None) -> None:
        self.dim = int(dim) if dim else 0

    def fit(self, refs: list[Any]) -> NpyFileEncoder:
        """Take ``dim`` from the first readable file when it was not given."""
        if self.dim:
            return self
        for ref in refs:
            try:
                self.dim = len(load_vector(read_ref_bytes(ref)))
                return self
            except ContentError:
                continue
        raise ConfigError("no readable .npy feature file found to take the dimension from")

    def is_loaded(self, item: Any) -> bool:
        return isinstance(item, np.ndarray)

    def load(self, ref: Any) -> np.ndarray:
        v = load_vector(read_ref_bytes(ref))
        if self.dim and len(v) != self.dim:
            raise ContentError(WRONG_SHAPE, f"vector has {len(v)} values, expected {self.dim}")
        return v

    def _forward(self, loaded: list[Any]) -> np.ndarray:
        return np.stack(loaded).astype(np.float32)

    def to_spec(self) -> dict[str, Any]:
        return {"encoder": self.name, "dim": self.dim}


class NpyMatrixEncoder(BaseEncoder):
    """Rows of one ``[n_items, d]`` ``.npy`` matrix, aligned with the item table's row order.

    The reference of an item is its row number; the content key is the hash of the row's bytes,
    so a changed row is re-read and an unchanged one comes from the cache.
    """

    name = "npy-matrix"
    modality = "features"
    version = "1"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self._x = np.load(self.path, mmap_mode="r", allow_pickle=False)
        except FileNotFoundError:
            raise ConfigError(f"feature matrix not found: {self.path}") from None
        except ValueError as e:
            raise ConfigError(f"cannot read feature matrix {self.path}: {e}") from None
        if self._x.ndim != 2 or self._x.dtype.kind not in "fiu":
            raise ConfigError(
                f"{self.path}: expected a 2-d numeric array, got {self._x.dtype} {self._x.shape}"
            )
        self.dim = int(self._x.shape[1])

    @property
    def n_rows(self) -> int:
        return int(self._x.shape[0])

    def _row(self, ref: Any) -> int:
        if ref is None:
            raise ContentError(NO_CONTENT)
        i = int(ref)
        if not 0 <= i < self.n_rows:
            raise ContentError(WRONG_SHAPE, f"row {i} outside the matrix ({self.n_rows} rows)")
        return i

    def content_key(self, ref: Any) -> str:
        try:
            i = self._row(ref)
        except ContentError as e:
            return sha256_bytes(f"bad row {ref} {e.reason}".encode())
        return sha256_bytes(np.ascontiguousarray(self._x[i]).tobytes() + str(self._x.dtype).encode())

    def is_loaded(self, item: Any) -> bool:
        return isinstance(item, np.ndarray)

    def load(self, ref: Any) -> np.ndarray:
        return np.asarray(self._x[self._row(ref)], dtype=np.float32)

    def _forward(self, loaded: list[Any]) -> np.ndarray:
        return np.stack(loaded).astype(np.float32)

    def to_spec(self) -> dict[str, Any]:
        return {"encoder": self.name, "path": str(self.path)}
