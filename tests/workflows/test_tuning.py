"""`modalrec tune`: Optuna search on validation Recall@20, SQLite resume, pruning, best config written,
diverged fits recorded as failed trials, trials of a killed process failed through their heartbeat."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from modalrec.cli import app
from modalrec.core.errors import ConfigError
from modalrec.data.dataset import Dataset
from modalrec.workflows import tuning
from modalrec.workflows.config import load_config, to_toml
from modalrec.workflows.tuning import read_config, tune
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


def test_read_config_checks_space_against_the_model_hyperparameters(tmp_path: Path) -> None:
    p = tmp_path / "c.toml"
    p.write_text('[data]\nname = "x"\n[model]\nname = "bprmf"\n[tune.space]\nlrr = [0.1, 0.01]\n')
    with pytest.raises(
        ConfigError,
        match=r"c\.toml: tune\.space\.lrr: model 'bprmf': unknown hyperparameter 'lrr'; allowed: .*lr",
    ):
        read_config(p)
    p.write_text('[data]\nname = "x"\n[model]\nname = "bprmf"\n[tune.space]\ndim = { low = -4, high = 8 }\n')
    with pytest.raises(
        ConfigError, match=r"c\.toml: tune\.space\.dim: model 'bprmf': hyperparameter 'dim' = -4"
    ):
        read_config(p)
    # float bounds for an int hyperparameter would draw e.g. dim = 21.17 and abort the study mid-run
    p.write_text(
        '[data]\nname = "x"\n[model]\nname = "bprmf"\n[tune.space]\ndim = { low = 8.0, high = 32.0 }\n'
    )
    with pytest.raises(ConfigError, match=r"tune\.space\.dim: 'dim' of model 'bprmf' is an integer"):
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
    assert load_config(out / "best.toml").model.params == best["model"]["params"]
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


def test_a_diverged_fit_is_a_failed_trial_with_its_reason(tmp_path: Path) -> None:
    """lr = 1e30 leaves NaN in BPR-MF (FitError): that trial is FAILED, the study goes on."""
    ds = make_clustered(with_features=True, n_users=60, n_items=60)
    cfg = tmp_path / "tune.toml"
    cfg.write_text(
        '[data]\nname = "unused"\n[model]\nname = "bprmf"\n'
        "params = { dim = 8, batch_size = 256, epochs = 3, patience = 3, eval_every = 1 }\n"
        "[tune]\nseed = 0\nwarmup_steps = 100\n[tune.space]\nlr = [0.05, 1e30]\n"
    )
    s = tune(cfg, 1, tmp_path / "s", dataset=ds)  # seed 0 draws 1e30 first, then 0.05
    trials = json.loads((tmp_path / "s" / "trials.json").read_text())
    assert [(t["state"], t["params"]["lr"]) for t in trials] == [("FAIL", 1e30), ("COMPLETE", 0.05)]
    assert trials[0]["fail_reason"].startswith("FitError: model 'bprmf': training produced")
    assert "NaN" in trials[0]["fail_reason"] and trials[0]["value"] is None
    assert s["n_complete"] == 1 and s["n_failed"] == 1 and s["best_params"]["lr"] == 0.05


KILLED = """
import os, sys, time
from modalrec.workflows import tuning
tuning.HEARTBEAT_SECONDS = 1
_, spec, _ = tuning.read_config(sys.argv[1])
study = tuning.open_study(sys.argv[2], spec.study_name, spec, 1)
def objective(trial):
    trial.suggest_float("lr", 0.01, 0.05)
    time.sleep(0.5)  # the heartbeat thread has recorded the trial as alive
    os._exit(0)      # the process dies mid-trial: the trial stays RUNNING in the storage
study.optimize(objective, n_trials=1)
"""


def test_trial_of_a_killed_process_fails_on_its_heartbeat_and_the_study_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ds = make_clustered(with_features=True, n_users=60, n_items=60)
    cfg = tmp_path / "tune.toml"
    cfg.write_text(
        '[data]\nname = "unused"\n[model]\nname = "bprmf"\n'
        "params = { dim = 8, batch_size = 256, epochs = 2, patience = 3, eval_every = 1 }\n"
        '[tune]\nstudy_name = "s"\n[tune.space]\nlr = { low = 0.01, high = 0.05 }\n'
    )
    url = f"sqlite:///{tmp_path / 'study.sqlite'}"
    subprocess.run([sys.executable, "-c", KILLED, str(cfg), url], check=True, timeout=300)
    monkeypatch.setattr(tuning, "GRACE_SECONDS", 1)
    time.sleep(2.0)  # longer than the grace period since the last heartbeat
    s = tune(cfg, 1, tmp_path / "s", storage=url, dataset=ds)
    trials = json.loads((tmp_path / "s" / "trials.json").read_text())
    assert [t["state"] for t in trials] == ["FAIL", "COMPLETE"]
    assert s["n_complete"] == 1 and s["n_failed"] == 1
