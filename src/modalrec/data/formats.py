"""File formats and raw bytes: which format a file is in, and its text as checked UTF-8.

Why separate from the readers: every reader starts from the same two questions (what format,
which bytes), and both must fail with a :class:`DataError` naming the file (and, for bad
encodings, the 1-based line) before any parsing starts.

Policies:

- Format: from the suffix (``.gz`` looked through: ``r.tsv.gz`` is TSV); for other names it is
  sniffed from the first line (``{`` JSON lines, ``PAR1`` Parquet, a tab TSV, a comma CSV).
- Encoding: strict UTF-8 by default (a UTF-8 BOM is accepted). Bytes that are not UTF-8 raise
  ``DataError`` naming the line and suggesting ``encoding="latin-1"``. Any Python codec name can
  be passed as ``encoding=``.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

from modalrec.core.errors import DataError

FORMATS = ("csv", "tsv", "jsonl", "parquet")
SUFFIX_FORMATS = {
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
SEPARATORS = {"csv": ",", "tsv": "\t"}


def detect_format(path: str | Path) -> str:
    """File format from the suffix (``.gz`` looked through); sniffed from the first line otherwise.

    >>> detect_format("ratings.tsv.gz"), detect_format("u.inter"), detect_format("x.ndjson")
    ('tsv', 'tsv', 'jsonl')
    """
    p = Path(path)
    suffixes = [s.lower() for s in p.suffixes]
    if suffixes and suffixes[-1] == ".gz":
        suffixes = suffixes[:-1]
    if suffixes and suffixes[-1] in SUFFIX_FORMATS:
        return SUFFIX_FORMATS[suffixes[-1]]
    return sniff_format(read_bytes(p), p)


def sniff_format(raw: bytes, path: str | Path) -> str:
    """Format from the first line of the (decompressed) content; ``path`` names the file in errors."""
    head = raw[:4096].lstrip()
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
        file=path,
    )


def read_bytes(path: Path) -> bytes:
    """The file's bytes, gunzipped when the name ends in ``.gz``."""
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


def to_utf8(raw: bytes, encoding: str, file: str) -> bytes:
    """Validate/convert to UTF-8 bytes; undecodable bytes raise DataError with the line number.

    >>> to_utf8("é".encode("latin-1"), "latin-1", "x.csv").decode()
    'é'
    """
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
