"""Properties of the data layer that hold for every input (Hypothesis).

- Table round trip: any interaction table (string ids with unicode, commas, quotes, tabs, newlines;
  optional ratings and timestamps) written as CSV / TSV / JSONL / Parquet (and ``.csv.gz``) reads
  back through modalrec's readers as the same rows, in file order.
- A Dataset does not depend on the file format or on the order of the file's rows.
- Every split labels each interaction exactly once (train / valid / test partition the rows), and
  the Dataset's matrices partition the unique (user, item) pairs.
- k-core output: every kept user and item has at least k interactions, the result is a fixed
  point, and it is the largest such subset (nothing removed could have been kept).
"""

from __future__ import annotations

import gzip
import io
import random
import tempfile
from pathlib import Path

import numpy as np
import polars as pl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modalrec.data import (
    cold_start_split,
    global_temporal_split,
    kcore_mask,
    leave_one_out_split,
    load,
    natural_order,
    random_split,
    read_interactions,
    temporal_split,
)
from modalrec.data.dataset import Dataset

# ids: any printable text without surrounding whitespace (ids are stripped) and without "\r"
# (CRLF line ends are normalised, also inside quoted fields); commas, quotes, tabs, newlines and
# non-ASCII letters are all in.
ID_CHARS = st.one_of(
    st.characters(blacklist_categories=("Cs", "Cc")),
    st.sampled_from([",", '"', "'", "\t", "\n", ";", "é", "ß", "日", "🙂", "\\", "{", "["]),
)
IDS = st.text(ID_CHARS, min_size=1, max_size=8).filter(lambda s: s == s.strip() and s != "")

FORMATS = ("csv", "tsv", "jsonl", "parquet", "csv.gz")
SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def interaction_tables(draw: st.DrawFn, min_rows: int = 1, max_rows: int = 25) -> pl.DataFrame:
    """A table with ``user``, ``item`` and optionally ``rating`` (finite float) and ``timestamp`` (int)."""
    users = draw(st.lists(IDS, min_size=1, max_size=6, unique=True))
    items = draw(st.lists(IDS, min_size=1, max_size=8, unique=True))
    n = draw(st.integers(min_rows, max_rows))
    cols: dict[str, pl.Series] = {
        "user": pl.Series(
            "user", draw(st.lists(st.sampled_from(users), min_size=n, max_size=n)), dtype=pl.Utf8
        ),
        "item": pl.Series(
            "item", draw(st.lists(st.sampled_from(items), min_size=n, max_size=n)), dtype=pl.Utf8
        ),
    }
    if draw(st.booleans()):
        ratings = st.floats(allow_nan=False, allow_infinity=False, width=64)
        cols["rating"] = pl.Series(
            "rating", draw(st.lists(ratings, min_size=n, max_size=n)), dtype=pl.Float64
        )
    if draw(st.booleans()):
        times = st.integers(0, 2**40)
        cols["timestamp"] = pl.Series(
            "timestamp", draw(st.lists(times, min_size=n, max_size=n)), dtype=pl.Int64
        )
    return pl.DataFrame(cols)


def write(df: pl.DataFrame, folder: Path, fmt: str, stem: str = "r") -> Path:
    path = folder / f"{stem}.{fmt}"
    if fmt == "csv":
        df.write_csv(path)
    elif fmt == "tsv":
        df.write_csv(path, separator="\t")
    elif fmt == "jsonl":
        df.write_ndjson(path)
    elif fmt == "parquet":
        df.write_parquet(path)
    elif fmt == "csv.gz":
        buf = io.BytesIO()
        df.write_csv(buf)
        path.write_bytes(gzip.compress(buf.getvalue()))
    else:  # pragma: no cover
        raise AssertionError(fmt)
    return path


