"""`modalrec evaluate RUN --sample-users N --seed S` and the Python API give the same seeded sample."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from modalrec.cli import app
from modalrec.workflows.pipeline import evaluate_run

runner = CliRunner()


def test_sampled_evaluation_from_the_cli_and_the_api(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rows = ["user,item"] + [f"u{u},i{i}" for u in range(60) for i in rng.choice(40, 10, replace=False)]
    (tmp_path / "r.csv").write_text("\n".join(rows) + "\n")
    cfg = tmp_path / "run.toml"
    cfg.write_text(f'[data]\nname = "{tmp_path / "r.csv"}"\nseed = 1\n[model]\nname = "popularity"\n')
    out = tmp_path / "run"
    assert runner.invoke(app, ["fit", str(cfg), "--out", str(out), "--quiet"]).exit_code == 0
    r = runner.invoke(app, ["evaluate", str(out), "--sample-users", "25", "--seed", "3", "--json"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.output)
    api = evaluate_run(out, sample_users=25, seed=3)
    assert res["n_users"] == 25 == api.n_users and res["metrics"] == api.metrics
    sample = res["sample"]
    assert sample["seed"] == 3 and sample["population"] == api.population > 25
    lo, hi = sample["confidence"]["recall@20"]
    assert lo <= res["metrics"]["recall@20"] <= hi and hi > lo
    full = evaluate_run(out)
    assert full.n_users == api.population and not full.confidence
    r = runner.invoke(app, ["evaluate", str(out), "--sample-users", "25", "--seed", "3"])
    assert r.exit_code == 0 and "25 of" in r.output and "confidence intervals" in r.output
