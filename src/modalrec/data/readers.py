"""Per-format readers: one file -> a :class:`Table` of string columns plus each row's line.

Why our own thin layer over polars: users hit the loader first, and the first file they load is
usually slightly broken. Every structural problem must come back as a :class:`DataError` that
names the file and the 1-based line (the header is line 1), so we check field counts ourselves
(vectorised with numpy; Python's ``csv`` module only for quoted files) and let polars do the
parsing. Format detection and encodings: :mod:`modalrec.data.formats`.

- A line with the wrong number of fields (truncated, an extra separator) raises ``DataError``.
  Blank lines are skipped.
- A file without data rows (empty, only a header, ``[]``, a Parquet file of 0 rows) raises
  ``DataError`` naming the file: an empty data set is never what the user meant.
- A field longer than :data:`MAX_FIELD_BYTES` (1 MiB) raises ``DataError`` naming file, line and
  column: no id or text is that long, it is a broken file (often a stray quote that swallowed the
  lines after it) or a wrong separator.
- Text formats give string columns (no type guessing); JSON and Parquet keep their types.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from modalrec.core.errors import DataError
from modalrec.data.formats import FORMATS, SEPARATORS, detect_format, read_bytes, to_utf8

#: Longest field accepted, in UTF-8 bytes (ids, texts, media paths alike).
MAX_FIELD_BYTES = 1 << 20


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
        return _checked(_read_parquet(path))
    buf = to_utf8(read_bytes(path), encoding, str(path))
    if fmt == "jsonl":
        if buf.lstrip()[:1] == b"[":
            return _checked(_read_json_array(buf, str(path)))
        return _checked(_read_jsonl(buf, str(path)))
    sep = separator if separator is not None else SEPARATORS[fmt]
    buf, sep, quote_char = _single_byte_separator(buf, sep, quote_char, path)
    if not has_header and not names:
        raise DataError("has_header=False needs names=[...] for the columns", file=path)
    return _checked(
        _read_separated(buf, str(path), sep, has_header, list(names) if names else None, quote_char)
    )


def _checked(t: Table) -> Table:
    """Refuse a table without data rows, or with a field over :data:`MAX_FIELD_BYTES`."""
    if t.df.height == 0:
        what = {"line": "the file has a header but no data rows", "row": "the file has no rows"}[t.unit]
        raise DataError(f"{what} (columns: {', '.join(t.df.columns) or 'none'})", file=t.file)
    for col in t.df.columns:
        s = t.df[col]
        if s.dtype != pl.Utf8:
            continue
        sizes = s.str.len_bytes().fill_null(0)
        longest = int(sizes.max() or 0)  # type: ignore[arg-type]
        if longest > MAX_FIELD_BYTES:
            raise t.error(
                int(sizes.arg_max() or 0),
                f"field is {longest:,} bytes long, over the limit of {MAX_FIELD_BYTES:,} bytes (1 MiB); "
                "no id or text is that long: a stray quote joining many lines, or a wrong separator?",
                field=col,
            )
    return t


def _single_byte_separator(
    buf: bytes, sep: str, quote_char: str | None, path: Path
) -> tuple[bytes, str, str | None]:
    """Check the separator; a multi-byte one (``"::"``) becomes 0x1f, which cannot occur in text."""
    if not sep or "\n" in sep:
        raise DataError(f"invalid separator {sep!r}", file=path)
    if len(sep.encode("utf-8")) == 1:
        return buf, sep, quote_char
    if b"\x1f" in buf:
        raise DataError(f"multi-character separator {sep!r} needs a file without 0x1f bytes", file=path)
    return buf.replace(sep.encode("utf-8"), b"\x1f"), "\x1f", None


# ---------------------------------------------------------------------------------------- Parquet, JSON
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
        _raise_first_bad_json_line(text_lines, keep, file)
    return Table(df, np.asarray(keep, dtype=np.int64) + 1, file)


def _raise_first_bad_json_line(text_lines: list[bytes], keep: list[int], file: str) -> None:
    """polars could not read the lines: name the first one that is not a JSON object."""
    for i in keep:
        try:
            obj = json.loads(text_lines[i])
        except json.JSONDecodeError as e:
            raise DataError(f"not valid JSON (truncated line?): {e.msg}", file=file, line=i + 1) from None
        if not isinstance(obj, dict):
            raise DataError("each line must be a JSON object", file=file, line=i + 1)
    raise DataError("could not read the JSON lines (mixed value types in a column?)", file=file)


# ---------------------------------------------------------------------------------------- CSV, TSV
@dataclass
class _LineSpans:
    """Byte span and field count of every line of an unquoted buffer (the last one may be empty)."""

    starts: np.ndarray
    ends: np.ndarray
    n_fields: np.ndarray

    @classmethod
    def of(cls, buf: bytes, sep: str) -> _LineSpans:
        arr = np.frombuffer(buf, dtype=np.uint8)
        nl = np.flatnonzero(arr == 10)
        starts = np.concatenate(([0], nl + 1))
        ends = np.concatenate((nl, [len(arr)]))
        n_fields = (
            np.bincount(np.searchsorted(nl, np.flatnonzero(arr == ord(sep))), minlength=len(starts)) + 1
        )
        return cls(starts, ends, n_fields)


def _read_separated(
    buf: bytes, file: str, sep: str, has_header: bool, names: list[str] | None, quote_char: str | None
) -> Table:
    if b"\r" in buf:
        buf = buf.replace(b"\r\n", b"\n")
    if quote_char is not None and quote_char.encode() in buf:
        return _read_quoted(buf, file, sep, has_header, names, quote_char)
    spans = _LineSpans.of(buf, sep)
    nonblank = np.flatnonzero(spans.ends > spans.starts)
    if len(nonblank) == 0:
        raise DataError("file is empty", file=file)
    if has_header:
        hdr = nonblank[0]
        header = buf[spans.starts[hdr] : spans.ends[hdr]].decode("utf-8").split(sep)
        data_lines = nonblank[1:]
    else:
        header = list(names or [])
        data_lines = nonblank
    _check_header(header, file)
    _check_field_counts(spans.n_fields, data_lines, len(header), file)
    if len(data_lines) == 0:
        df = pl.DataFrame({c: pl.Series(c, [], dtype=pl.Utf8) for c in header})
        return Table(df, np.zeros(0, dtype=np.int64), file)
    df = _parse_unquoted(buf, spans, data_lines, header, sep, has_header)
    if df.height != len(data_lines):  # pragma: no cover - guards against parser disagreement
        raise DataError(f"parsed {df.height} rows but the file has {len(data_lines)} data lines", file=file)
    return Table(df, data_lines.astype(np.int64) + 1, file)


def _check_field_counts(n_fields: np.ndarray, data_lines: np.ndarray, expected: int, file: str) -> None:
    """Every data line must have as many fields as the header; name the first that does not."""
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


def _parse_unquoted(
    buf: bytes, spans: _LineSpans, data_lines: np.ndarray, header: list[str], sep: str, has_header: bool
) -> pl.DataFrame:
    """String columns of the data lines (the field counts are already checked)."""
    blank = spans.ends == spans.starts
    blank[-1] = False  # the empty "line" after a final newline
    if has_header and not blank.any():
        return pl.read_csv(
            io.BytesIO(buf), separator=sep, has_header=True, infer_schema=False, quote_char=None
        )
    # blank lines are dropped here (polars would turn them into all-null rows)
    body = buf if not blank.any() else b"\n".join(buf[spans.starts[i] : spans.ends[i]] for i in data_lines)
    return pl.read_csv(
        io.BytesIO(body),
        separator=sep,
        has_header=False,
        new_columns=header,
        infer_schema=False,
        quote_char=None,
    )


def _check_header(header: list[str], file: str) -> None:
    seen: set[str] = set()
    for h in header:
        if h in seen:
            raise DataError(f"duplicate column name {h!r} in the header", file=file, line=1)
        seen.add(h)


def _read_quoted(
    buf: bytes, file: str, sep: str, has_header: bool, names: list[str] | None, quote_char: str
) -> Table:
    # the csv module's own limit (131,072 characters) would name a smaller limit than ours
    csv.field_size_limit(MAX_FIELD_BYTES)
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
            _check_record_length(rec, header, file, start)
            rows.append(rec)
            lines.append(start)
    except csv.Error as e:
        if "field larger than field limit" in str(e):
            raise DataError(
                f"a field is over the limit of {MAX_FIELD_BYTES:,} characters (1 MiB), starting on this "
                "line: no id or text is that long: a stray quote joining many lines?",
                file=file,
                line=prev_end + 1,
            ) from None
        raise DataError(f"malformed quoting: {e}", file=file, line=reader.line_num) from None
    if header is None:
        raise DataError("file is empty", file=file)
    cols = list(zip(*rows, strict=True)) if rows else [() for _ in header]
    df = pl.DataFrame({h: pl.Series(h, list(c), dtype=pl.Utf8) for h, c in zip(header, cols, strict=True)})
    return Table(df, np.asarray(lines, dtype=np.int64), file)


def _check_record_length(rec: list[str], header: list[str], file: str, line: int) -> None:
    if len(rec) != len(header):
        got = len(rec)
        raise DataError(
            f"line has {got} field{'s' if got != 1 else ''}, expected {len(header)} "
            f"({'truncated' if got < len(header) else 'malformed'} line?)",
            file=file,
            line=line,
        )