@SETTINGS
@given(interaction_tables(), st.sampled_from(FORMATS))
def test_tables_round_trip_through_every_format(df: pl.DataFrame, fmt: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        inter = read_interactions(write(df, Path(tmp), fmt))
    frame = inter.frame
    assert frame["user"].to_list() == df["user"].to_list()
    assert frame["item"].to_list() == df["item"].to_list()
    assert inter.has_rating == ("rating" in df.columns)
    assert inter.has_timestamp == ("timestamp" in df.columns)
    if inter.has_rating:
        assert frame["rating"].to_list() == df["rating"].to_list()
    if inter.has_timestamp:
        assert frame["timestamp"].to_list() == df["timestamp"].cast(pl.Float64).to_list()
    lines = frame["line"].to_numpy()
    assert len(lines) == df.height and (np.diff(lines) > 0).all()  # file order, one source line each
    if fmt == "parquet":
        assert inter.unit == "row" and lines.tolist() == list(range(1, df.height + 1))
    elif fmt == "jsonl":
        assert lines.tolist() == list(range(1, df.height + 1))  # one object per line, no header
    elif not any("\n" in v for v in df["user"].to_list() + df["item"].to_list()):
        assert lines.tolist() == list(range(2, df.height + 2))  # header is line 1


def dataset_key(ds: Dataset) -> tuple[object, ...]:
    mats = tuple((m.indptr.tolist(), m.indices.tolist()) for m in (ds.train, ds.valid, ds.test))
    return ds.user_ids.tolist(), ds.item_ids.tolist(), mats, ds.split_name


@SETTINGS
@given(interaction_tables(min_rows=2), st.sampled_from(FORMATS[1:]), st.integers(0, 2**31 - 1))
def test_dataset_does_not_depend_on_the_format(df: pl.DataFrame, fmt: str, seed: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        a = load(write(df, Path(tmp), "csv"), seed=seed, name="x")
        b = load(write(df, Path(tmp), fmt), seed=seed, name="x")
    assert dataset_key(a) == dataset_key(b)
    assert a.report.stats["dataset"] == b.report.stats["dataset"]


@SETTINGS
@given(
    interaction_tables(min_rows=2),
    st.randoms(use_true_random=False),
    st.sampled_from(["random", "leave_one_out"]),
)
def test_dataset_does_not_depend_on_the_row_order(df: pl.DataFrame, rnd: random.Random, split: str) -> None:
    df = df.drop("timestamp", strict=False)  # with timestamps, ties between duplicates follow the file
    perm = list(range(df.height))
    rnd.shuffle(perm)
    with tempfile.TemporaryDirectory() as tmp:
        a = load(write(df, Path(tmp), "csv", "a"), split=split, seed=3, name="x")
        b = load(write(df[perm], Path(tmp), "csv", "b"), split=split, seed=3, name="x")
    assert dataset_key(a) == dataset_key(b)


@SETTINGS
@given(
    interaction_tables(min_rows=1),
    st.sampled_from(["random", "leave_one_out", "cold_start"]),
    st.integers(0, 2**31 - 1),
)
def test_dataset_matrices_partition_the_unique_pairs(df: pl.DataFrame, split: str, seed: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        ds = load(write(df, Path(tmp), "parquet"), split=split, seed=seed)
    pairs = set(zip(df["user"].to_list(), df["item"].to_list(), strict=True))
    parts = []
    for m in (ds.train, ds.valid, ds.test):
        coo = m.tocoo()
        parts.append({(ds.user_ids[u], ds.item_ids[i]) for u, i in zip(coo.row, coo.col, strict=True)})
    assert sum(len(p) for p in parts) == len(pairs)  # disjoint
    assert set().union(*parts) == pairs  # and complete
    assert ds.report.stats["dataset"]["interactions"] == len(pairs)
    assert ds.report.stats[str(Path(tmp) / "r.parquet")]["rows_read"] == df.height
    if split != "cold_start":  # every user keeps a training interaction
        assert (np.diff(ds.train.indptr) >= 1).all()


split_inputs = st.integers(1, 200).flatmap(
    lambda n: st.tuples(
        st.lists(st.integers(0, 15), min_size=n, max_size=n),
        st.lists(st.integers(0, 1000), min_size=n, max_size=n),
        st.integers(0, 2**31 - 1),
    )
)


@settings(max_examples=60, deadline=None)
@given(split_inputs)
def test_every_split_labels_each_interaction_once(data: tuple[list[int], list[int], int]) -> None:
    users, times, seed = np.asarray(data[0]), np.asarray(data[1], dtype=np.float64), data[2]
    items = np.arange(len(users)) % 7
    base = random_split(users, seed=seed)
    cold_labels, cold = cold_start_split(items, base, cold_share=0.3, seed=seed)
    for labels in (
        base,
        temporal_split(users, times),
        global_temporal_split(times),
        leave_one_out_split(users, times),
        leave_one_out_split(users, seed=seed),
        cold_labels,
    ):
        assert labels.shape == users.shape and labels.dtype == np.int8
        assert set(np.unique(labels).tolist()) <= {0, 1, 2}
    # cold items never train; everything else keeps its base label
    assert not (cold_labels[np.isin(items, cold)] == 0).any()
    np.testing.assert_array_equal(cold_labels[~np.isin(items, cold)], base[~np.isin(items, cold)])


unique_pairs = st.lists(st.tuples(st.integers(0, 12), st.integers(0, 12)), max_size=120, unique=True)


@settings(max_examples=80, deadline=None)
@given(unique_pairs, st.integers(1, 5), st.integers(1, 5), st.randoms(use_true_random=False))
def test_kcore_output_has_every_user_and_item_at_k(
    pairs: list[tuple[int, int]], ku: int, ki: int, rnd: random.Random
) -> None:
    u = np.asarray([p[0] for p in pairs], dtype=np.int64)
    i = np.asarray([p[1] for p in pairs], dtype=np.int64)
    res = kcore_mask(u, i, ku, ki)
    uk, ik = u[res.mask], i[res.mask]
    if len(uk):
        assert np.bincount(uk)[np.unique(uk)].min() >= ku
        assert np.bincount(ik)[np.unique(ik)].min() >= ki
    assert res.removed_rows == len(u) - len(uk)
    assert kcore_mask(uk, ik, ku, ki).removed_rows == 0  # a fixed point
    # the largest such subset: the k-core of any subset of the rows lies inside the k-core of all
    # rows (so any subset where every user and item reaches k is kept)
    sub = np.asarray([rnd.random() < 0.7 for _ in range(len(u))], dtype=bool)
    sub_core = np.zeros(len(u), dtype=bool)
    sub_core[np.flatnonzero(sub)[kcore_mask(u[sub], i[sub], ku, ki).mask]] = True
    assert not (sub_core & ~res.mask).any()


def test_natural_order_with_digit_like_characters() -> None:
    """Superscripts and other non-decimal "digits" sort as text (they used to raise ValueError)."""
    ids = ["x²", "x10", "x2", "²", "٣", "1"]
    assert [ids[k] for k in natural_order(ids)] == ["1", "٣", "x2", "x10", "x²", "²"]


@SETTINGS
@given(st.lists(IDS, min_size=1, max_size=20, unique=True))
def test_natural_order_is_a_permutation(ids: list[str]) -> None:
    order = natural_order(ids)
    assert sorted(order.tolist()) == list(range(len(ids)))
    ordered = [ids[k] for k in order]
    assert [ordered[k] for k in natural_order(ordered)] == ordered  # sorting again changes nothing
