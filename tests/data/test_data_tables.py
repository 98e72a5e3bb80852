"""Readers: every format, and every kind of broken file, on tiny files written in tmp_path."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from modalrec.core.errors import ConfigError, DataError
from modalrec.data import ColumnMap, load, read_interactions, read_items, read_table

ROWS = [("u1", "i1", 4, 100), ("u1", "i2", 5, 200), ("u2", "i1", 3, 150)]


def write_csv(path: Path, sep: str = ",", header: str = "user_id,item_id,rating,timestamp") -> Path:
    lines = [header.replace(",", sep)] + [sep.join(str(v) for v in r) for r in ROWS]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def check_rows(frame: pl.DataFrame) -> None:
    assert frame["user"].to_list() == ["u1", "u1", "u2"]
    assert frame["item"].to_list() == ["i1", "i2", "i1"]
    assert frame["rating"].to_list() == [4.0, 5.0, 3.0]
    assert frame["timestamp"].to_list() == [100.0, 200.0, 150.0]


def test_csv(tmp_path: Path) -> None:
    inter = read_interactions(write_csv(tmp_path / "r.csv"))
    check_rows(inter.frame)
    assert inter.frame["line"].to_list() == [2, 3, 4]


def test_tsv_and_gzip(tmp_path: Path) -> None:
    p = write_csv(tmp_path / "r.tsv", sep="\t")
    check_rows(read_interactions(p).frame)
    gz = tmp_path / "r.tsv.gz"
    gz.write_bytes(gzip.compress(p.read_bytes()))
    check_rows(read_interactions(gz).frame)
    csvgz = tmp_path / "r.csv.gz"
    csvgz.write_bytes(gzip.compress(write_csv(tmp_path / "x.csv").read_bytes()))
    check_rows(read_interactions(csvgz).frame)


def test_jsonl(tmp_path: Path) -> None:
    p = tmp_path / "r.jsonl"
    p.write_text(
        "\n".join(
            json.dumps({"user_id": u, "item_id": i, "rating": r, "timestamp": t}) for u, i, r, t in ROWS
        )
        + "\n\n",
        encoding="utf-8",
    )
    check_rows(read_interactions(p).frame)
    gz = tmp_path / "r.jsonl.gz"
    gz.write_bytes(gzip.compress(p.read_bytes()))
    check_rows(read_interactions(gz).frame)


def test_jsonl_numeric_ids_become_strings(tmp_path: Path) -> None:
    p = tmp_path / "r.jsonl"
    p.write_text('{"user": 1, "item": 20}\n{"user": 2, "item": 3}\n')
    f = read_interactions(p).frame
    assert f["user"].to_list() == ["1", "2"] and f["item"].to_list() == ["20", "3"]


def test_parquet(tmp_path: Path) -> None:
    p = tmp_path / "r.parquet"
    pl.DataFrame(
        {
            "user_id": [r[0] for r in ROWS],
            "item_id": [r[1] for r in ROWS],
            "rating": [r[2] for r in ROWS],
            "timestamp": [r[3] for r in ROWS],
        }
    ).write_parquet(p)
    inter = read_interactions(p)
    check_rows(inter.frame)
    assert inter.unit == "row"


def test_parquet_errors_name_the_row(tmp_path: Path) -> None:
    p = tmp_path / "r.parquet"
    pl.DataFrame({"user_id": ["a", "b"], "item_id": ["x", None]}).write_parquet(p)
    with pytest.raises(DataError, match=r"r\.parquet.*row 2: empty item id"):
        read_interactions(p)


def test_headerless_with_names_and_custom_separator(tmp_path: Path) -> None:
    p = tmp_path / "u.data"
    p.write_text("1|10|5|881250949\n2|10|3|891717742\n")
    inter = read_interactions(
        p,
        ColumnMap(user="u", item="i", rating="r", timestamp="t"),
        format="csv",
        separator="|",
        has_header=False,
        names=["u", "i", "r", "t"],
    )
    assert inter.frame["item"].to_list() == ["10", "10"]
    assert inter.frame["line"].to_list() == [1, 2]


def test_crlf_and_bom(tmp_path: Path) -> None:
    p = tmp_path / "r.csv"
    p.write_bytes(b"\xef\xbb\xbfuser,item\r\nu1,i1\r\nu2,i2\r\n")
    f = read_interactions(p).frame
    assert f["user"].to_list() == ["u1", "u2"] and f["item"].to_list() == ["i1", "i2"]


def test_blank_lines_are_skipped_and_lines_kept(tmp_path: Path) -> None:
    p = tmp_path / "r.csv"
    p.write_text("user,item\n\nu1,i1\n\n\nu2,i2\n")
    inter = read_interactions(p)
    assert inter.frame["line"].to_list() == [3, 6]


def test_truncated_line_names_file_and_line(tmp_path: Path) -> None:
    p = tmp_path / "r.csv"
    p.write_text("user,item,rating\nu1,i1,4\nu2,i2,5\nu3,i3\n")
    with pytest.raises(DataError) as e:
        read_interactions(p)
    assert e.value.line == 4 and e.value.file == str(p)
    assert "2 fields, expected 3" in str(e.value)


def test_extra_field_is_an_error(tmp_path: Path) -> None:
    p = tmp_path / "r.tsv"
    p.write_text("user\titem\nu1\ti1\textra\n")
    with pytest.raises(DataError, match=r"r\.tsv:2: line has 3 fields, expected 2"):
        read_interactions(p)


def test_truncated_line_in_quoted_csv(tmp_path: Path) -> None:
    p = tmp_path / "items.csv"
    p.write_text('item_id,title,overview\n1,"A, b","multi\nline"\n2,"C"\n')
    with pytest.raises(DataError) as e:
        read_items(p)
    assert e.value.line == 4


def test_quoted_csv_multiline_fields_keep_line_numbers(tmp_path: Path) -> None:
    p = tmp_path / "items.csv"
    p.write_text('item_id,title,overview\n1,"A, b","multi\nline"\n\n2,"C ""quoted""",x\n')
    t = read_table(p)
    assert t.df["title"].to_list() == ["A, b", 'C "quoted"']
    assert t.df["overview"][0] == "multi\nline"
    assert t.lines.tolist() == [2, 5]


