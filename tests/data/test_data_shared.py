"""The three shared data sets load with their documented counts and a clean report (skipped without them)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from modalrec.data import load, read_media_bytes, validate

pytestmark = pytest.mark.shared_data


def no_warnings(report) -> None:  # type: ignore[no-untyped-def]
    warnings = [i.as_dict() for i in report.issues.values() if i.severity != "info"]
    assert warnings == [], warnings
    assert report.ok and report.dropped_rows == 0


def test_ml100k(shared_data: Path) -> None:
    ds = load("ml100k", shared_data)
    assert (ds.n_users, ds.n_items) == (943, 1682)
    assert ds.train.nnz + ds.valid.nnz + ds.test.nnz == 100_000
    assert ds.split_name == "random per-user 8:1:1, seed 2024"
    # per-user 8:1:1 with at least one training item for everybody
    assert (np.diff(ds.train.indptr) >= 1).all()
    assert abs(ds.train.nnz / 100_000 - 0.8) < 0.01 and ds.valid.nnz == ds.test.nnz
    # disjoint parts
    assert ds.train.multiply(ds.valid).nnz == 0 and ds.train.multiply(ds.test).nnz == 0
    assert ds.valid.multiply(ds.test).nnz == 0
    assert ds.user_ids[:3].tolist() == ["1", "2", "3"] and ds.item_ids[-1] == "1682"
    assert ds.text_fields == ["title", "genres", "overview"]  # the DESIGN.md protocol text
    assert ds.media_columns == {"image": "image"}
    items = ds.items
    assert items is not None and items["item_id"].to_list() == ds.item_ids.tolist()
    assert items["title"][0] == "Toy Story (1995)"
    assert items["image"].null_count() == 19 and int(items["has_poster"].sum()) == 1663
    assert items["image"][0].startswith("zip://") and items["image"][0].endswith("posters.zip#posters/1.jpg")
    assert read_media_bytes(items["image"][0])[:2] == b"\xff\xd8"  # a JPEG
    assert "Woody" in ds.item_texts()[0]
    no_warnings(ds.report)
    assert ds.report.stats["split"]["train"] == ds.train.nnz


def test_ml100k_split_is_deterministic(shared_data: Path) -> None:
    a, b = load("ml100k", shared_data), load("ml100k", shared_data, seed=2024)
    assert (a.test != b.test).nnz == 0
    c = load("ml100k", shared_data, seed=1)
    assert (a.test != c.test).nnz > 0


def test_ml100k_cold_start(shared_data: Path) -> None:
    base = load("ml100k", shared_data)
    ds = load("ml100k", shared_data, split="cold_start", cold_share=0.1)
    cold = ds.cold_items
    assert cold is not None and len(cold) == round(0.1 * 1682)
    assert ds.train[:, cold].nnz == 0  # cold items absent from training
    assert ds.valid[:, cold].nnz > 0 and ds.test[:, cold].nnz > 0
    # nothing lost: the same 100k interactions, only moved
    assert ((base.train + base.valid + base.test) != (ds.train + ds.valid + ds.test)).nnz == 0
    warm = np.setdiff1d(np.arange(ds.n_items), cold)
    assert (base.train[:, warm] != ds.train[:, warm]).nnz == 0
    assert ds.report.stats["split"]["cold_items"] == len(cold)
    no_warnings(ds.report)


def test_ml100k_min_rating(shared_data: Path) -> None:
    ds = load("ml100k", shared_data, min_rating=4)
    n = ds.report.stats["dataset"]["interactions"]
    assert n == 55_375  # ratings 4 and 5 in u.data
    assert ds.report.dropped_rows == 100_000 - n


def test_tiktok(shared_data: Path) -> None:
    ds = load("tiktok", shared_data)
    assert (ds.n_users, ds.n_items) == (9308, 6710)
    assert (ds.train.nnz, ds.valid.nnz, ds.test.nnz) == (59541, 3051, 6130)
    assert set(ds.features) == {"image", "audio"}
    for m in ("image", "audio"):
        assert ds.features[m].shape == (6710, 128) and ds.features[m].dtype == np.float32
        assert ds.feature_masks[m].all()
    raw = np.load(shared_data / "tiktok_diffmm" / "image_feat.npy")
    np.testing.assert_array_equal(ds.features["image"], raw.astype(np.float32))
    no_warnings(ds.report)


def test_baby(shared_data: Path) -> None:
    ds = load("baby", shared_data)
    assert (ds.n_users, ds.n_items) == (19445, 7050)
    assert (ds.train.nnz, ds.valid.nnz, ds.test.nnz) == (119674, 20559, 20559)
    assert ds.items is not None and ds.items["asin"][0] == "097293751X"
    assert ds.items["image_url"].null_count() == 13
    no_warnings(ds.report)


def test_validate_reports_stats(shared_data: Path) -> None:
    rep = validate("tiktok", shared_data)
    assert rep.stats["dataset"] == {"users": 9308, "items": 6710, "interactions": 68722}
    assert rep.stats["split"]["valid"] == 3051
    inter = str(shared_data / "tiktok_diffmm" / "tiktok.inter")
    assert rep.stats[inter] == {"rows_read": 68722, "rows_kept": 68722}


def test_folder_paths_load_like_names(shared_data: Path) -> None:
    ds = load(shared_data / "tiktok_diffmm")
    assert (ds.n_users, ds.n_items) == (9308, 6710) and ds.name == "tiktok"


def test_u_item_is_latin1(shared_data: Path) -> None:
    """The raw MovieLens item file is Latin-1: strict UTF-8 reading must say so, with the line."""
    from modalrec.core.errors import DataError
    from modalrec.data import read_table

    names = ["movie_id", "title", "release", "video", "url"] + [f"g{k}" for k in range(19)]
    kw = {"format": "csv", "separator": "|", "has_header": False, "names": names, "quote_char": None}
    path = shared_data / "ml100k_tmdb_posters" / "u.item"
    with pytest.raises(DataError, match='encoding="latin-1"') as e:
        read_table(path, **kw)
    assert e.value.line is not None and e.value.line > 1
    t = read_table(path, encoding="latin-1", **kw)
    assert t.df.height == 1682
