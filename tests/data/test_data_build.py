"""Dataset assembly: reports for dropped rows, strict mode, ids, features, MMRec folders, TOML."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from modalrec.core.errors import ConfigError, DataError
from modalrec.data import load, natural_order, validate


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def grid(n_users: int = 6, n_items: int = 12, per_user: int = 10, seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    lines = ["user,item,rating,timestamp"]
    for u in range(n_users):
        for k, i in enumerate(rng.choice(n_items, per_user, replace=False)):
            lines.append(f"u{u},m{i},{1 + (u + i) % 5},{1000 + 10 * k + u}")
    return "\n".join(lines) + "\n"


def test_unknown_items_are_reported_with_examples(tmp_path: Path) -> None:
    write(tmp_path / "items.csv", "item_id,title\na,A\nb,B\nc,C\n")
    write(tmp_path / "r.csv", "user,item\n1,a\n1,b\n2,zz\n2,a\n3,zz\n")
    ds = load(tmp_path / "r.csv", items=tmp_path / "items.csv")
    issue = ds.report.issues[("unknown item (not in the catalogue)", str(tmp_path / "r.csv"))]
    assert (issue.count, issue.dropped, issue.severity) == (2, 2, "warning")
    assert issue.examples == [f"{tmp_path / 'r.csv'}:4 item zz", f"{tmp_path / 'r.csv'}:6 item zz"]
    # user 3 only had the unknown item
    lost = [i for i in ds.report.issues.values() if i.kind.startswith("user with no interactions")]
    assert lost and lost[0].count == 1 and lost[0].examples == ["3"]
    assert ds.user_ids.tolist() == ["1", "2"]
    # c has no interactions: kept as a cold item, info only
    assert ds.item_ids.tolist() == ["a", "b", "c"]
    cold = [i for i in ds.report.issues.values() if i.kind.startswith("item with no interactions")]
    assert cold[0].severity == "info" and cold[0].examples == ["c"]
    assert ds.report.dropped_rows == 2 and not ds.report.ok
    assert ds.report.stats[str(tmp_path / "r.csv")] == {"rows_read": 5, "rows_kept": 3}


def test_unknown_items_strict_mode_raises(tmp_path: Path) -> None:
    write(tmp_path / "items.csv", "item_id,title\na,A\n")
    write(tmp_path / "r.csv", "user,item\n1,a\n2,zz\n")
    with pytest.raises(DataError) as e:
        load(tmp_path / "r.csv", items=tmp_path / "items.csv", strict=True)
    assert e.value.line == 3 and e.value.field == "item" and "'zz'" in str(e.value)


def test_duplicates_are_collapsed_and_counted(tmp_path: Path) -> None:
    write(tmp_path / "r.csv", "user,item,timestamp\n1,a,5\n1,a,5\n1,b,7\n1,b,3\n2,a,1\n")
    ds = load(tmp_path / "r.csv", split="leave_one_out")
    kinds = {i.kind: i for i in ds.report.issues.values()}
    assert kinds["duplicate interaction (collapsed)"].count == 1
    assert kinds["duplicate interaction (collapsed)"].severity == "warning"
    rep = kinds["repeated interaction at another time (collapsed, earliest kept)"]
    assert rep.count == 1 and rep.severity == "info"
    assert ds.train.nnz + ds.valid.nnz + ds.test.nnz == 3
    # earliest time kept: user 1 saw b at t=3 before a at t=5, so a is the last (test) item
    assert ds.test[ds.user_index("1"), ds.item_index("a")] == 1.0


def test_duplicate_with_conflicting_fixed_labels(tmp_path: Path) -> None:
    write(tmp_path / "d.inter", "userID\titemID\tx_label\n0\t0\t2\n0\t0\t0\n0\t1\t0\n1\t1\t1\n")
    ds = load(tmp_path)
    kinds = {i.kind: i.count for i in ds.report.issues.values()}
    assert kinds["duplicate interaction in different splits (smallest split label kept)"] == 1
    assert ds.train[0, 0] == 1.0 and ds.test.nnz == 0


def test_duplicate_catalogue_ids(tmp_path: Path) -> None:
    write(tmp_path / "items.csv", "item_id,title\na,first\nb,B\na,second\n")
    write(tmp_path / "r.csv", "user,item\n1,a\n1,b\n")
    ds = load(tmp_path / "r.csv", items=tmp_path / "items.csv")
    issue = next(i for i in ds.report.issues.values() if i.kind.startswith("duplicate item id"))
    assert issue.count == 1 and issue.examples == [f"{tmp_path / 'items.csv'}:4 item a"]
    assert ds.items is not None and ds.items["title"].to_list() == ["first", "B"]


def test_natural_id_order() -> None:
    ids = ["10", "2", "1", "100"]
    assert [ids[k] for k in natural_order(ids)] == ["1", "2", "10", "100"]
    ids = ["u10", "u9", "u10b", "a"]
    assert [ids[k] for k in natural_order(ids)] == ["a", "u9", "u10", "u10b"]


def test_ids_and_item_table_follow_natural_order(tmp_path: Path) -> None:
    write(tmp_path / "items.csv", "item_id,title\n10,ten\n9,nine\n100,hundred\n")
    write(tmp_path / "r.csv", "user,item\n20,10\n3,9\n3,100\n")
    ds = load(tmp_path / "r.csv", items=tmp_path / "items.csv")
    assert ds.user_ids.tolist() == ["3", "20"]
    assert ds.item_ids.tolist() == ["9", "10", "100"]
    assert ds.items is not None and ds.items["title"].to_list() == ["nine", "ten", "hundred"]
    assert ds.text_fields == ["title"] and ds.item_texts() == ["nine", "ten", "hundred"]


def test_min_rating_and_kcore_report(tmp_path: Path) -> None:
    write(tmp_path / "r.csv", grid())
    base = load(tmp_path / "r.csv")
    assert base.report.ok
    ds = load(tmp_path / "r.csv", min_rating=3, kcore=3)
    kinds = {i.kind: i for i in ds.report.issues.values()}
    low = kinds["rating below min_rating=3"]
    assert low.severity == "info" and low.dropped > 0
    core = next(i for k, i in kinds.items() if k.startswith("removed by 3/3-core"))
    assert low.dropped + core.dropped == 60 - ds.report.stats["dataset"]["interactions"]
    assert ds.report.ok  # filters the user asked for are info, not warnings
    m = (ds.train + ds.valid + ds.test).tocsr()
    assert (np.diff(m.indptr) >= 3).all() and (np.asarray(m.sum(0)).ravel() >= 3).all()


def test_min_rating_without_rating_column(tmp_path: Path) -> None:
    write(tmp_path / "r.csv", "user,item\n1,a\n")
    with pytest.raises(ConfigError, match="rating column"):
        load(tmp_path / "r.csv", min_rating=4)


def test_unknown_option_and_bad_split(tmp_path: Path) -> None:
    write(tmp_path / "r.csv", grid())
    with pytest.raises(ConfigError, match="splt"):
        load(tmp_path / "r.csv", splt="random")
    with pytest.raises(ConfigError, match="unknown split"):
        load(tmp_path / "r.csv", split="sideways")
    with pytest.raises(ConfigError, match="ratios"):
        load(tmp_path / "r.csv", ratios=(0.5, 0.5, 0.5))
    write(tmp_path / "n.csv", "user,item\n1,a\n")
    with pytest.raises(ConfigError, match="timestamps"):
        load(tmp_path / "n.csv", split="temporal")
    with pytest.raises(ConfigError, match="label column"):
        load(tmp_path / "n.csv", split="fixed")


def test_split_does_not_depend_on_file_order(tmp_path: Path) -> None:
    text = grid(n_users=8, per_user=10)
    head, *rows = text.strip().split("\n")
    write(tmp_path / "a.csv", text)
    write(tmp_path / "b.csv", "\n".join([head, *reversed(rows)]) + "\n")
    a, b = load(tmp_path / "a.csv", seed=5), load(tmp_path / "b.csv", seed=5)
    for part in ("train", "valid", "test"):
        assert (getattr(a, part) != getattr(b, part)).nnz == 0
    c = load(tmp_path / "a.csv", seed=6)
    assert (a.test != c.test).nnz > 0


def write_mmrec(folder: Path, n_users: int = 5, n_items: int = 8, feat_rows: int | None = None) -> Path:
    folder.mkdir(exist_ok=True)
    lines = ["userID\titemID\tx_label"]
    for u in range(n_users):
        for k in range(4):
            lines.append(f"{u}\t{(u + 2 * k) % n_items}\t{0 if k < 2 else k - 1}")
    write(folder / "toy.inter", "\n".join(lines) + "\n")
    rng = np.random.default_rng(0)
    np.save(folder / "image_feat.npy", rng.normal(size=(feat_rows or n_items, 4)).astype(np.float16))
    np.save(folder / "text_feat.npy", rng.normal(size=(feat_rows or n_items, 3)).astype(np.float64))
    return folder


def test_mmrec_folder(tmp_path: Path) -> None:
    ds = load(write_mmrec(tmp_path / "toy"))
    assert ds.name == "toy" and ds.split_name == "fixed (x_label)"
    assert (ds.n_users, ds.n_items) == (5, 8)
    assert (ds.train.nnz, ds.valid.nnz, ds.test.nnz) == (10, 5, 5)
    assert set(ds.features) == {"image", "text"}
    assert ds.features["image"].dtype == np.float32 and ds.features["image"].shape == (8, 4)
    raw = np.load(tmp_path / "toy" / "image_feat.npy")
    np.testing.assert_array_equal(ds.features["image"], raw.astype(np.float32))
    assert all(m.all() for m in ds.feature_masks.values())
    assert ds.report.ok
    assert ds.report.stats[str(tmp_path / "toy" / "image_feat.npy")]["dtype"] == "float16"


def test_mmrec_items_without_interactions_are_kept(tmp_path: Path) -> None:
    folder = write_mmrec(tmp_path / "toy", n_items=8)
    # item 3 never occurs: the items are still 0..max(itemID), 3 is a cold item with its feature row
    lines = [ln for ln in (folder / "toy.inter").read_text().splitlines() if ln.split("\t")[1] != "3"]
    write(folder / "toy.inter", "\n".join(lines) + "\n")
    ds = load(folder)
    assert ds.n_items == 8 and ds.item_ids[3] == "3"
    assert ds.train[:, 3].nnz == 0
    issue = next(i for i in ds.report.issues.values() if i.kind.startswith("item with no interactions"))
    assert issue.severity == "info" and issue.examples == ["3"]
    assert ds.report.ok


def test_feature_file_with_wrong_row_count(tmp_path: Path) -> None:
    folder = write_mmrec(tmp_path / "toy")
    np.save(folder / "text_feat.npy", np.zeros((9, 3), dtype=np.float32))
    with pytest.raises(DataError) as e:
        load(folder)
    assert (
        e.value.file == str(folder / "text_feat.npy")
        and "9 rows" in str(e.value)
        and "8 items" in str(e.value)
    )


def test_feature_nan_rows_are_marked_missing(tmp_path: Path) -> None:
    folder = write_mmrec(tmp_path / "toy")
    arr = np.load(folder / "image_feat.npy")
    arr[[2, 5]] = np.nan
    arr[6, 1] = np.inf
    np.save(folder / "image_feat.npy", arr)
    ds = load(folder)
    assert ds.feature_masks["image"].tolist() == [True, True, False, True, True, False, False, True]
    assert np.isfinite(ds.features["image"]).all() and not ds.features["image"][[2, 5, 6]].any()
    issue = next(i for i in ds.report.issues.values() if "NaN/inf" in i.kind)
    assert issue.count == 3 and issue.severity == "warning" and issue.examples[0] == "row 2 (item 2)"
    assert ds.report.dropped_rows == 0


def test_feature_file_with_pickle_is_refused(tmp_path: Path) -> None:
    folder = write_mmrec(tmp_path / "toy")
    np.save(folder / "image_feat.npy", np.array([{"a": 1}] * 8, dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match="pickle"):
        load(folder)


def test_features_for_custom_files_follow_catalogue_rows(tmp_path: Path) -> None:
    write(tmp_path / "items.csv", "item_id,title\nb,B\na,A\n")
    write(tmp_path / "r.csv", "user,item\n1,a\n1,b\n2,a\n")
    np.save(tmp_path / "img.npy", np.array([[2.0, 2.0], [1.0, 1.0]], dtype=np.float32))  # rows: b, a
    ds = load(tmp_path / "r.csv", items=tmp_path / "items.csv", features={"image": tmp_path / "img.npy"})
    assert ds.item_ids.tolist() == ["a", "b"]
    assert ds.features["image"].tolist() == [[1.0, 1.0], [2.0, 2.0]]
    np.save(tmp_path / "img.npy", np.zeros((3, 2), dtype=np.float32))
    with pytest.raises(DataError, match="3 rows but the item table has 2 rows"):
        load(tmp_path / "r.csv", items=tmp_path / "items.csv", features={"image": tmp_path / "img.npy"})


def test_missing_media_files_are_warnings(tmp_path: Path) -> None:
    (tmp_path / "img").mkdir()
    (tmp_path / "img" / "a.jpg").write_bytes(b"\xff\xd8")
    write(tmp_path / "items.csv", "item_id,title,image\na,A,img/a.jpg\nb,B,img/b.jpg\nc,C,\n")
    write(tmp_path / "r.csv", "user,item\n1,a\n1,b\n1,c\n")
    rep = validate(tmp_path / "r.csv", items=tmp_path / "items.csv")
    kinds = {i.kind: i for i in rep.issues.values()}
    assert kinds["image file not found"].count == 1 and kinds["image file not found"].severity == "warning"
    assert kinds["item without image"].severity == "info"


def test_toml_dataset(tmp_path: Path) -> None:
    write(
        tmp_path / "clicks.tsv",
        "customer\tsku\tstars\n" + "".join(f"c{u}\ts{i}\t{i % 5 + 1}\n" for u in range(4) for i in range(6)),
    )
    write(tmp_path / "cat.csv", "sku,name,blurb\n" + "".join(f"s{i},N{i},B{i}\n" for i in range(7)))
    write(
        tmp_path / "shop.toml",
        """