def test_unterminated_quote(tmp_path: Path) -> None:
    p = tmp_path / "items.csv"
    p.write_text('item_id,title\n1,"open\n2,x\n')
    with pytest.raises(DataError, match=r"items\.csv"):
        read_items(p)


def test_latin1_read_as_utf8_names_file_and_line(tmp_path: Path) -> None:
    p = tmp_path / "u.item"
    p.write_bytes("item_id|title\n1|Toy Story\n2|Les Misérables\n".encode("latin-1"))
    with pytest.raises(DataError) as e:
        read_items(p, format="csv", separator="|")
    assert e.value.file == str(p) and e.value.line == 3
    assert 'encoding="latin-1"' in str(e.value)
    cat = read_items(p, format="csv", separator="|", encoding="latin-1")
    assert cat.frame["title"].to_list() == ["Toy Story", "Les Misérables"]


def test_latin1_in_gzip_and_jsonl(tmp_path: Path) -> None:
    gz = tmp_path / "r.csv.gz"
    gz.write_bytes(gzip.compress("user,item\nu1,i1\nu2,caf\xe9\n".encode("latin-1")))
    with pytest.raises(DataError) as e:
        read_interactions(gz)
    assert e.value.line == 3
    p = tmp_path / "r.jsonl"
    p.write_bytes('{"user": "a", "item": "b"}\n{"user": "\xe9", "item": "b"}\n'.encode("latin-1"))
    with pytest.raises(DataError) as e:
        read_interactions(p)
    assert e.value.line == 2


def test_non_numeric_rating_names_file_line_field(tmp_path: Path) -> None:
    p = tmp_path / "r.csv"
    p.write_text("user,item,rating\nu1,i1,4\nu2,i2,five\n")
    with pytest.raises(DataError) as e:
        read_interactions(p)
    assert (e.value.file, e.value.line, e.value.field) == (str(p), 3, "rating")
    assert "'five'" in str(e.value)


