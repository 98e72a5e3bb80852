"""The Ray backend on a local Ray runtime of 2 CPUs (one per module): data-parallel `modalrec fit` with
2 workers against a local fit, a worker SIGKILLed mid-training and the run resumed from Ray's last
checkpoint, distributed evaluation equal to the local evaluator, `modalrec tune --backend ray`
resumed, and a wrong address refused at start-up with one line naming it."""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pg_cluster import pg_cluster_fixture  # noqa: F401  (the throw-away PostgreSQL cluster fixture)
from typer.testing import CliRunner

from modalrec.cli import app
from modalrec.data.dataset import Dataset
from modalrec.evaluation.protocol import evaluate
from modalrec.models.base import create
from synthetic import make_clustered

ray = pytest.importorskip("ray")
pytest.importorskip("ray.train")


@pytest.fixture(scope="module")
def ray_local() -> Iterator[Any]:
    """One local Ray runtime for the module (2 CPUs: the two Ray Train workers), shut down after."""
    # the Ray Train controller notices finished and dead workers at this interval (default 2 s)
    os.environ["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"] = "0.5"
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()
    os.environ.pop("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", None)


def write_data(ds: Dataset, d: Path) -> Path:
    """The data set as a folder with a dataset.toml: interactions with a fixed split (x_label)."""
    rows = ["user,item,x_label"]
    for label, m in enumerate((ds.train, ds.valid, ds.test)):
        coo = m.tocoo()
        rows += [f"{u},{i},{label}" for u, i in zip(coo.row, coo.col, strict=True)]
    (d / "inter.csv").write_text("\n".join(rows) + "\n")
    (d / "dataset.toml").write_text('name = "tiny"\ninteractions = "inter.csv"\n')
    return d


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_wrong_address_stops_at_start_up_with_one_line(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    cfg = tmp_path / "fit.toml"
    cfg.write_text(f'[data]\nname = "{write_data(make_clustered(), data)}"\n[model]\nname = "bprmf"\n')
    port = closed_port()
    for address in (f"127.0.0.1:{port}", f"ray://127.0.0.1:{port}"):
        for cmd in (
            ["fit", str(cfg), "--out", str(tmp_path / "run"), "--backend", "ray", "--address", address],
            ["evaluate", str(tmp_path / "no-run"), "--backend", "ray", "--address", address],
        ):
            r = CliRunner().invoke(app, cmd)
            assert r.exit_code == 2, r.output
            lines = [line for line in r.output.splitlines() if line.strip()]
            assert len(lines) == 1 and f"cannot reach the Ray cluster at '{address}'" in lines[0], r.output
            assert "Traceback" not in r.output and not (tmp_path / "run").exists()


FIT = """
[data]
name = "{data}"

[model]
name = "{model}"
params = {params}

[evaluate]
ks = [10, 20]
"""


def _train_workers() -> list[Any]:
    """This test's Ray Train worker processes (descendants of this process, by their Ray title)."""
    import psutil

    out = []
    for p in psutil.Process(os.getpid()).children(recursive=True):
        try:
            if any("RayTrainWorker" in part for part in p.cmdline()):
                out.append(p)
        except psutil.Error:
            continue
    return out


def _kill_a_worker_after_two_checkpoints(store: Path, fit: threading.Thread) -> int | None:
    """SIGKILL one Ray Train worker once two checkpoints are on disk (the controller has registered the
    first: it registers them in order); the pid killed, or None if training ended first."""
    deadline = time.monotonic() + 600
    while fit.is_alive() and time.monotonic() < deadline:
        if len(list(store.glob("*/checkpoint_*"))) >= 2:
            time.sleep(0.5)
            workers = _train_workers()
            if len(workers) == 2:
                os.kill(workers[-1].pid, signal.SIGKILL)
                return int(workers[-1].pid)
        time.sleep(0.05)
    return None


def test_fit_on_two_workers_survives_a_killed_worker_and_matches_a_local_fit(
    ray_local: Any, tmp_path: Path
) -> None:
    """One Ray Train run (they cost seconds of start-up each): `modalrec fit --backend ray --workers 2`
    with a worker SIGKILLed mid-training resumes from Ray's last checkpoint and writes the run directory
    a local fit writes, with the local fit's metrics (the same global mini-batches and the averaged
    gradient: equal up to float summation order; the lost epochs are replayed with the same draws)."""
    data = tmp_path / "data"
    data.mkdir()
    write_data(make_clustered(n_users=200, n_items=100), data)
    cfg = tmp_path / "fit.toml"
    params = (
        "{ dim = 16, batch_size = 64, epochs = 10, patience = 10, eval_every = 1, "
        'propagation = "shared", steps_per_epoch = 4 }'
    )
    cfg.write_text(FIT.format(data=data, model="lightgcn", params=params))
    store = tmp_path / "ckpt"
    cmd = ["fit", str(cfg), "--out", str(tmp_path / "ray"), "--backend", "ray", "--storage", str(store)]
    result: dict[str, Any] = {}
    fit = threading.Thread(target=lambda: result.update(r=CliRunner().invoke(app, cmd)))
    fit.start()
    killed = _kill_a_worker_after_two_checkpoints(store, fit)
    fit.join(timeout=900)
    assert killed is not None, "no worker was killed: training ended before its second checkpoint was seen"
    assert result["r"].exit_code == 0, result["r"].output
    r = CliRunner().invoke(app, ["fit", str(cfg), "--out", str(tmp_path / "local"), "--quiet"])
    assert r.exit_code == 0, r.output
    from modalrec.workflows.rundir import load_run

    lr, dr = load_run(tmp_path / "local"), load_run(tmp_path / "ray")
    resumed = dr.model.meta["data_parallel"]["resumed_from_epochs"]
    assert dr.model.meta["data_parallel"]["workers"] == 2 and len(resumed) == 1 and 1 <= resumed[0] < 10
    assert dr.model.meta["epochs_run"] == 10 and len(dr.model.meta["valid_curve"]) == 10
    np.testing.assert_allclose(dr.model.item_vectors, lr.model.item_vectors, atol=1e-4)
    assert dr.model.meta["best_epoch"] == lr.model.meta["best_epoch"]
    local = json.loads((tmp_path / "local" / "metrics.json").read_text())
    dist = json.loads((tmp_path / "ray" / "metrics.json").read_text())
    for split in ("valid", "test"):
        for key in ("recall@20", "ndcg@20", "recall@10"):
            assert dist[split]["metrics"][key] == pytest.approx(local[split]["metrics"][key], abs=1e-3)
    assert sorted(p.name for p in (tmp_path / "ray").iterdir()) == sorted(
        p.name for p in (tmp_path / "local").iterdir()
    )


def test_distributed_evaluation_equals_the_local_evaluator(ray_local: Any) -> None:
    from modalrec.evaluation.distributed import evaluate_ray

    ds = make_clustered(n_users=300, n_items=90, cold_share=0.1)
    model = create("bprmf", dim=16, batch_size=128, epochs=5).fit(ds, progress=False)
    cases: list[tuple[str, int, dict[str, Any]]] = [
        ("valid", 2, {}),
        ("test", 3, {}),
        ("test", 2, {"chunk_size": 32}),
        ("test", 2, {"candidate_items": ds.cold_items}),
        ("valid", 2, {"candidate_items": ds.cold_items}),  # no relevant cold item on valid: NaN both sides
        ("test", 2, {"sample_users": 100, "seed": 3}),
    ]
    for split, tasks, kw in cases:
        loc = evaluate(model, ds, split, **kw)
        dis = evaluate_ray(model, ds, split, tasks=tasks, **kw)
        assert dis.n_users == loc.n_users and dis.population == loc.population
        assert dis.metrics.keys() == loc.metrics.keys()
        for key, value in loc.metrics.items():
            # NaN (no user with a relevant candidate, e.g. cold items on valid) on both sides
            assert dis.metrics[key] == pytest.approx(value, abs=1e-6, nan_ok=True), (kw, split, key)
        if "chunk_size" in kw:  # shard borders on the local chunk borders: equal bit for bit
            assert dis.metrics == loc.metrics
        assert dis.coverage == pytest.approx(loc.coverage, abs=1e-12)
        for key, (lo, hi) in loc.confidence.items():
            assert dis.confidence[key] == pytest.approx((lo, hi), abs=1e-6)


TUNE = """
[data]
name = "{data}"

[model]
name = "bprmf"
params = {{ dim = 8, batch_size = 128, epochs = 6, patience = 2, eval_every = 2 }}

[tune]
seed = 1
startup_trials = 1

[tune.space]
lr = {{ low = 0.002, high = 0.05, log = true }}
"""


def _tune_twice(tmp_path: Path, storage: list[str]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """`modalrec tune --backend ray --workers 2`: 2 trials, then the same command continued to 4."""
    data = tmp_path / "data"
    data.mkdir()
    write_data(make_clustered(n_users=60, n_items=60), data)
    cfg = tmp_path / "tune.toml"
    cfg.write_text(TUNE.format(data=data))
    out = tmp_path / "study"
    base = ["tune", str(cfg), "--out", str(out), "--backend", "ray", "--workers", "2", *storage]
    r = CliRunner().invoke(app, [*base, "--trials", "2"])
    assert r.exit_code == 0, r.output
    first = json.loads((out / "trials.json").read_text())
    assert 2 <= len(first) <= 3  # two tasks may start their last trials at the same moment
    assert len({t["params"]["lr"] for t in first}) == len(first)  # the tasks sample with their own seeds
    r = CliRunner().invoke(app, [*base, "--trials", "4"])
    assert r.exit_code == 0, r.output
    second = json.loads((out / "trials.json").read_text())
    assert 4 <= len(second) <= 5
    assert second[: len(first)] == first  # the study went on: earlier trials kept as they were
    assert all(t["state"] in ("COMPLETE", "PRUNED") for t in second)
    summary = json.loads((out / "best.json").read_text())
    assert summary["n_complete"] + summary["n_pruned"] == len(second)
    assert (out / "best.toml").exists()
    return first, second


def test_tune_on_ray_shares_one_sqlite_study_and_resumes(ray_local: Any, tmp_path: Path) -> None:
    _tune_twice(tmp_path, [])
    assert (tmp_path / "study" / "study.sqlite").exists()


def test_tune_on_ray_shares_one_postgresql_study(ray_local: Any, pg_cluster: Any, tmp_path: Path) -> None:
    """The study in PostgreSQL (what a cluster uses): the plain URL [feedback] url takes works as is."""
    url = pg_cluster.new_database()
    _tune_twice(tmp_path, ["--storage", url])
    assert not (tmp_path / "study" / "study.sqlite").exists()
    summary = json.loads((tmp_path / "study" / "best.json").read_text())
    assert summary["storage"].startswith("postgresql+psycopg://")