name = "shop"
interactions = {path = "clicks.tsv"}
items = "cat.csv"
[columns]
user = "customer"
item = "sku"
rating = "stars"
text = ["name", "blurb"]
[options]
split = "leave_one_out"
seed = 3
""",
    )
    ds = load(tmp_path / "shop.toml")
    assert ds.name == "shop" and ds.split_name.startswith("leave-one-out")
    assert (ds.n_users, ds.n_items) == (4, 7) and ds.test.nnz == 4 and ds.valid.nnz == 4
    assert ds.item_texts()[0] == "N0 | B0"
    # the folder form
    (tmp_path / "shop.toml").rename(tmp_path / "dataset.toml")
    assert load(tmp_path).n_items == 7
    write(tmp_path / "bad.toml", "interactions = 3\n")
    with pytest.raises(ConfigError, match="interactions must be"):
        load(tmp_path / "bad.toml")
    write(tmp_path / "bad.toml", "interactions = 'clicks.tsv'\nnmae = 'x'\n")
    with pytest.raises(ConfigError, match="nmae"):
        load(tmp_path / "bad.toml")


def test_missing_path_and_builtin_without_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(DataError, match="no such file"):
        load(tmp_path / "nothing.csv")
    monkeypatch.setenv("MODALREC_DATA", str(tmp_path))
    with pytest.raises(DataError, match="ml100k_tmdb_posters"):
        load("ml100k")


def test_duplicate_resolution_matches_reference(tmp_path: Path) -> None:
    """Random MMRec file with many duplicate pairs: every pair keeps its smallest split label."""
    rng = np.random.default_rng(11)
    n = 3000
    u, i, lab = rng.integers(0, 40, n), rng.integers(0, 30, n), rng.integers(0, 3, n)
    rows = "".join(f"{a}\t{b}\t{c}\n" for a, b, c in zip(u, i, lab, strict=True))
    folder = tmp_path / "dups"
    folder.mkdir()
    write(folder / "d.inter", "userID\titemID\tx_label\n" + rows)
    ds = load(folder)
    expect: dict[tuple[int, int], int] = {}
    for a, b, c in zip(u, i, lab, strict=True):
        expect[(a, b)] = min(expect.get((a, b), 3), c)
    got = (ds.train + 2 * ds.valid + 3 * ds.test).tocoo()
    seen = {
        (int(ds.user_ids[r]), int(ds.item_ids[c])): int(v) - 1
        for r, c, v in zip(got.row, got.col, got.data, strict=True)
    }
    assert seen == expect
    assert ds.report.dropped_rows == n - len(expect)
