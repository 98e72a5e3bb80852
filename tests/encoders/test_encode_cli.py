"""`modalrec encode` from a run config with per-modality encoder options, then align + search on its output."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from modalrec.cli import app

NAMES = [
    "Red chair",
    "Blue lamp",
    "Green sofa",
    "Oak table",
    "Steel shelf",
    "Wool rug",
    "Glass vase",
    "Brass clock",
]


def test_encode_writes_features_items_and_encoder_specs_that_search_reuses(tmp_path):
    data = tmp_path / "shop"
    data.mkdir()
    (data / "clicks.csv").write_text(
        "user,item\n" + "".join(f"u{u},i{(u + k) % len(NAMES)}\n" for u in range(12) for k in range(4))
    )
    (data / "items.csv").write_text(
        "item_id,name,blurb\n"
        + "".join(f"i{k},{n},THE {n.upper()} - IN STOCK\n" for k, n in enumerate(NAMES))
    )
    (data / "dataset.toml").write_text(
        'name = "shop"\ninteractions = "clicks.csv"\nitems = "items.csv"\n[columns]\ntext = ["name", "blurb"]\n'
    )
    cfg = tmp_path / "run.toml"
    cfg.write_text(
        f'[data]\nname = "{data}"\n[encode]\nmodalities = ["name_chars", "blurb_chars"]\n'
        '[encode.options]\nname_chars = { encoder = "char-ngrams", fields = ["name"], dim = 512 }\n'
        'blurb_chars = { encoder = "chargrams", fields = ["blurb"], dim = 512 }\n'
    )
    out = tmp_path / "out"
    res = CliRunner().invoke(app, ["encode", str(cfg), "--out", str(out), "--quiet"])
    assert res.exit_code == 0, res.output
    manifest = json.loads((out / "features" / "manifest.json").read_text())
    assert manifest["modalities"]["name_chars"]["spec"] == {"encoder": "char-ngrams", "n": 3, "dim": 512}
    assert (out / "items.parquet").exists(), "search needs the item table for titles"

    res = CliRunner().invoke(app, ["align", str(out), "-a", "lexical", "--holdout", "0"])
    assert res.exit_code == 0, res.output
    # the query is embedded with the run's char-ngram encoder (512-d), not MiniLM (384-d)
    res = CliRunner().invoke(
        app, ["search", str(out), "oak table", "-k", "2", "--modality", "blurb_chars", "--json"]
    )
    assert res.exit_code == 0, res.output
    hits = json.loads(res.stdout)
    assert hits[0]["item_id"] == "i3" and hits[0]["title"] == "Oak table", hits

    # encoding again into the same directory keeps the existing item table untouched
    before = (out / "items.parquet").stat().st_mtime_ns
    assert CliRunner().invoke(app, ["encode", str(cfg), "--out", str(out), "--quiet"]).exit_code == 0
    assert (out / "items.parquet").stat().st_mtime_ns == before
