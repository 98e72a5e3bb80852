"""The synthetic catalogue generator: deterministic, loadable, power-law, clustered, content with signal."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from modalrec.cli import app
from modalrec.core.errors import ConfigError
from modalrec.data import load
from modalrec.data.synth import make_synthetic, parse_modalities

SMALL = {"n_users": 400, "n_items": 300, "n_interactions": 6000, "n_clusters": 6}


def _digests(d: Path) -> dict[str, str]:
    return {str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.rglob("*.*"))}


def test_same_seed_same_files_other_seed_other_files(tmp_path: Path) -> None:
    a = _digests(make_synthetic(tmp_path / "a", **SMALL, seed=3))
    b = _digests(make_synthetic(tmp_path / "b", **SMALL, seed=3))
    c = _digests(make_synthetic(tmp_path / "c", **SMALL, seed=4))
    assert a == b
    assert a["interactions.parquet"] != c["interactions.parquet"]


def test_loads_with_the_asked_size_and_features(tmp_path: Path) -> None:
    d = make_synthetic(tmp_path, **SMALL, modalities={"image": 16, "audio": 8}, seed=0)
    truth = json.loads((d / "truth.json").read_text())
    assert truth["interactions_written"] == 6000
    ds = load(str(d / "dataset.toml"))
    assert ds.train.nnz + ds.valid.nnz + ds.test.nnz == 6000
    assert {m: x.shape[1] for m, x in ds.features.items()} == {"image": 16, "audio": 8}
    assert ds.report.ok


def test_popularity_is_heavy_tailed_and_tastes_are_clustered(tmp_path: Path) -> None:
    d = make_synthetic(tmp_path, **SMALL, taste=0.8, seed=1)
    clusters = np.array(json.loads((d / "truth.json").read_text())["item_cluster"])
    ds = load(str(d / "dataset.toml"))
    x = (ds.train + ds.valid + ds.test).tocsr()
    counts = np.sort(np.asarray(x.sum(axis=0)).ravel())[::-1]
    assert counts[: len(counts) // 10].sum() > 0.3 * counts.sum()  # top 10% of items: > 30% of pairs
    item_cluster = clusters[[int(i[1:]) for i in ds.item_ids]]
    # each user's most frequent cluster holds far more of the user's items than 1/6 (uniform)
    shares = []
    for u in range(ds.n_users):
        c = np.bincount(item_cluster[x[u].indices], minlength=6)
        shares.append(c.max() / c.sum())
    assert np.mean(shares) > 0.6


def test_content_carries_the_cluster(tmp_path: Path) -> None:
    d = make_synthetic(tmp_path, **SMALL, seed=2)
    clusters = np.array(json.loads((d / "truth.json").read_text())["item_cluster"])
    f = np.load(d / "features" / "image.npy")
    f = f / np.linalg.norm(f, axis=1, keepdims=True)
    sim = f @ f.T
    same = clusters[:, None] == clusters[None, :]
    np.fill_diagonal(same, False)
    other = clusters[:, None] != clusters[None, :]
    assert sim[same].mean() > sim[other].mean() + 0.3


def test_bad_settings_and_modalities_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="every user needs one"):
        make_synthetic(tmp_path, n_users=100, n_items=50, n_interactions=10)
    with pytest.raises(ConfigError, match="NAME or NAME:DIM"):
        parse_modalities("image:big")


def test_cli_writes_a_catalogue_validate_accepts(tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "cat"
    args = ["synth", "--out", str(out), "--users", "200", "--items", "150", "--interactions", "3000"]
    res = runner.invoke(app, [*args, "--modalities", "image:8"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["validate", str(out / "dataset.toml"), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["stats"]["dataset"]["items"] <= 150
