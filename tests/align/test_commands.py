"""The alignment CLI end to end on a tiny run directory: align, align-report, search, similar.

The run's text features are real MiniLM vectors of the item texts (the same encoder ``search``
uses for the query); each item's "image" feature is a fixed random linear view of its text vector,
so a ridge aligner can learn the map and a text query must find the item by its image.
"""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from modalrec.cli import app
from modalrec.cli.align import parse_params
from modalrec.core.errors import ConfigError
from modalrec.data.dataset import Dataset, interaction_matrix
from modalrec.workflows.rundir import RunWriter, write_dataset, write_manifest

COLOURS = ["red", "blue", "green", "yellow", "black", "white"]
THINGS = ["sports car", "wooden chair", "mountain bike", "teapot", "umbrella", "guitar", "lamp"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from modalrec.encoders.text import MiniLMTextEncoder

    texts = [f"a {c} {t}" for c in COLOURS for t in THINGS]  # 42 items
    n = len(texts)
    text = MiniLMTextEncoder().encode(texts)
    rng = np.random.default_rng(0)
    image = (text @ rng.normal(size=(text.shape[1], 24))).astype(np.float32)
    image_mask = np.ones(n, bool)
    image_mask[3] = False  # one item without a picture
    image[3] = 0.0
    users = np.arange(10)
    r = np.repeat(users, 3)
    c = rng.integers(0, n, size=len(r))
    m = interaction_matrix(r, c, len(users), n)
    empty = interaction_matrix(np.array([], int), np.array([], int), len(users), n)
    ds = Dataset(
        name="tiny",
        user_ids=np.array([f"u{u}" for u in users]),
        item_ids=np.array([f"i{i}" for i in range(n)]),
        train=m,
        valid=empty,
        test=empty,
        items=pl.DataFrame({"item_id": [f"i{i}" for i in range(n)], "title": texts}),
        features={"text": text, "image": image},
        feature_masks={"text": np.ones(n, bool), "image": image_mask},
    )
    out = tmp_path_factory.mktemp("runs") / "tiny"
    with RunWriter(out) as d:
        write_dataset(ds, d)
        write_manifest(d, dataset={"dataset": "tiny"})
    return out, texts


def invoke(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


def test_search_before_alignment_is_a_clear_error(tmp_path):
    res = invoke("search", tmp_path, "a red teapot", "--modality", "image")
    assert res.exit_code == 2 and "error" in res.output


def test_align_search_similar_end_to_end(run_dir):
    run, texts = run_dir
    res = invoke("align", run, "-a", "ridge", "-p", "reference=image", "-p", "reg=0.001", "--holdout", "0.2")
    assert res.exit_code == 0, res.output
    assert (run / "align" / "aligner.json").exists() and (run / "align" / "aligned" / "image.npy").exists()
    held = set(np.load(run / "align" / "eval_items.npy").tolist())
    assert len(held) == 8 and 3 not in held  # item 3 has one modality only: never evaluated

    rep = invoke("align-report", run)
    assert rep.exit_code == 0 and "ridge" in rep.output and "text -> image" in rep.output
    assert "held-out" in rep.output

    # a text query finds a training item by its *image* vector (the item's own text is the query)
    target = next(i for i in range(len(texts)) if i not in held and i != 3)
    res = invoke("search", run, texts[target], "-k", "5", "--modality", "image", "--json")
    assert res.exit_code == 0, res.output
    hits = json.loads(res.stdout)
    assert [h["rank"] for h in hits] == [1, 2, 3, 4, 5]
    assert hits[0]["item_id"] == f"i{target}" and hits[0]["title"] == texts[target]
    # the item without an image is never an image hit, but the fused gallery can return it
    res = invoke("search", run, texts[3], "-k", "42", "--modality", "image", "--json")
    assert "i3" not in [h["item_id"] for h in json.loads(res.stdout)]
    res = invoke("search", run, texts[3], "-k", "1", "--modality", "text", "--json")
    assert json.loads(res.stdout)[0]["item_id"] == "i3"
    table = invoke("search", run, texts[target], "-k", "3", "--modality", "image")
    assert table.exit_code == 0 and texts[target] in table.output

    # similar: the item itself is excluded; its text vector finds its own image first among others
    res = invoke("similar", run, f"i{target}", "-k", "4", "--modality", "image", "--json")
    hits = json.loads(res.stdout)
    assert len(hits) == 4 and f"i{target}" not in [h["item_id"] for h in hits]
    res = invoke("similar", run, "i0", "-k", "3", "--modality", "fused")
    assert res.exit_code == 0 and "i0 (fused) -> fused" in res.output

    # user errors: unknown item, unknown modality, bad parameter -> exit code 2 with a message
    for bad in (
        ("similar", run, "nope"),
        ("search", run, "x", "--modality", "audio"),
        ("align", run, "-a", "ridge", "-p", "bogus=1"),
        ("align", run, "-a", "nope"),
        ("align", run, "-m", "text"),
    ):
        res = invoke(*bad)
        assert res.exit_code == 2, (bad, res.output)


def test_realign_replaces_previous_alignment(run_dir):
    run, _ = run_dir
    assert invoke("align", run, "-a", "cca", "-p", "dim=8", "--holdout", "0").exit_code == 0
    info = json.loads((run / "align" / "aligner.json").read_text())
    assert info["aligner"] == "cca"
    assert not (run / "align" / "eval_items.npy").exists()
    assert "includes training items" in invoke("align-report", run).output
    assert not [p for p in run.iterdir() if p.name.startswith(".align")]


def test_parse_params_rejects_missing_equals():
    with pytest.raises(ConfigError):
        parse_params(["dim"])
