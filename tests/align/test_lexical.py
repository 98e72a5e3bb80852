"""Lexical alignment: character n-grams of texts and of OCR'd pictures, IDF aligner, ensemble column blocks."""

from __future__ import annotations

import numpy as np
import pytest

from modalrec.align import EnsembleAligner, LexicalAligner, create
from modalrec.align.base import Aligner
from modalrec.align.metrics import retrieval_metrics
from modalrec.core.errors import ConfigError, DataError
from modalrec.encoders import build_encoder
from modalrec.encoders.lexical import CharNgramTextEncoder, SceneTextImageEncoder, char_ngram_vectors

TITLES = [
    "Toy Story",
    "GoldenEye",
    "Four Rooms",
    "Get Shorty",
    "Copycat",
    "Twelve Monkeys",
    "Babe",
    "Dead Man Walking",
    "Richard III",
    "Seven",
    "Usual Suspects",
    "Mighty Aphrodite",
    "Postino",
    "Antonia's Line",
    "Braveheart",
    "Taxi Driver",
    "Rumble in the Bronx",
    "Bad Boys",
    "Apollo 13",
    "Batman Forever",
    "Belle de jour",
    "Crimson Tide",
    "Crumb",
    "Desperado",
    "Doom Generation",
    "Free Willy 2",
    "Mad Love",
    "Nadja",
    "Net, The",
    "Strange Days",
]


def ocr_like(title: str, rng: np.random.Generator) -> str:
    """What OCR makes of a printed title: upper case, spaces lost, now and then a wrong letter."""
    s = list(title.upper().replace(" ", ""))
    if len(s) > 5 and rng.random() < 0.5:
        s[int(rng.integers(len(s)))] = "E"
    return "".join(s)


