"""A run with aligned views (modalrec align): /search reaches other modalities from a text query."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from serving_helpers import THEMES, LiveServer, item_cluster, serve_config

from modalrec.serving.app import create_app
from modalrec.workflows.align_runs import align_run


def test_text_query_finds_images(runs, tmp_path: Path, text_encoder) -> None:
    run = tmp_path / "aligned-run"
    shutil.copytree(runs["bpr"], run)
    align_run(run, "ridge", params={"reference": "text"}, holdout=0.0)
    with LiveServer(create_app(run, serve_config(tmp_path), encode_text=text_encoder)) as srv:
        c = srv.client
        mods = c.get("/health").json()["arms"]["a"]["modalities"]
        assert {"text", "image"} <= set(mods)
        r = c.get("/search", params={"q": "a kitchen recipe", "k": 5, "modality": "image"})
        assert r.status_code == 200, r.text
        got = [int(it["item_id"][1:]) for it in r.json()["items"]]
        # image vectors carry only the cluster (no text): the query reaches them through the aligner
        assert np.mean([item_cluster(i) == THEMES.index("cooking recipe kitchen") for i in got]) >= 0.8, got
        r = c.get("/similar/i5", params={"k": 5, "modality": "image"}).json()
        assert [item_cluster(int(it["item_id"][1:])) for it in r["items"]] == [1] * 5, r
        assert c.get("/search", params={"q": "x", "modality": "audio"}).json()["error"]["code"] == (
            "unsupported_modality"
        )