def test_empty_rating_and_nan_rating(tmp_path: Path) -> None:
    p = tmp_path / "r.csv"
    p.write_text("user,item,rating\nu1,i1,\n")
    with pytest.raises(DataError, match="rating is empty"):
        read_interactions(p)
    p.write_text("user,item,rating\nu1,i1,nan\n")
    with pytest.raises(DataError, match="not a number"):
        read_interactions(p)


def test_non_numeric_timestamp(tmp_path: Path) -> None:
    p = tmp_path / "r.tsv"
    p.write_text("user\titem\ttimestamp\nu1\ti1\t100\nu1\ti2\tyesterday\n")
    with pytest.raises(DataError) as e:
        read_interactions(p)
    assert (e.value.line, e.value.field) == (3, "timestamp")


def test_iso_timestamps(tmp_path: Path) -> None:
    p = tmp_path / "r.csv"
    p.write_text("user,item,time\nu1,i1,2020-01-01T00:00:00\nu1,i2,2020-01-02T00:00:00\n")
    ts = read_interactions(p).frame["timestamp"].to_list()
    assert ts == [1577836800.0, 1577923200.0]


def test_empty_user_id(tmp_path: Path) -> None:
    p = tmp_path / "r.csv"
    p.write_text("user,item\nu1,i1\n ,i2\n")
    with pytest.raises(DataError) as e:
        read_interactions(p)
    assert (e.value.line, e.value.field) == (3, "user")


def test_bad_split_label(tmp_path: Path) -> None:
    p = tmp_path / "r.tsv"
    p.write_text("userID\titemID\tx_label\n0\t1\t0\n0\t2\t7\n")
    with pytest.raises(DataError) as e:
        read_interactions(p)
    assert (e.value.line, e.value.field) == (3, "x_label")


def test_column_map_errors(tmp_path: Path) -> None:
    p = tmp_path / "r.csv"
    p.write_text("who,what\nu1,i1\n")
    with pytest.raises(DataError, match="no user column found"):
        read_interactions(p)
    f = read_interactions(p, ColumnMap(user="who", item="what")).frame
    assert f["item"].to_list() == ["i1"]
    with pytest.raises(DataError, match="rating column 'stars' not found"):
        read_interactions(p, ColumnMap(user="who", item="what", rating="stars"))
    with pytest.raises(ConfigError, match="unknown column-map keys"):
        ColumnMap.from_dict({"usr": "who"})


def test_duplicate_header_and_empty_file(tmp_path: Path) -> None:
    p = tmp_path / "r.csv"
    p.write_text("user,item,user\n1,2,3\n")
    with pytest.raises(DataError, match="duplicate column name"):
        read_table(p)
    p.write_text("")
    with pytest.raises(DataError, match="empty"):
        read_table(p)


def test_missing_file_and_corrupt_gzip(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="file not found"):
        read_table(tmp_path / "nope.csv")
    gz = tmp_path / "r.csv.gz"
    gz.write_bytes(gzip.compress(b"user,item\n" + b"u,i\n" * 1000)[:50])
    with pytest.raises(DataError, match="gzip"):
        read_table(gz)


def test_unknown_format(tmp_path: Path) -> None:
    p = tmp_path / "r.weird"
    p.write_text("just words\n")
    with pytest.raises(DataError, match="cannot tell the file format"):
        read_table(p)


def test_items_media_paths_made_absolute(tmp_path: Path) -> None:
    (tmp_path / "img").mkdir()
    p = tmp_path / "items.csv"
    p.write_text("item_id,title,description,image_path\n1,A,desc,img/1.jpg\n2,B,,\n")
    cat = read_items(p)
    assert cat.text_fields == ["title", "description"]
    assert cat.media_columns == {"image": "image_path"}
    assert cat.frame["image_path"].to_list() == [str((tmp_path / "img" / "1.jpg").absolute()), None]
    assert cat.frame.columns[0] == "item_id"


