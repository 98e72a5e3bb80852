"""The core CLI end to end: validate (clean and broken files), fit -> evaluate -> recommend, demo.

Runs the real commands through typer's CliRunner, the same code path as the console script.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from modalrec.cli import app

runner = CliRunner()


def _catalogue(d: Path) -> tuple[Path, Path]:
    items = d / "items.csv"
    items.write_text("item_id,title\n" + "".join(f"i{i},Item {i}\n" for i in range(30)))
    rng = np.random.default_rng(0)
    rows = ["user,item,rating"]
    for u in range(40):
        for i in rng.choice(30, 10, replace=False):
            rows.append(f"u{u},i{(i + u) % 30},{1 + (u * i) % 5}")
    inter = d / "ratings.csv"
    inter.write_text("\n".join(rows) + "\n")
    return inter, items


def test_validate_clean_file_exits_0(tmp_path: Path) -> None:
    inter, items = _catalogue(tmp_path)
    r = runner.invoke(app, ["validate", str(inter), "--items", str(items)])
    assert r.exit_code == 0, r.output
    assert "rows_read=400" in r.output and "Rows dropped: 0" in r.output


def test_validate_unknown_item_is_reported_and_exits_2(tmp_path: Path) -> None:
    inter, items = _catalogue(tmp_path)
    with inter.open("a") as f:
        f.write("u1,nope,3\n")
    r = runner.invoke(app, ["validate", str(inter), "--items", str(items), "--json"])
    assert r.exit_code == 2
    rep = json.loads(r.output)
    assert rep["dropped_rows"] == 1
    r = runner.invoke(app, ["validate", str(inter), "--items", str(items), "--strict"])
    assert r.exit_code == 2
    assert "ratings.csv:402" in r.output and "'nope'" in r.output and "Traceback" not in r.output


def test_validate_truncated_line_names_file_and_line(tmp_path: Path) -> None:
    inter, _ = _catalogue(tmp_path)
    lines = inter.read_text().splitlines()
    lines[5] = "u0,i3"
    inter.write_text("\n".join(lines) + "\n")
    r = runner.invoke(app, ["validate", str(inter)])
    assert r.exit_code == 2
    assert "ratings.csv:6" in r.output and "truncated" in r.output and "Traceback" not in r.output


def test_validate_latin1_read_as_utf8(tmp_path: Path) -> None:
    inter, items = _catalogue(tmp_path)
    items.write_bytes(items.read_bytes().replace(b"Item 3\n", "Café 3\n".encode("latin-1")))
    r = runner.invoke(app, ["validate", str(inter), "--items", str(items)])
    assert r.exit_code == 2
    assert "items.csv:5" in r.output and "latin-1" in r.output and "Traceback" not in r.output
    r = runner.invoke(app, ["validate", str(inter), "--items", str(items), "--encoding", "latin-1"])
    assert r.exit_code == 0, r.output


def test_fit_evaluate_recommend_round_trip(tmp_path: Path) -> None:
    inter, items = _catalogue(tmp_path)
    cfg = tmp_path / "run.toml"
    cfg.write_text(
        f'[data]\nname = "{inter}"\nsplit = "random"\nseed = 1\n[data.options]\nitems = "{items}"\n'
        '[model]\nname = "bprmf"\nparams = { dim = 8, epochs = 4, eval_every = 2 }\n'
    )
    out = tmp_path / "run"
    r = runner.invoke(app, ["fit", str(cfg), "--out", str(out), "--quiet"])
    assert r.exit_code == 0, r.output
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["files"] and all(len(h) == 64 for h in manifest["files"].values())
    assert "model/model.safetensors" in manifest["files"] and "config" in manifest
    r = runner.invoke(app, ["evaluate", str(out), "--json"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.output)
    assert set(res["metrics"]) >= {"recall@20", "ndcg@10", "map@50", "mrr@10", "hit@20"}
    r = runner.invoke(app, ["recommend", str(out), "--user", "u3", "-k", "5", "--json"])
    assert r.exit_code == 0, r.output
    recs = json.loads(r.output)["items"]
    assert len(recs) == 5 and len({x["item_id"] for x in recs}) == 5
    r = runner.invoke(app, ["recommend", str(out), "--user", "nobody"])
    assert r.exit_code == 2 and "nobody" in r.output
    r = runner.invoke(app, ["fit", str(cfg), "--out", str(out), "--quiet"])
    assert r.exit_code == 2 and "exists" in r.output


@pytest.mark.timeout(600)
def test_demo_small_end_to_end(tmp_path: Path) -> None:
    """The main job on a small demo catalogue, with the real encoders."""
    r = runner.invoke(
        app, ["demo", "--out", str(tmp_path / "d"), "--items", "120", "--users", "80", "--quiet"]
    )
    assert r.exit_code == 0, r.output
    assert "chosen on validation Recall@20" in r.output
    assert (tmp_path / "d" / "run" / "manifest.json").is_file()
    metrics = json.loads((tmp_path / "d" / "run" / "metrics.json").read_text())
    assert metrics["test"]["n_users"] > 0
