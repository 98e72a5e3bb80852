"""`modalrec tune`: Optuna search on validation Recall@20, SQLite resume, pruning, best config written."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from modalrec.cli import app
from modalrec.core.errors import ConfigError
from modalrec.data.dataset import Dataset
from modalrec.workflows.tuning import read_config, to_toml, tune
from synthetic import make_clustered


def write_data(ds: Dataset, d: Path) -> Path:
    """The clustered set as a TOML-described folder: interactions with a fixed split + feature .npy."""
    rows = ["user,item,x_label"]
    for label, m in enumerate((ds.train, ds.valid, ds.test)):
        coo = m.tocoo()
        rows += [f"{u},{i},{label}" for u, i in zip(coo.row, coo.col, strict=True)]
    (d / "inter.csv").write_text("\n".join(rows) + "\n")
    for name, f in ds.features.items():
        np.save(d / f"{name}.npy", f)
    feats = "\n".join(f'{n} = "{n}.npy"' for n in ds.features)
    (d / "dataset.toml").write_text(f'name = "tiny"\ninteractions = "inter.csv"\n[features]\n{feats}\n')
    return d


CONFIG = """
[data]
name = "{data}"

[model]
name = "graphmm"
params = {{ dim = 16, batch_size = 256, epochs = 12, patience = 3, eval_every = 2 }}

[tune]
seed = 1
startup_trials = 1

[tune.space]
lr = {{ low = 0.002, high = 0.05, log = true }}
n_layers = {{ low = 1, high = 2 }}
loss = ["bpr", "softmax"]
modalities = [["text"], ["text", "image"]]
"""


def test_read_config_rejects_bad_space(tmp_path: Path) -> None:
    p = tmp_path / "c.toml"
    p.write_text('[data]\nname = "x"\n[tune.space]\nlr = { low = 1.0, high = 0.1 }\n')
    with pytest.raises(ConfigError, match=r"tune\.space\.lr: low must be < high"):
        read_config(p)
    p.write_text('[data]\nname = "x"\n[tune]\nspaces = {}\n')
    with pytest.raises(ConfigError, match="unknown keys"):
        read_config(p)


def test_to_toml_round_trips() -> None:
    d = {
        "data": {"name": "ml100k", "options": {"cold_share": 0.1}},
        "model": {
            "name": "vbpr",
            "params": {"lr": 0.005, "modalities": ["image", "text"], "content_residual": True, "n": 3},
        },
    }
    assert tomllib.loads(to_toml(d)) == d


def test_tune_finds_better_config_resumes_and_writes_best(tmp_path: Path) -> None:
    ds = make_clustered(with_features=True)
    cfg = tmp_path / "tune.toml"
    cfg.write_text(CONFIG.format(data=write_data(ds, tmp_path)))
    out = tmp_path / "study"
    s1 = tune(cfg, 3, out)
    assert s1["n_complete"] + s1["n_pruned"] == 3 and (out / "study.sqlite").exists()
    trials = json.loads((out / "trials.json").read_text())
    assert len(trials) == 3
    values = [t["value"] for t in trials if t["state"] == "COMPLETE"]
    assert s1["best_value"] == max(values)
    # Resuming the same study continues to the requested total, reusing the SQLite file.
    s2 = tune(cfg, 5, out)
    assert len(json.loads((out / "trials.json").read_text())) == 5
    assert s2["best_value"] >= s1["best_value"]
    best = tomllib.loads((out / "best.toml").read_text())
    assert best["model"]["name"] == "graphmm" and "tune" not in best
    assert best["model"]["params"]["lr"] == pytest.approx(s2["best_params"]["lr"])
    assert best["model"]["params"]["modalities"] in (["text"], ["text", "image"])
    # The written config is a valid run config: its validation recall is what the study reported.
    from modalrec.models import create
    from modalrec.workflows.config import config_from_dict
    from modalrec.workflows.tuning import load_with_features

    c = config_from_dict(best)
    m = create(c.model.name, **c.model.params).fit(load_with_features(c), progress=False)
    assert m.meta["best_valid_recall@20"] == pytest.approx(s2["best_value"], abs=1e-6)


def test_tune_cli(tmp_path: Path) -> None:
    ds = make_clustered(with_features=True, n_users=60, n_items=60)
    cfg = tmp_path / "tune.toml"
    cfg.write_text(CONFIG.format(data=write_data(ds, tmp_path)))
    r = CliRunner().invoke(app, ["tune", str(cfg), "--trials", "2", "--out", str(tmp_path / "s")])
    assert r.exit_code == 0, r.output
    assert "best valid Recall@20" in r.output and (tmp_path / "s" / "best.toml").exists()
    bad = tmp_path / "bad.toml"
    bad.write_text(f'[data]\nname = "{tmp_path}"\n')
    r = CliRunner().invoke(app, ["tune", str(bad), "--trials", "1"])
    assert r.exit_code == 2 and "no tune.space table" in r.output


def test_bad_trials_are_pruned_on_the_validation_curve(tmp_path: Path) -> None:
    ds = make_clustered(with_features=True)
    cfg = tmp_path / "tune.toml"
    cfg.write_text(
        '[data]\nname = "unused"\n[model]\nname = "bprmf"\n'
        "params = { dim = 16, batch_size = 256, epochs = 12, patience = 6, eval_every = 1 }\n"
        "[tune]\nseed = 6\nstartup_trials = 1\n[tune.space]\nlr = [0.05, 1e-7]\n"
    )
    s = tune(cfg, 6, tmp_path / "s", dataset=ds)
    trials = json.loads((tmp_path / "s" / "trials.json").read_text())
    pruned = [t for t in trials if t["state"] == "PRUNED"]
    assert s["n_pruned"] == len(pruned) >= 1
    assert all(t["params"]["lr"] == 1e-7 for t in pruned)  # only the learning rate that cannot learn
    assert s["best_params"]["lr"] == 0.05 and all(t["steps"] < 12 for t in pruned)
