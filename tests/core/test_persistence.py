"""The one persistence base: files written before format versions load; newer versions are refused."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from safetensors.numpy import save_file

from modalrec.core.errors import RunDirError
from modalrec.data.dataset import Dataset
from modalrec.models import Recommender, create


def tiny_dataset() -> Dataset:
    rows = np.array([0, 0, 1, 1, 2, 2, 3])
    cols = np.array([0, 1, 1, 2, 0, 2, 3])
    train = sp.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(4, 4))
    empty = sp.csr_matrix((4, 4), dtype=np.float32)
    ids = np.array([str(i) for i in range(4)])
    return Dataset(name="tiny", user_ids=ids, item_ids=ids, train=train, valid=empty, test=empty)


def _old_style_model_dir(path: Path) -> Path:
    """A popularity model directory exactly as modalrec 0.1 wrote it (no ``format_version``)."""
    path.mkdir(parents=True)
    save_file({"popularity": np.array([3.0, 1.0, 2.0], dtype=np.float32)}, str(path / "model.safetensors"))
    info = {"model": "popularity", "params": {}, "n_users": 2, "n_items": 3, "meta": {}}
    (path / "model.json").write_text(json.dumps(info))
    return path


def test_a_model_saved_before_format_versions_loads(tmp_path: Path) -> None:
    model = Recommender.load(_old_style_model_dir(tmp_path / "m"))
    assert model.name == "popularity"
    assert (model.n_users, model.n_items) == (2, 3)


def test_a_newer_format_version_is_refused_by_name(tmp_path: Path) -> None:
    d = _old_style_model_dir(tmp_path / "m")
    info = json.loads((d / "model.json").read_text())
    (d / "model.json").write_text(json.dumps({**info, "format_version": 99}))
    with pytest.raises(RunDirError, match="format version 99 is newer than this modalrec reads"):
        Recommender.load(d)


def test_save_records_the_format_version_and_round_trips(tmp_path: Path) -> None:
    ds = tiny_dataset()
    model = create("itemknn", k=5).fit(ds, progress=False)
    model.save(tmp_path / "m")
    info = json.loads((tmp_path / "m" / "model.json").read_text())
    assert info["format_version"] == 1
    assert info["params"] == {"k": 5, "shrink": 0.0, "pop_weight": 0.0}
    again = Recommender.load(tmp_path / "m")
    np.testing.assert_array_equal(again.score([0, 1]), model.score([0, 1]))


def test_unknown_saved_params_name_the_file(tmp_path: Path) -> None:
    d = _old_style_model_dir(tmp_path / "m")
    info = json.loads((d / "model.json").read_text())
    (d / "model.json").write_text(json.dumps({**info, "params": {"nope": 1}}))
    with pytest.raises(RunDirError, match=r"model\.json: cannot rebuild the saved model: .*'nope'"):
        Recommender.load(d)
