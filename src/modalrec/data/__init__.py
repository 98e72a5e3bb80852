"""Data layer: load interaction tables and item catalogues, validate them, filter, split.

Entry points:

- :func:`load` ``(name_or_path, root=None, *, split=None, seed=2024, **options) -> Dataset``:
  built-in ``ml100k`` / ``tiktok`` / ``baby``, a CSV/TSV/JSONL/Parquet file (``.gz`` too), an
  MMRec folder, or a TOML description. See its docstring for every option and the cold-start
  protocol.
- :func:`validate` ``(name_or_path, root=None, **options) -> ValidationReport``: the same load,
  returning the report (rows read/kept per file, users/items/interactions, split sizes, and
  every dropped or suspicious row with ``file:line`` examples).
- :class:`ColumnMap`: which columns mean user, item, rating, timestamp, split label, item id,
  text fields and image/audio/video paths (auto-detected by common names when not given).
- Split functions on arrays (``random_split``, ``temporal_split``, ``global_temporal_split``,
  ``leave_one_out_split``, ``fixed_split``, ``cold_start_split``) and :func:`kcore_mask`.
- Media references (``zip://<archive>#<member>``, paths): :func:`read_media_bytes`.

Light on purpose (numpy, scipy, polars only; no torch), so that ``modalrec validate`` is fast.

>>> from modalrec.data import load, validate, ColumnMap, random_split
"""

from modalrec.data.build import natural_order
from modalrec.data.columns import ColumnMap
from modalrec.data.dataset import Dataset, interaction_matrix
from modalrec.data.kcore import KCoreResult, kcore_mask
from modalrec.data.media import media_exists, read_media_bytes, zip_uri
from modalrec.data.readers import read_table
from modalrec.data.registry import BUILTIN, default_root, load, validate
from modalrec.data.report import Issue, ValidationReport
from modalrec.data.splits import (
    cold_start_split,
    fixed_split,
    global_temporal_split,
    leave_one_out_split,
    random_split,
    temporal_split,
)
from modalrec.data.tables import read_interactions, read_items

__all__ = [
    "BUILTIN",
    "ColumnMap",
    "Dataset",
    "Issue",
    "KCoreResult",
    "ValidationReport",
    "cold_start_split",
    "default_root",
    "fixed_split",
    "global_temporal_split",
    "interaction_matrix",
    "kcore_mask",
    "leave_one_out_split",
    "load",
    "media_exists",
    "natural_order",
    "random_split",
    "read_interactions",
    "read_items",
    "read_media_bytes",
    "read_table",
    "temporal_split",
    "validate",
    "zip_uri",
]