def test_items_explicit_columns(tmp_path: Path) -> None:
    p = tmp_path / "items.tsv"
    p.write_text("sku\tname\tclip\tsound\n7\tX\ta.mp4\tb.wav\n")
    cat = read_items(p, ColumnMap(item_id="sku", text=("name",), video="clip", audio="sound", auto=False))
    assert cat.media_columns == {"audio": "sound", "video": "clip"}
    assert cat.frame["item_id"].to_list() == ["7"]


def test_load_reads_every_format_the_same(tmp_path: Path) -> None:
    write_csv(tmp_path / "r.csv")
    write_csv(tmp_path / "r.tsv", sep="\t")
    pl.read_csv(tmp_path / "r.csv").write_parquet(tmp_path / "r.parquet")
    pl.read_csv(tmp_path / "r.csv").write_ndjson(tmp_path / "r.jsonl")
    mats = []
    for name in ("r.csv", "r.tsv", "r.parquet", "r.jsonl"):
        ds = load(tmp_path / name, split="temporal")
        assert ds.user_ids.tolist() == ["u1", "u2"] and ds.item_ids.tolist() == ["i1", "i2"]
        mats.append((ds.train + ds.valid * 2 + ds.test * 3).toarray())
    for m in mats[1:]:
        np.testing.assert_array_equal(m, mats[0])


def test_multichar_separator(tmp_path: Path) -> None:
    p = tmp_path / "ratings.dat"
    p.write_text("1::1193::5::978300760\n1::661::3::978302109\n")
    names = ["user", "item", "rating", "timestamp"]
    f = read_interactions(p, format="csv", separator="::", has_header=False, names=names).frame
    assert f["item"].to_list() == ["1193", "661"] and f["rating"].to_list() == [5.0, 3.0]


def test_json_array(tmp_path: Path) -> None:
    p = tmp_path / "r.json"
    p.write_text(json.dumps([{"user": "a", "item": "x"}, {"user": "b", "item": None}], indent=1))
    with pytest.raises(DataError, match=r"row 2: empty item id"):
        read_interactions(p)
    p.write_text(json.dumps([{"user": "a", "item": "x"}, {"user": "b", "item": "y"}], indent=1))
    assert read_interactions(p).frame["item"].to_list() == ["x", "y"]


def test_jsonl_bad_line(tmp_path: Path) -> None:
    p = tmp_path / "r.jsonl"
    p.write_text('{"user": "a", "item": "x"}\n{"user": "b", "item": \n{"user": "c", "item": "z"}\n')
    with pytest.raises(DataError) as e:
        read_interactions(p)
    assert e.value.line == 2 and "truncated" in str(e.value)


def test_non_ascii_single_char_separator(tmp_path: Path) -> None:
    p = tmp_path / "r.txt"
    p.write_text("user¦item\nü¦ä\n", encoding="utf-8")
    f = read_interactions(p, format="csv", separator="¦").frame
    assert f["user"].to_list() == ["ü"] and f["item"].to_list() == ["ä"]


def test_auto_detects_common_layouts(tmp_path: Path) -> None:
    ml = tmp_path / "ratings.csv"
    ml.write_text("userId,movieId,rating,timestamp\n1,31,2.5,1260759144\n1,1029,3.0,1260759179\n")
    cm = read_interactions(ml).columns
    assert (cm.user, cm.item, cm.rating, cm.timestamp) == ("userId", "movieId", "rating", "timestamp")
    amazon = tmp_path / "reviews.jsonl"
    amazon.write_text(
        '{"reviewerID": "A1", "asin": "B001", "overall": 5.0, "unixReviewTime": 1383350400}\n'
        '{"reviewerID": "A2", "asin": "B002", "overall": 4.0, "unixReviewTime": 1383350401}\n'
    )
    inter = read_interactions(amazon)
    cm = inter.columns
    assert (cm.user, cm.item, cm.rating, cm.timestamp) == ("reviewerID", "asin", "overall", "unixReviewTime")
    assert inter.frame["rating"].to_list() == [5.0, 4.0]
