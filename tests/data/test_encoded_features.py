"""Feature folders written by ``modalrec encode`` are read by their item ids, not by row position."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from modalrec.core.errors import DataError
from modalrec.data import load
from modalrec.encoders.store import FeatureSet


def _catalogue(tmp_path: Path) -> tuple[Path, Path]:
    # Catalogue rows deliberately not in natural id order: 'b' first.
    items = tmp_path / "items.csv"
    items.write_text("item_id,title\nb,B\na,A\nc,C\n", encoding="utf-8")
    clicks = tmp_path / "clicks.csv"
    clicks.write_text("user,item\n1,a\n1,b\n2,c\n2,a\n3,b\n3,c\n", encoding="utf-8")
    return items, clicks


def test_encode_output_rows_follow_its_ids(tmp_path: Path) -> None:
    items, clicks = _catalogue(tmp_path)
    vectors = {"a": [1.0, 0.0], "b": [0.0, 1.0], "c": [1.0, 1.0]}
    ids = ["a", "b", "c"]  # modalrec encode's order (natural), not the catalogue's
    fs = FeatureSet(
        item_ids=np.asarray(ids),
        features={"text": np.asarray([vectors[i] for i in ids], dtype=np.float32)},
        masks={"text": np.asarray([True, True, False])},
    )
    fs.save(tmp_path / "features")
    ds = load(clicks, items=items, features={"text": tmp_path / "features" / "text.npy"}, check_media=False)
    for index, item in enumerate(ds.item_ids):
        if item == "c":
            assert not ds.feature_masks["text"][index]
            assert not ds.features["text"][index].any()
        else:
            assert ds.feature_masks["text"][index]
            assert ds.features["text"][index].tolist() == vectors[str(item)]


def test_plain_npy_keeps_the_catalogue_row_convention(tmp_path: Path) -> None:
    items, clicks = _catalogue(tmp_path)
    np.save(tmp_path / "text.npy", np.asarray([[0.0, 1.0], [1.0, 0.0], [1.0, 1.0]], dtype=np.float32))
    ds = load(clicks, items=items, features={"text": tmp_path / "text.npy"}, check_media=False)
    b = list(map(str, ds.item_ids)).index("b")
    assert ds.features["text"][b].tolist() == [0.0, 1.0]


def test_id_file_of_the_wrong_length_is_named(tmp_path: Path) -> None:
    items, clicks = _catalogue(tmp_path)
    folder = tmp_path / "features"
    folder.mkdir()
    np.save(folder / "text.npy", np.zeros((3, 2), dtype=np.float32))
    np.save(folder / "item_ids.npy", np.asarray(["a", "b"]))
    with pytest.raises(DataError, match=r"item_ids.npy.*2,\).*3 rows"):
        load(clicks, items=items, features={"text": folder / "text.npy"}, check_media=False)
