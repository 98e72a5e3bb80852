"""MMRec-style data folders: ``<name>.inter`` + optional ``*_feat.npy`` + optional ``i_id_mapping.csv``.

The MMRec convention (Zhou et al., used by most multimodal recommendation papers):

- ``<name>.inter``: TSV with a header; columns ``userID itemID [rating] [timestamp] x_label``
  where ``x_label`` is the fixed split (0 train, 1 valid, 2 test).
- ``<modality>_feat.npy``: one row per item, row ``r`` = ``itemID r`` (``image_feat.npy``,
  ``text_feat.npy``, ``audio_feat.npy``; ``v_feat``/``t_feat``/``a_feat`` are understood too).
  Any float dtype is accepted and converted to float32.
- ``i_id_mapping.csv`` (optional): TSV ``asin<TAB>itemID`` mapping raw ids to itemIDs.

Without a mapping file the items are ``0..max(itemID)`` (MMRec's ``item_num``), so item ids that
never occur in an interaction are kept as cold items, and each feature file must have exactly
that many rows.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from modalrec.core.errors import DataError
from modalrec.data.build import FeatureInput
from modalrec.data.columns import ColumnMap
from modalrec.data.readers import read_table
from modalrec.data.tables import Catalogue, Interactions, catalogue_from_table, read_interactions

MODALITY_ALIASES = {"v": "image", "t": "text", "a": "audio", "visual": "image", "acoustic": "audio"}


def load_feature_file(path: str | Path, modality: str | None = None) -> np.ndarray:
    """Load a 2-D numeric ``.npy`` (never with pickle) as float32 (see :func:`load_feature_input`).

    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "image_feat.npy"
    >>> np.save(p, np.ones((3, 2), dtype=np.float16))
    >>> load_feature_file(p).dtype
    dtype('float32')
    """
    path = Path(path)
    try:
        arr = np.load(path, allow_pickle=False, mmap_mode=None)
    except FileNotFoundError:
        raise DataError("feature file not found", file=path) from None
    except ValueError as e:
        if "pickle" in str(e).lower():
            raise DataError(
                "feature file holds Python objects (pickle); refusing to load it", file=path
            ) from None
        raise DataError(f"not a valid .npy file: {e}", file=path) from None
    except (OSError, EOFError) as e:
        raise DataError(f"not a valid .npy file (truncated?): {e}", file=path) from None
    if not isinstance(arr, np.ndarray):
        raise DataError("expected a single array in a .npy file", file=path)
    if arr.ndim != 2:
        raise DataError(f"feature array must be 2-D (items x dims), got shape {arr.shape}", file=path)
    if arr.dtype.kind not in "fiub":
        raise DataError(f"feature array must be numeric, got dtype {arr.dtype}", file=path)
    return np.ascontiguousarray(arr, dtype=np.float32)


def npy_dtype(path: str | Path) -> str:
    """The dtype stored in a ``.npy`` header, without reading the data."""
    try:
        with open(path, "rb") as f:
            fmt = np.lib.format
            version = fmt.read_magic(f)
            read = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
            return str(read(f)[2])
    except Exception:
        return ""


def feature_modality(path: Path) -> str:
    """``image_feat.npy`` -> ``image``; ``v_feat.npy`` -> ``image``."""
    stem = path.name[: -len("_feat.npy")] if path.name.endswith("_feat.npy") else path.stem
    return MODALITY_ALIASES.get(stem, stem)


def find_inter_file(folder: Path, inter: str | None = None) -> Path:
    if inter is not None:
        p = Path(inter)
        return p if p.is_absolute() else folder / p
    found = sorted(folder.glob("*.inter"))
    if not found:
        raise DataError("no *.inter file in the folder (MMRec layout expected)", file=folder)
    if len(found) > 1:
        names = ", ".join(p.name for p in found)
        raise DataError(f"several .inter files ({names}); choose one with inter='<file>'", file=folder)
    return found[0]


def read_mmrec_folder(
    folder: str | Path,
    *,
    inter: str | None = None,
    encoding: str = "utf-8",
    features: bool = True,
) -> tuple[Interactions, Catalogue | None, list[FeatureInput], list[str] | None]:
    """Read an MMRec folder: (interactions, catalogue or None, features, item universe or None)."""
    folder = Path(folder)
    inter_path = find_inter_file(folder, inter)
    interactions = read_interactions(
        inter_path, ColumnMap(user="userID", item="itemID"), format="tsv", encoding=encoding
    )
    catalogue = None
    mapping = folder / "i_id_mapping.csv"
    if mapping.is_file():
        t = read_table(mapping, format="tsv", encoding=encoding)
        catalogue = catalogue_from_table(t, ColumnMap(item_id="itemID", text=(), auto=False))
    all_items: list[str] | None = None
    items = interactions.frame["item"]
    as_int = items.str.to_integer(strict=False)
    canonical = as_int.null_count() == 0 and bool((as_int.cast(pl.Utf8) == items).all())
    if catalogue is None and len(as_int) and canonical and int(as_int.min()) >= 0:  # type: ignore[arg-type]
        all_items = [str(k) for k in range(int(as_int.max()) + 1)]  # type: ignore[arg-type]
    feats: list[FeatureInput] = []
    if features:
        for p in sorted(folder.glob("*_feat.npy")):
            arr = load_feature_file(p)
            if catalogue is None and all_items is None:
                raise DataError(
                    "feature rows are matched to items by integer itemID (row r = itemID r), but the "
                    "item ids are not non-negative integers",
                    file=p,
                )
            row_ids = np.arange(arr.shape[0]).astype(str)
            feats.append(FeatureInput(feature_modality(p), arr, row_ids, str(p), npy_dtype(p)))
    return interactions, catalogue, feats, all_items