def lexical_views(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    # every item text also carries the same boilerplate, which IDF must learn to ignore
    text = [f"{t} (1995) the movie" for t in TITLES]
    image = [f"{ocr_like(t, rng)}\nTHE MOVIE" for t in TITLES]
    return {"text": char_ngram_vectors(text, dim=2048), "image": char_ngram_vectors(image, dim=2048)}


def test_lexical_matches_titles_to_their_ocr_text_and_idf_helps():
    views = lexical_views()
    valid = np.arange(24, 30)
    with_idf = LexicalAligner().fit(views, valid_items=valid)
    without = LexicalAligner(idf=False).fit(views, valid_items=valid)
    r = {}
    for name, al in [("idf", with_idf), ("plain", without)]:
        zt, zi = al.transform("text", views["text"]), al.transform("image", views["image"])
        r[name] = retrieval_metrics(zt, zi, ks=(1,))["recall@1"]
    assert r["idf"] >= 0.95, r
    assert r["idf"] >= r["plain"], r
    # IDF is fitted on training rows only: a term seen only in validation items keeps the top weight
    assert with_idf.meta["training_rows"] == 2 * 24


def test_lexical_rejects_views_in_different_vocabularies():
    with pytest.raises(DataError, match="shared vocabulary"):
        LexicalAligner().fit({"text": np.ones((5, 4)), "image": np.ones((5, 6))})


def test_ensemble_members_read_their_own_column_blocks(tmp_path):
    rng = np.random.default_rng(3)
    lex = lexical_views()
    n = len(TITLES)
    sem_t = rng.normal(size=(n, 6)).astype(np.float32)
    sem_i = sem_t @ rng.normal(size=(6, 9)).astype(np.float32)
    views = {"text": np.hstack([sem_t, lex["text"]]), "image": np.hstack([sem_i, lex["image"]])}
    ens = EnsembleAligner(
        members=[
            {"aligner": "ridge", "reference": "image", "columns": {"text": [0, 6], "image": [0, 9]}},
            {"aligner": "lexical", "columns": {"text": [6, 6 + 2048], "image": [9, 9 + 2048]}},
        ],
        weights=[0.5, 0.5],
    ).fit(views)
    # the lexical member saw exactly the n-gram block: its IDF has one weight per hashed n-gram
    assert ens.meta["members"][1]["input_dims"] == {"text": 2048, "image": 2048}
    zt, zi = ens.transform("text", views["text"]), ens.transform("image", views["image"])
    assert retrieval_metrics(zt, zi, ks=(1,))["recall@1"] == 1.0
    loaded = Aligner.load(ens.save(tmp_path / "ens"))
    np.testing.assert_allclose(loaded.transform("image", views["image"]), zi, atol=1e-6)
    with pytest.raises(ConfigError, match="outside"):
        create("ensemble", members=[{"aligner": "lexical", "columns": {"text": [0, 99_999]}}]).fit(views)
    with pytest.raises(ConfigError, match="names modality"):
        create("ensemble", members=[{"aligner": "lexical", "columns": {"audio": [0, 2]}}]).fit(views)


def test_char_ngrams_survive_case_spacing_and_punctuation():
    enc = build_encoder({"encoder": "chargrams", "dim": 512})
    assert isinstance(enc, CharNgramTextEncoder) and enc.dim == 512
    v = enc.encode(["Air Force One (1997)", "AIRFORCEONE", "Apollo 13"])
    assert v[0] @ v[1] > 0.8 and abs(v[1] @ v[2]) < 0.2
    with pytest.raises(ConfigError):
        CharNgramTextEncoder(n=0)


def _poster(path, word: str) -> None:
    from PIL import Image, ImageDraw, ImageFont

    img = Image.new("RGB", (92, 138), (20, 30, 60))  # ML-100K poster size: read after upscaling
    ImageDraw.Draw(img).text((4, 55), word, font=ImageFont.load_default(size=18), fill=(250, 240, 200))
    img.save(path)


def test_scene_text_encoder_reads_the_title_printed_on_a_small_poster(tmp_path):
    _poster(tmp_path / "fargo.png", "FARGO")
    _poster(tmp_path / "blank.png", "")
    enc = build_encoder({"encoder": "ocr", "dim": 1024})
    assert isinstance(enc, SceneTextImageEncoder)
    lines = enc.recognise(tmp_path / "fargo.png")
    assert [t.upper() for t, _ in lines] == ["FARGO"], lines
    v = enc.encode([str(tmp_path / "fargo.png"), str(tmp_path / "blank.png")])
    titles = CharNgramTextEncoder(dim=1024).encode(["Fargo (1996)", "Toy Story (1995)"])
    sims = v @ titles.T
    assert sims[0, 0] > 0.5 and sims[0, 1] < 0.1, sims
    assert not v[1].any(), "a picture without text is the zero vector"
    assert enc.to_spec()["encoder"] == "scene-text"


def test_search_finds_a_poster_by_the_title_printed_on_it(tmp_path):
    """encode (char n-grams of titles, OCR of posters) -> align lexical -> search / similar, via the CLI."""
    import json

    import polars as pl
    from typer.testing import CliRunner

    from modalrec.cli import app
    from modalrec.encoders import encode_dataset

    words = ["FARGO", "BABE", "SEVEN", "CRUMB", "NADJA", "HEAT", "CASINO", "CLUELESS", "JUMANJI", "SABRINA"]
    for w in words:
        _poster(tmp_path / f"{w}.png", w)
    items = pl.DataFrame(
        {
            "item_id": [f"i{k}" for k in range(len(words))],
            "title": [f"{w.title()} (1995)" for w in words],
            "image": [str(tmp_path / f"{w}.png") for w in words],
        }
    )
    run = tmp_path / "run"
    mods = {
        "title_chars": {"encoder": "char-ngrams", "fields": ["title"]},
        "poster_text": {"encoder": "scene-text", "column": "image"},
    }
    encode_dataset(items, mods, run, cache_dir=tmp_path / "cache", progress=False, workers=1)
    items.write_parquet(run / "items.parquet")

    def invoke(*args):
        return CliRunner().invoke(app, [str(a) for a in args])

    res = invoke("align", run, "-a", "lexical", "--holdout", "0.3")
    assert res.exit_code == 0, res.output
    # the free-text query goes through the run's own text encoder (char n-grams), not MiniLM
    res = invoke("search", run, "clueless", "-k", "3", "--modality", "poster_text", "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)[0]["title"] == "Clueless (1995)"
    res = invoke("search", run, "Sabrina (1954)", "-k", "1", "--modality", "poster_text", "--json")
    assert json.loads(res.stdout)[0]["item_id"] == "i9", res.output
