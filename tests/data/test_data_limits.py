"""Files that hold no data rows, and fields no real id or text can have, are refused with file and line."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from modalrec.core.errors import DataError
from modalrec.data import load
from modalrec.data.readers import MAX_FIELD_BYTES


@pytest.mark.parametrize(
    ("name", "body"),
    [
        ("r.csv", "user,item\n"),
        ("r.tsv", "user\titem\n\n\n"),
        ("r.csv.quoted", 'user,"item"\n'),
        ("r.json", "[]"),
    ],
)
def test_header_without_rows_is_an_error_naming_the_file(tmp_path: Path, name: str, body: str) -> None:
    p = tmp_path / name
    p.write_text(body)
    fmt = "csv" if name.endswith(".quoted") else None
    with pytest.raises(DataError, match=r"no (data )?rows") as e:
        load(p, format=fmt) if fmt else load(p)
    assert str(p) in str(e.value)


def test_parquet_without_rows(tmp_path: Path) -> None:
    p = tmp_path / "r.parquet"
    pl.DataFrame({"user": pl.Series([], dtype=pl.Utf8), "item": pl.Series([], dtype=pl.Utf8)}).write_parquet(
        p
    )
    with pytest.raises(DataError, match="has no rows") as e:
        load(p)
    assert str(p) in str(e.value)


@pytest.mark.parametrize("quoted", [False, True])
def test_two_megabyte_id_is_refused_with_file_and_line(tmp_path: Path, quoted: bool) -> None:
    p = tmp_path / "r.csv"
    q = '"' if quoted else ""
    p.write_text(f"user,item\nu1,{q}i1{q}\n" + "u" * 2_000_000 + ",i2\nu3,i3\n")
    with pytest.raises(DataError, match="1 MiB") as e:
        load(p)
    assert f"{p}:3" in str(e.value)


def test_field_at_the_limit_is_read(tmp_path: Path) -> None:
    p = tmp_path / "r.csv"
    long_id = "u" * MAX_FIELD_BYTES
    p.write_text(f"user,item\n{long_id},i1\nu2,i1\nu2,i2\n")
    ds = load(p, split="random")
    assert long_id in ds.user_ids.tolist()
