"""Cross-modal search, similar items and the alignment report (run-directory round trip)."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from modalrec.align import RidgeAligner, l2_normalize
from modalrec.align.report import align_report, alignment_report, load_aligned, save_alignment
from modalrec.core.errors import ConfigError, DataError, RunDirError
from modalrec.workflows.search import SearchIndex, search, similar


def toy_world(n=60, seed=0):
    """Items have a latent vector; text and image are linear views of it; the 'text encoder' of a
    query is the text view of the latent vector the query describes."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 5)).astype(np.float32)
    A = rng.normal(size=(5, 7)).astype(np.float32)
    B = rng.normal(size=(5, 9)).astype(np.float32)
    return z, {"text": z @ A, "image": z @ B}, A


def test_search_finds_items_by_their_image_from_a_text_query():
    z, views, A = toy_world()
    mk = {"text": np.ones(60, bool), "image": np.ones(60, bool)}
    mk["text"][7] = False  # item 7 has no text: it can still be found by its image
    al = RidgeAligner(reference="image", reg=1e-6, l2_input=False).fit(views, mk)
    ids = np.array([f"m{i}" for i in range(60)])
    aligned = al.transform_all(views, mk)
    idx = SearchIndex(ids, aligned, mk, aligner=al)

    def encode(texts):  # the query "describes" item 7's latent vector
        assert list(texts) == ["a query about item seven"]
        return z[7:8] @ A

    hits = search(idx, "a query about item seven", 3, modality="image", encode_text=encode)
    assert hits[0]["item_id"] == "m7" and hits[0]["rank"] == 1
    assert [h["rank"] for h in hits] == [1, 2, 3]
    assert hits[0]["score"] >= hits[1]["score"] >= hits[2]["score"]
    # text search cannot return the item that has no text
    hits = search(idx, "a query about item seven", 60, modality="text", encode_text=encode)
    assert "m7" not in [h["item_id"] for h in hits] and len(hits) == 59
    # fused vectors exist and include item 7 (through its image only)
    assert search(idx, "a query about item seven", 1, encode_text=encode)[0]["item_id"] == "m7"


def test_similar_excludes_the_item_and_crosses_modalities():
    _z, views, _ = toy_world()
    al = RidgeAligner(reference="image", reg=1e-6, l2_input=False).fit(views)
    idx = SearchIndex(np.arange(60).astype(str), al.transform_all(views))
    out = similar(idx, "3", 5, modality="image")
    assert "3" not in [r["item_id"] for r in out] and len(out) == 5
    # the text vector of item 3 retrieves item 3's own image first when it is not excluded
    cross = similar(idx, "3", 60, modality="image", query_modality="text")
    gal = l2_normalize(al.transform("image", views["image"]))
    truth = np.argsort(-(gal @ l2_normalize(al.transform("text", views["text"][3:4])).T).ravel())
    assert cross[0]["item_id"] == str(next(i for i in truth if i != 3))
    with pytest.raises(DataError):
        similar(idx, "nope", 3)
    with pytest.raises(ConfigError):
        similar(idx, "3", 3, modality="audio")
    with pytest.raises(ConfigError):
        similar(idx, "3", 0)


def test_search_rejects_empty_query():
    idx = SearchIndex(np.array(["a"]), {"text": np.ones((1, 2), np.float32)})
    with pytest.raises(DataError):
        search(idx, "  ", 1, encode_text=lambda t: np.ones((1, 2)))


def test_report_and_run_directory_round_trip(tmp_path):
    z, views, A = toy_world(n=80)
    test = np.arange(60, 80)
    al = RidgeAligner(reference="image", reg=1e-6, l2_input=False).fit(views, valid_items=test)
    rep = alignment_report(views, None, {"ridge": al}, test, context={"data": "toy"})
    rows = {(r["aligner"], r["query"], r["gallery"]): r for r in rep["rows"]}
    assert rows[("before", "text", "image")]["recall@10"] == pytest.approx(10 / 20)  # chance: dims differ
    after = rows[("ridge", "text", "image")]
    assert (
        after["recall@1"] == 1.0 and after["median_rank"] == 1.0 and after["cos_true"] > after["cos_random"]
    )
    assert rows[("ridge", "image", "text")]["n"] == 20

    run = tmp_path / "run"
    save_alignment(run, al, views, report=rep)
    md = align_report(run)
    assert "ridge" in md and "text -> image" in md and "data: toy" in md
    assert json.loads((run / "align" / "align_report.json").read_text())["n_items_evaluated"] == 20
    vecs, _masks = load_aligned(run)
    np.testing.assert_allclose(vecs["text"], al.transform("text", views["text"]))

    # recompute from the run's features (the layout of modalrec run directories)
    (run / "features").mkdir()
    for m, v in views.items():
        np.save(run / "features" / f"{m}.npy", v)
    np.save(run / "align" / "eval_items.npy", test)
    md2 = align_report(run, recompute=True)
    assert "held-out items" in md2

    # search straight from the run directory, titles from items.parquet
    pl.DataFrame(
        {"item_id": [f"m{i}" for i in range(80)], "title": [f"Movie {i}" for i in range(80)]}
    ).write_parquet(run / "items.parquet")
    hits = search(run, "q", 2, modality="image", encode_text=lambda t: z[70:71] @ A)
    assert hits[0]["item_id"] == "m70" and hits[0]["title"] == "Movie 70"
    assert similar(run, "m70", 1, modality="image")[0]["item_id"] != "m70"


def test_align_report_without_alignment(tmp_path):
    with pytest.raises(RunDirError):
        align_report(tmp_path)
    with pytest.raises(RunDirError):
        load_aligned(tmp_path)
