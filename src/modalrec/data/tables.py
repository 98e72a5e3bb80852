"""Typed interaction tables and item catalogues, read from CSV / TSV / JSONL / Parquet (``.gz`` too).

The layers: :mod:`modalrec.data.formats` (which format, which bytes and encoding),
:mod:`modalrec.data.readers` (one file -> a :class:`Table` of raw columns, with each row's line),
:mod:`modalrec.data.columns` (which column means what, :class:`ColumnMap`), and this module, which
type-checks the mapped columns into :class:`Interactions` and :class:`Catalogue`. The names of
those modules are re-exported here, so ``from modalrec.data.tables import read_table`` keeps working.

Policies (documented once, applied everywhere):

- Encoding: strict UTF-8 by default (a UTF-8 BOM is accepted). Bytes that are not UTF-8 raise
  ``DataError`` naming the line and suggesting ``encoding="latin-1"``. Any Python codec name can
  be passed as ``encoding=``.
- A line with the wrong number of fields (truncated, an extra separator) raises ``DataError``.
  Blank lines are skipped.
- Empty user/item ids, and ratings/timestamps that are empty or not finite numbers, raise
  ``DataError`` naming file, line and field: they are never dropped silently and never guessed.
  Timestamps may be numbers (seconds) or ISO-8601 date/times (converted to Unix seconds).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl

from modalrec.core.errors import DataError
from modalrec.data.columns import (
    ITEM_NAMES,
    LABEL_NAMES,
    MEDIA_NAMES,
    RATING_NAMES,
    TEXT_NAMES,
    TIMESTAMP_NAMES,
    USER_NAMES,
    ColumnMap,
)
from modalrec.data.formats import FORMATS, detect_format
from modalrec.data.readers import Table, read_table

__all__ = [
    "FORMATS",
    "ITEM_NAMES",
    "LABEL_NAMES",
    "LABEL_VALUES",
    "MEDIA_NAMES",
    "RATING_NAMES",
    "TEXT_NAMES",
    "TIMESTAMP_NAMES",
    "USER_NAMES",
    "Catalogue",
    "ColumnMap",
    "Interactions",
    "Table",
    "catalogue_from_table",
    "detect_format",
    "interactions_from_table",
    "read_interactions",
    "read_items",
    "read_table",
]

LABEL_VALUES = {"0": 0, "1": 1, "2": 2, "train": 0, "valid": 1, "val": 1, "validation": 1, "test": 2}


# ---------------------------------------------------------------------------------------- typed columns
def _first_bad(mask: pl.Series) -> int | None:
    idx = mask.arg_true()
    return int(idx[0]) if len(idx) else None


def _id_column(t: Table, col: str, what: str) -> pl.Series:
    s = t.df[col]
    if s.dtype != pl.Utf8:
        if s.dtype.is_float():
            # 3.0 -> "3": ids that went through a float column (JSON, Parquet) stay readable
            s = pl.Series(
                col,
                [
                    None if v is None else (str(int(v)) if float(v).is_integer() else str(v))
                    for v in s.to_list()
                ],
            )
        else:
            try:
                s = s.cast(pl.Utf8)
            except Exception:
                raise DataError(
                    f"{what} column {col!r} has type {s.dtype}, expected strings or integers", file=t.file
                ) from None
    s = s.str.strip_chars()
    bad = _first_bad(s.is_null() | (s.str.len_bytes() == 0))
    if bad is not None:
        raise t.error(bad, f"empty {what} id", field=col)
    return s


def _numeric_column(t: Table, col: str, what: str) -> pl.Series:
    s = t.df[col]
    if s.dtype.is_numeric():
        out = s.cast(pl.Float64)
        bad = _first_bad(out.is_null() | ~out.is_finite())
        if bad is not None:
            raise t.error(bad, f"{what} is missing or not finite: {s[bad]!r}", field=col)
        return out
    if s.dtype != pl.Utf8:
        raise DataError(f"{what} column {col!r} has type {s.dtype}, expected numbers", file=t.file, field=col)
    st = s.str.strip_chars()
    out = st.cast(pl.Float64, strict=False)
    bad = _first_bad(out.is_null() | ~out.fill_null(0.0).is_finite())
    if bad is not None:
        val = s[bad]
        msg = (
            f"{what} is empty" if val is None or not str(val).strip() else f"{what} is not a number: {val!r}"
        )
        if what == "timestamp":
            msg += " (expected Unix seconds or ISO-8601 date/times)"
        raise t.error(bad, msg, field=col)
    return out


def _timestamp_column(t: Table, col: str) -> pl.Series:
    s = t.df[col]
    if s.dtype in (pl.Datetime, pl.Date) or isinstance(s.dtype, pl.Datetime):
        out = s.cast(pl.Datetime("us")).dt.epoch("us").cast(pl.Float64) / 1e6
        bad = _first_bad(out.is_null())
        if bad is not None:
            raise t.error(bad, "timestamp is missing", field=col)
        return out.rename(col)
    if s.dtype == pl.Utf8:
        st = s.str.strip_chars()
        num = st.cast(pl.Float64, strict=False)
        if num.is_not_null().sum() == 0 and st.is_not_null().sum() > 0:
            # no value is a number: try ISO-8601 date/times
            try:
                dt = st.str.to_datetime(strict=False, time_unit="us")
            except Exception:
                dt = None
            if dt is not None and dt.is_null().sum() == 0:
                return (dt.dt.epoch("us").cast(pl.Float64) / 1e6).rename(col)
    return _numeric_column(t, col, "timestamp")


def _label_column(t: Table, col: str) -> pl.Series:
    s = t.df[col]
    if s.dtype.is_float():
        s = s.cast(pl.Int64, strict=False)
    st = s.cast(pl.Utf8).str.strip_chars().str.to_lowercase()
    out = st.replace_strict(
        list(LABEL_VALUES), list(LABEL_VALUES.values()), default=None, return_dtype=pl.Int8
    )
    bad = _first_bad(out.is_null())
    if bad is not None:
        raise t.error(bad, f"split label must be 0/1/2 or train/valid/test, got {s[bad]!r}", field=col)
    return out


@dataclass
class Interactions:
    """Interactions after type checks: one row per input row, in file order.

    ``frame`` columns: ``user``, ``item`` (str), optional ``rating``, ``timestamp`` (float64),
    ``label`` (int8), and ``line`` (int64, where the row came from). ``file`` names the source.
    """

    frame: pl.DataFrame
    file: str
    unit: str = "line"
    columns: ColumnMap = field(default_factory=ColumnMap)

    @property
    def has_rating(self) -> bool:
        return "rating" in self.frame.columns

    @property
    def has_timestamp(self) -> bool:
        return "timestamp" in self.frame.columns

    @property
    def has_label(self) -> bool:
        return "label" in self.frame.columns

    def where(self, line: int) -> str:
        return f"{self.file}:{line}" if self.unit == "line" else f"{self.file}:row {line}"


def interactions_from_table(t: Table, columns: ColumnMap | None = None) -> Interactions:
    """Type-check the mapped columns of a table (see the module docstring for the policy)."""
    cm = (columns or ColumnMap()).resolve_interactions(t.df.columns, t.file)
    assert cm.user is not None and cm.item is not None
    cols: dict[str, pl.Series] = {
        "user": _id_column(t, cm.user, "user").rename("user"),
        "item": _id_column(t, cm.item, "item").rename("item"),
    }
    if cm.rating is not None:
        cols["rating"] = _numeric_column(t, cm.rating, "rating").rename("rating")
    if cm.timestamp is not None:
        cols["timestamp"] = _timestamp_column(t, cm.timestamp).rename("timestamp")
    if cm.label is not None:
        cols["label"] = _label_column(t, cm.label).rename("label")
    cols["line"] = pl.Series("line", t.lines, dtype=pl.Int64)
    return Interactions(pl.DataFrame(cols), t.file, t.unit, cm)


def read_interactions(
    path: str | Path,
    columns: ColumnMap | None = None,
    *,
    format: str | None = None,
    separator: str | None = None,
    has_header: bool = True,
    names: Sequence[str] | None = None,
    encoding: str = "utf-8",
    quote_char: str | None = '"',
) -> Interactions:
    """Read and type-check an interaction file.

    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "r.tsv"
    >>> _ = p.write_text("userID\\titemID\\trating\\n1\\t10\\t4\\n2\\t10\\t5\\n")
    >>> inter = read_interactions(p)
    >>> inter.frame["rating"].to_list(), inter.columns.user
    ([4.0, 5.0], 'userID')
    """
    t = read_table(
        path,
        format=format,
        separator=separator,
        has_header=has_header,
        names=names,
        encoding=encoding,
        quote_char=quote_char,
    )
    return interactions_from_table(t, columns)


@dataclass
class Catalogue:
    """An item table after checks: ``frame`` has ``item_id`` (str) first, then text, media, rest."""

    frame: pl.DataFrame
    file: str
    text_fields: list[str]
    media_columns: dict[str, str]
    lines: np.ndarray
    unit: str = "line"

    def where(self, row: int) -> str:
        n = int(self.lines[row])
        return f"{self.file}:{n}" if self.unit == "line" else f"{self.file}:row {n}"


def catalogue_from_table(
    t: Table, columns: ColumnMap | None = None, *, base_dir: Path | None = None
) -> Catalogue:
    """Put the id column first (renamed ``item_id``); make relative media paths absolute.

    Relative media paths are resolved against ``base_dir`` (default: the table's folder), so that
    encoders can open them from any working directory. ``zip://`` references and URLs are kept.
    """
    cm = (columns or ColumnMap()).resolve_items(t.df.columns, t.file)
    assert cm.item_id is not None and cm.text is not None
    ids = _id_column(t, cm.item_id, "item")
    df = t.df
    base = base_dir if base_dir is not None else Path(t.file).parent
    media = cm.media
    for col in media.values():
        s = df[col].cast(pl.Utf8).str.strip_chars()
        s = s.replace("", None)
        absolute = s.map_elements(lambda v: _absolutise(v, base), return_dtype=pl.Utf8)
        df = df.with_columns(absolute.alias(col))
    for col in cm.text:
        if df[col].dtype == pl.List(pl.Utf8):
            df = df.with_columns(pl.col(col).list.join("|"))
        elif df[col].dtype != pl.Utf8:
            df = df.with_columns(pl.col(col).cast(pl.Utf8))
    lead = list(cm.text) + [c for c in media.values() if c not in cm.text]
    rest = [c for c in df.columns if c not in lead and c != cm.item_id and c != "item_id"]
    out = pl.concat([ids.rename("item_id").to_frame(), df.select(lead + rest)], how="horizontal")
    return Catalogue(out, t.file, list(cm.text), dict(media), t.lines, t.unit)


def _absolutise(ref: str, base: Path) -> str:
    if "://" in ref or ref.startswith("/"):
        return ref
    return str((base / ref).absolute())


def read_items(
    path: str | Path,
    columns: ColumnMap | None = None,
    *,
    format: str | None = None,
    separator: str | None = None,
    has_header: bool = True,
    names: Sequence[str] | None = None,
    encoding: str = "utf-8",
    quote_char: str | None = '"',
) -> Catalogue:
    """Read an item catalogue (id, text fields, media paths).

    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / "items.csv").write_text('item_id,title,image\\n7,"Heat, 1995",img/7.jpg\\n')
    >>> cat = read_items(d / "items.csv")
    >>> cat.text_fields, cat.media_columns, cat.frame["image"][0].endswith("img/7.jpg")
    (['title'], {'image': 'image'}, True)
    """
    t = read_table(
        path,
        format=format,
        separator=separator,
        has_header=has_header,
        names=names,
        encoding=encoding,
        quote_char=quote_char,
    )
    return catalogue_from_table(t, columns)
