"""Reading interaction tables and item catalogues: CSV / TSV / JSONL / Parquet (and ``.gz`` text).

Why our own thin layer over polars: users hit the loader first, and the first file they load is
usually slightly broken. Every structural problem must come back as a :class:`DataError` that
names the file and the 1-based line (the header is line 1), so we check encodings and field
counts ourselves (vectorised with numpy; Python's ``csv`` module only for quoted files) and
let polars do the parsing.

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

import csv
import gzip
import io
import json
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from modalrec.core.errors import ConfigError, DataError

FORMATS = ("csv", "tsv", "jsonl", "parquet")
_SUFFIX_FORMATS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".inter": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
}
_SEPARATORS = {"csv": ",", "tsv": "\t"}

# Column names recognised when a ColumnMap leaves a field to auto-detection (first match wins).
USER_NAMES = ("user_id", "userID", "userId", "user", "uid", "reviewerID", "customer_id")
ITEM_NAMES = ("item_id", "itemID", "itemId", "item", "iid", "movie_id", "movieId", "asin", "product_id")
RATING_NAMES = ("rating", "ratings", "score", "stars", "overall")
TIMESTAMP_NAMES = ("timestamp", "ts", "time", "datetime", "unixReviewTime", "date")
LABEL_NAMES = ("x_label", "split", "label_split")
TEXT_NAMES = (
    "title",
    "name",
    "genres",
    "categories",
    "category",
    "tags",
    "description",
    "overview",
    "tagline",
    "summary",
    "text",
    "plot",
    "brand",
)
MEDIA_NAMES = {
    "image": ("image", "image_path", "poster", "poster_path", "img", "image_file"),
    "audio": ("audio", "audio_path", "audio_file"),
    "video": ("video", "video_path", "video_file"),
}
LABEL_VALUES = {"0": 0, "1": 1, "2": 2, "train": 0, "valid": 1, "val": 1, "validation": 1, "test": 2}


# ---------------------------------------------------------------------------------------- raw tables
@dataclass
class Table:
    """A parsed file: the frame plus where each row came from (for error messages and reports).

    ``lines[r]`` is the 1-based line of row ``r`` in the file (header = line 1) for text formats,
    and the 1-based row number for Parquet (``unit == "row"``).
    """

    df: pl.DataFrame
    lines: np.ndarray
    file: str
    unit: str = "line"

    def where(self, row: int) -> str:
        """``file:line`` of a row (``file:row N`` for Parquet)."""
        n = int(self.lines[row])
        return f"{self.file}:{n}" if self.unit == "line" else f"{self.file}:row {n}"

    def error(self, row: int, message: str, field: str | None = None) -> DataError:
        if self.unit == "line":
            return DataError(message, file=self.file, line=int(self.lines[row]), field=field)
        return DataError(f"row {int(self.lines[row])}: {message}", file=self.file, field=field)


def detect_format(path: str | Path) -> str:
    """File format from the suffix (``.gz`` looked through); sniffed from the first line otherwise."""
    p = Path(path)
    suffixes = [s.lower() for s in p.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    if suffixes and suffixes[-1] in _SUFFIX_FORMATS:
        return _SUFFIX_FORMATS[suffixes[-1]]
    head = _read_bytes(p)[:4096].lstrip()
    first = head.split(b"\n", 1)[0]
    if first.startswith(b"{"):
        return "jsonl"
    if first.startswith(b"PAR1"):
        return "parquet"
    if b"\t" in first:
        return "tsv"
    if b"," in first:
        return "csv"
    raise DataError(
        "cannot tell the file format from its name or first line; pass format='csv', 'tsv', "
        "'jsonl' or 'parquet' (and separator=... for other delimiters)",
        file=p,
    )


def _read_bytes(path: Path) -> bytes:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError("file not found", file=path) from None
    except IsADirectoryError:
        raise DataError("expected a file, got a directory", file=path) from None
    if path.suffix.lower() == ".gz":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as e:
            raise DataError(f"cannot decompress gzip file (truncated or corrupt?): {e}", file=path) from None
    return raw


def _to_utf8(raw: bytes, encoding: str, file: str) -> bytes:
    """Validate/convert to UTF-8 bytes; undecodable bytes raise DataError with the line number."""
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    enc = encoding.lower().replace("_", "-")
    try:
        if enc in ("utf-8", "utf8"):
            raw.decode("utf-8")
            return raw
        return raw.decode(encoding).encode("utf-8")
    except LookupError:
        raise DataError(f"unknown encoding {encoding!r}", file=file) from None
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        col = e.start - (raw.rfind(b"\n", 0, e.start) + 1) + 1
        hint = ' (if the file is Latin-1, e.g. MovieLens u.item, pass encoding="latin-1")'
        raise DataError(
            f"byte 0x{raw[e.start]:02x} at column {col} is not valid {encoding}{hint if enc.startswith('utf') else ''}",
            file=file,
            line=line,
        ) from None


def read_table(
    path: str | Path,
    *,
    format: str | None = None,
    separator: str | None = None,
    has_header: bool = True,
    names: Sequence[str] | None = None,
    encoding: str = "utf-8",
    quote_char: str | None = '"',
) -> Table:
    """Read one file into a :class:`Table`. Text formats give string columns (no type guessing).

    Args:
        path: the file; ``.gz`` is decompressed for text formats.
        format: ``csv``, ``tsv``, ``jsonl`` or ``parquet``; default from the suffix.
        separator: field separator (default ``,`` for csv, tab for tsv), e.g. ``"|"``; a
            multi-character separator such as MovieLens-1M's ``"::"`` works for unquoted files.
        has_header: whether the first line names the columns; if not, pass ``names``.
        encoding: text encoding (strict UTF-8 by default).
        quote_char: CSV quote character, ``None`` to disable quoting.

    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "r.csv"
    >>> _ = p.write_text("user,item\\nu1,i1\\n\\nu2,i2\\n")
    >>> t = read_table(p)
    >>> t.df["item"].to_list(), t.lines.tolist()
    (['i1', 'i2'], [2, 4])
    """
    path = Path(path)
    fmt = (format or detect_format(path)).lower()
    if fmt not in FORMATS:
        raise DataError(f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}", file=path)
    if fmt == "parquet":
        return _read_parquet(path)
    buf = _to_utf8(_read_bytes(path), encoding, str(path))
    if fmt == "jsonl":
        if buf.lstrip()[:1] == b"[":
            return _read_json_array(buf, str(path))
        return _read_jsonl(buf, str(path))
    sep = separator if separator is not None else _SEPARATORS[fmt]
    if not sep or "\n" in sep:
        raise DataError(f"invalid separator {sep!r}", file=path)
    if len(sep.encode("utf-8")) > 1:
        # "::" -> a control character that cannot occur in text, then parse as usual
        if b"\x1f" in buf:
            raise DataError(f"multi-character separator {sep!r} needs a file without 0x1f bytes", file=path)
        buf = buf.replace(sep.encode("utf-8"), b"\x1f")
        sep, quote_char = "\x1f", None
    if not has_header and not names:
        raise DataError("has_header=False needs names=[...] for the columns", file=path)
    return _read_separated(buf, str(path), sep, has_header, list(names) if names else None, quote_char)


def _read_parquet(path: Path) -> Table:
    try:
        df = pl.read_parquet(path)
    except FileNotFoundError:
        raise DataError("file not found", file=path) from None
    except Exception as e:  # polars raises several error types for corrupt files
        raise DataError(f"not a readable Parquet file: {e}", file=path) from None
    return Table(df, np.arange(1, df.height + 1, dtype=np.int64), str(path), unit="row")


def _read_json_array(buf: bytes, file: str) -> Table:
    """A ``.json`` file holding one array of objects (rows are numbered, not lines)."""
    try:
        data = json.loads(buf)
    except json.JSONDecodeError as e:
        raise DataError(f"not valid JSON: {e.msg}", file=file, line=e.lineno) from None
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise DataError("a JSON file must hold an array of objects (or one object per line)", file=file)
    try:
        df = pl.from_dicts(data, infer_schema_length=None) if data else pl.DataFrame()
    except Exception as e:
        raise DataError(
            f"could not read the JSON objects (mixed value types in a field?): {e}", file=file
        ) from None
    return Table(df, np.arange(1, len(data) + 1, dtype=np.int64), file, unit="row")


def _read_jsonl(buf: bytes, file: str) -> Table:
    text_lines = buf.split(b"\n")
    keep = [i for i, ln in enumerate(text_lines) if ln.strip()]
    if not keep:
        raise DataError("file is empty", file=file)
    body = b"\n".join(text_lines[i] for i in keep)
    try:
        df = pl.read_ndjson(io.BytesIO(body), infer_schema_length=None)
        ok = df.height == len(keep)
    except Exception:
        ok = False
    if not ok:
        for i in keep:
            try:
                obj = json.loads(text_lines[i])
            except json.JSONDecodeError as e:
                raise DataError(f"not valid JSON (truncated line?): {e.msg}", file=file, line=i + 1) from None
            if not isinstance(obj, dict):
                raise DataError("each line must be a JSON object", file=file, line=i + 1)
        raise DataError("could not read the JSON lines (mixed value types in a column?)", file=file)
    return Table(df, np.asarray(keep, dtype=np.int64) + 1, file)


def _read_separated(
    buf: bytes, file: str, sep: str, has_header: bool, names: list[str] | None, quote_char: str | None
) -> Table:
    if b"\r" in buf:
        buf = buf.replace(b"\r\n", b"\n")
    if quote_char is not None and quote_char.encode() in buf:
        return _read_quoted(buf, file, sep, has_header, names, quote_char)
    arr = np.frombuffer(buf, dtype=np.uint8)
    nl = np.flatnonzero(arr == 10)
    starts = np.concatenate(([0], nl + 1))
    ends = np.concatenate((nl, [len(arr)]))
    n_fields = np.bincount(np.searchsorted(nl, np.flatnonzero(arr == ord(sep))), minlength=len(starts)) + 1
    nonblank = np.flatnonzero(ends > starts)
    if len(nonblank) == 0:
        raise DataError("file is empty", file=file)
    if has_header:
        hdr = nonblank[0]
        header = buf[starts[hdr] : ends[hdr]].decode("utf-8").split(sep)
        data_lines = nonblank[1:]
    else:
        header = list(names or [])
        data_lines = nonblank
    _check_header(header, file)
    expected = len(header)
    bad = data_lines[n_fields[data_lines] != expected]
    if len(bad):
        ln = int(bad[0])
        got = int(n_fields[ln])
        raise DataError(
            f"line has {got} field{'s' if got != 1 else ''}, expected {expected} "
            f"({'truncated' if got < expected else 'malformed'} line? {len(bad)} such line(s) in the file)",
            file=file,
            line=ln + 1,
        )
    if len(data_lines) == 0:
        df = pl.DataFrame({c: pl.Series(c, [], dtype=pl.Utf8) for c in header})
        return Table(df, np.zeros(0, dtype=np.int64), file)
    blank = ends == starts
    blank[-1] = False  # the empty "line" after a final newline
    if has_header and not blank.any():
        df = pl.read_csv(io.BytesIO(buf), separator=sep, has_header=True, infer_schema=False, quote_char=None)
    else:
        # blank lines are dropped here (polars would turn them into all-null rows)
        body = buf if not blank.any() else b"\n".join(buf[starts[i] : ends[i]] for i in data_lines)
        df = pl.read_csv(
            io.BytesIO(body),
            separator=sep,
            has_header=False,
            new_columns=header,
            infer_schema=False,
            quote_char=None,
        )
    if df.height != len(data_lines):  # pragma: no cover - guards against parser disagreement
        raise DataError(f"parsed {df.height} rows but the file has {len(data_lines)} data lines", file=file)
    return Table(df, data_lines.astype(np.int64) + 1, file)


def _check_header(header: list[str], file: str) -> None:
    seen: set[str] = set()
    for h in header:
        if h in seen:
            raise DataError(f"duplicate column name {h!r} in the header", file=file, line=1)
        seen.add(h)


def _read_quoted(
    buf: bytes, file: str, sep: str, has_header: bool, names: list[str] | None, quote_char: str
) -> Table:
    reader = csv.reader(
        io.StringIO(buf.decode("utf-8"), newline=""), delimiter=sep, quotechar=quote_char, strict=True
    )
    rows: list[list[str]] = []
    lines: list[int] = []
    header: list[str] | None = None if has_header else list(names or [])
    prev_end = 0
    try:
        for rec in reader:
            start = prev_end + 1
            prev_end = reader.line_num
            if not rec or (len(rec) == 1 and rec[0] == "" and (header is None or len(header) != 1)):
                continue  # blank line
            if header is None:
                header = rec
                _check_header(header, file)
                continue
            if len(rec) != len(header):
                got = len(rec)
                raise DataError(
                    f"line has {got} field{'s' if got != 1 else ''}, expected {len(header)} "
                    f"({'truncated' if got < len(header) else 'malformed'} line?)",
                    file=file,
                    line=start,
                )
            rows.append(rec)
            lines.append(start)
    except csv.Error as e:
        raise DataError(f"malformed quoting: {e}", file=file, line=reader.line_num) from None
    if header is None:
        raise DataError("file is empty", file=file)
    cols = list(zip(*rows, strict=True)) if rows else [() for _ in header]
    df = pl.DataFrame({h: pl.Series(h, list(c), dtype=pl.Utf8) for h, c in zip(header, cols, strict=True)})
    return Table(df, np.asarray(lines, dtype=np.int64), file)


# ---------------------------------------------------------------------------------------- column maps
@dataclass(frozen=True)
class ColumnMap:
    """Which columns of the user's files mean what.

    Interaction columns: ``user``, ``item`` (required), ``rating``, ``timestamp``, ``label``
    (a fixed split: 0/1/2 or train/valid/test, as MMRec's ``x_label``). Catalogue columns:
    ``item_id`` (defaults to ``item``), ``text`` (text fields, joined in this order by
    :meth:`Dataset.item_texts`), and media path columns ``image``, ``audio``, ``video``.

    With ``auto=True`` (default) every field left as ``None`` is looked up among common names
    (``userID``, ``movieId``, ``timestamp``, ``x_label``, ``title``, ``image_path``...); with
    ``auto=False`` a ``None`` field means "not present". A column that is named explicitly but
    missing from the file is a :class:`DataError`.

    >>> ColumnMap(user="uid", item="sku", rating="stars").resolve_interactions(
    ...     ["uid", "sku", "stars", "ts"], "x.csv").timestamp
    'ts'
    """

    user: str | None = None
    item: str | None = None
    rating: str | None = None
    timestamp: str | None = None
    label: str | None = None
    item_id: str | None = None
    text: tuple[str, ...] | None = None
    image: str | None = None
    audio: str | None = None
    video: str | None = None
    auto: bool = True

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ColumnMap:
        """Build from a plain mapping (TOML table); unknown keys raise ``ConfigError``."""
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown column-map keys {unknown}; expected some of {sorted(known)}")
        d = dict(d)
        if isinstance(d.get("text"), str):
            d["text"] = (d["text"],)
        elif d.get("text") is not None:
            d["text"] = tuple(d["text"])
        return cls(**d)

    def _pick(
        self, given: str | None, candidates: Sequence[str], columns: Sequence[str], file: str, what: str
    ) -> str | None:
        if given is not None:
            if given not in columns:
                raise DataError(f"{what} column {given!r} not found; columns are {list(columns)}", file=file)
            return given
        if not self.auto:
            return None
        lower = {c.lower(): c for c in columns}
        for cand in candidates:
            if cand in columns:
                return cand
            if cand.lower() in lower:
                return lower[cand.lower()]
        return None

    def resolve_interactions(self, columns: Sequence[str], file: str) -> ColumnMap:
        """Fill the interaction fields from ``columns``; user and item must be found."""
        user = self._pick(self.user, USER_NAMES, columns, file, "user")
        item = self._pick(self.item, ITEM_NAMES, columns, file, "item")
        if user is None or item is None:
            missing = "user" if user is None else "item"
            raise DataError(
                f"no {missing} column found; columns are {list(columns)}; "
                f"name it with ColumnMap({missing}=...) or columns={{'{missing}': ...}}",
                file=file,
            )
        if user == item:
            raise DataError(f"user and item map to the same column {user!r}", file=file)
        return replace(
            self,
            user=user,
            item=item,
            rating=self._pick(self.rating, RATING_NAMES, columns, file, "rating"),
            timestamp=self._pick(self.timestamp, TIMESTAMP_NAMES, columns, file, "timestamp"),
            label=self._pick(self.label, LABEL_NAMES, columns, file, "label"),
        )

    def resolve_items(self, columns: Sequence[str], file: str) -> ColumnMap:
        """Fill the catalogue fields from ``columns``; the item id column must be found."""
        given = self.item_id if self.item_id is not None else (self.item if self.item in columns else None)
        item_id = self._pick(given, ITEM_NAMES, columns, file, "item id")
        if item_id is None:
            raise DataError(
                f"no item id column found in the item table; columns are {list(columns)}; "
                "name it with ColumnMap(item_id=...)",
                file=file,
            )
        if self.text is not None:
            for t in self.text:
                if t not in columns:
                    raise DataError(f"text column {t!r} not found; columns are {list(columns)}", file=file)
            text = tuple(self.text)
        elif self.auto:
            text = tuple(c for c in TEXT_NAMES if c in columns and c != item_id)
        else:
            text = ()
        media = {
            m: self._pick(getattr(self, m), MEDIA_NAMES[m], columns, file, m)
            for m in ("image", "audio", "video")
        }
        return replace(
            self, item_id=item_id, text=text, image=media["image"], audio=media["audio"], video=media["video"]
        )

    @property
    def media(self) -> dict[str, str]:
        """Modality -> column name, for the media columns that are set."""
        return {m: c for m in ("image", "audio", "video") if (c := getattr(self, m)) is not None}


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
