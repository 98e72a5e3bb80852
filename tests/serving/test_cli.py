"""`modalrec serve` as users run it: a real process with 2 uvicorn workers, a key made by `serve-key`."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
from serving_helpers import free_port

CLI = [sys.executable, "-c", "from modalrec.cli import main; main()"]


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout)


def test_serve_two_workers(runs, tmp_path: Path) -> None:
    out = run_cli("serve-key", "--name", "ops", "--scopes", "read,write,admin")
    assert out.returncode == 0, out.stderr
    key = re.search(r"(mr_\S+)", out.stdout).group(1)
    entry = out.stdout[out.stdout.index("[[auth.keys]]") :]
    assert key not in entry, "only the hash goes into the config"
    cfg = tmp_path / "serve.toml"
    cfg.write_text(f'state_dir = "state"\ntext_encoder = "none"\n{entry}')
    stale = tmp_path / "state" / "prometheus-999999999"  # metric files of a server killed earlier
    stale.mkdir(parents=True)
    port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [*CLI, "serve", str(runs["bpr"]), "--port", str(port), "--workers", "2", "--config", str(cfg)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        with httpx.Client(base_url=url, timeout=10) as c:
            while True:
                assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
                try:
                    if c.get("/health").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "server did not come up"
                time.sleep(0.3)
            assert not stale.exists()
            h = {"Authorization": f"Bearer {key}"}
            body = {"user_id": "cli-user", "item_id": "i5", "event": "like"}
            assert c.post("/feedback", json=body, headers=h).status_code == 200
            assert c.post("/feedback", json=body).status_code == 401
            # whichever worker answers sees the feedback (shared SQLite, read per request)
            for _ in range(6):
                r = c.get("/recommend/cli-user").json()
                assert r["source"] == "feedback" and r["feedback_events"] == 1
            # counters of both workers are aggregated in /metrics (prometheus multiprocess mode)
            metrics = c.get("/metrics").text
            n = sum(
                float(line.rsplit(" ", 1)[1])
                for line in metrics.splitlines()
                if line.startswith("modalrec_recommendations_total{")
            )
            assert n == 6, metrics
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_serve_refuses_broken_run_and_bad_options(runs, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from modalrec.cli import app

    runner = CliRunner()
    out = runner.invoke(app, ["serve", str(runs["broken"]), "--port", str(free_port())])
    assert out.exit_code == 2 and "sha256" in out.output, out.output
    out = runner.invoke(app, ["serve", str(runs["bpr"]), "--config", str(tmp_path / "nope.toml")])
    assert out.exit_code == 2 and "not found" in out.output
    out = runner.invoke(app, ["serve-key", "--scopes", "read,root"])
    assert out.exit_code == 2 and "--scopes" in out.output


def test_serve_activate_records_the_run_in_the_local_store(runs, tmp_path: Path) -> None:
    """`modalrec serve-activate` verifies the run, records a new generation in the config's store (here
    the SQLite file in state_dir, which the host's workers follow), `--show` prints it; a broken run
    or a missing argument is refused with one line and records nothing."""
    from typer.testing import CliRunner

    from modalrec.cli import app

    cfg = tmp_path / "serve.toml"
    cfg.write_text('state_dir = "state"\ntext_encoder = "none"\n')
    runner = CliRunner()
    out = runner.invoke(app, ["serve-activate", "--show", "--config", str(cfg)])
    assert out.exit_code == 0 and "no active run recorded yet" in out.output, out.output
    out = runner.invoke(app, ["serve-activate", str(runs["knn"]), "--config", str(cfg)])
    assert out.exit_code == 0 and "generation 1 activated" in out.output, out.output
    out = runner.invoke(app, ["serve-activate", str(runs["broken"]), "--config", str(cfg)])
    assert out.exit_code == 2 and "sha256" in out.output, out.output
    out = runner.invoke(app, ["serve-activate", "--config", str(cfg)])
    assert out.exit_code == 2 and "RUN_DIR" in out.output, out.output
    out = runner.invoke(app, ["serve-activate", "--show", "--config", str(cfg)])
    assert out.exit_code == 0 and "generation 1 active" in out.output, out.output
    assert str(Path(runs["knn"]).resolve()) in out.output.replace("\n", "")


def test_entry_points_importable() -> None:
    """``serve`` moved to serving.launcher; the old import paths (and uvicorn factory string) still work."""
    import modalrec.serving
    from modalrec.serving import app, launcher

    assert modalrec.serving.serve is launcher.serve and app.serve is launcher.serve
    assert modalrec.serving.create_app is app.create_app
    assert app.app_from_env is launcher.app_from_env
