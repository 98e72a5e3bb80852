"""Hot reload across hosts: the active run recorded in a shared PostgreSQL store moves every server.

Two real `modalrec serve` processes (each its own state dir, as on two hosts) share one database of a
throw-away cluster (pg_cluster.py). A reload through one, or `modalrec serve-activate`, is served
by both; a server starting with another run on its command line joins the fleet's
active run. Everything skips without PostgreSQL."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from pg_cluster import PgCluster, free_port, pg_cluster_fixture, pg_url_fixture  # noqa: F401  (fixtures)
from serving_helpers import KEYS

from modalrec.serving.auth import hash_key

pytest.importorskip("psycopg")

CLI = [sys.executable, "-c", "from modalrec.cli import main; main()"]


def _config(root: Path, url: str) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    cfg = root / "serve.toml"
    cfg.write_text(
        f'state_dir = "state"\ntext_encoder = "none"\n[feedback]\nurl = "{url}"\n'
        f'[[auth.keys]]\nname = "admin"\nhash = "{hash_key(KEYS["admin"], "sha256")}"\n'
        'scopes = ["read", "write", "admin"]\n'
    )
    return cfg


class Server:
    """`modalrec serve RUN --config CFG` in its own process on a free port."""

    def __init__(self, run: Path, cfg: Path) -> None:
        self.port = free_port()
        self.log = open(cfg.parent / "server.log", "w")  # noqa: SIM115 - closed in stop()
        env = {**os.environ, "MODALREC_SERVE_THREADS": "1"}
        self.proc = subprocess.Popen(
            [*CLI, "serve", str(run), "--port", str(self.port), "--config", str(cfg)],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=30)
        deadline = time.monotonic() + 180
        while True:
            assert self.proc.poll() is None, Path(self.log.name).read_text()[-2000:]
            with contextlib.suppress(httpx.TransportError):
                if self.client.get("/health").status_code == 200:
                    return
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.25)

    def model(self) -> tuple[str, int]:
        h = self.client.get("/health").json()
        return h["arms"]["a"]["model"], h["generation"]

    def wait_for(self, model: str, timeout: float = 30.0) -> int:
        """Poll /health until arm a serves ``model``; the generation it reports then."""
        deadline = time.monotonic() + timeout
        while (got := self.model())[0] != model:
            assert time.monotonic() < deadline, f"still serving {got[0]}, expected {model}"
            time.sleep(0.2)
        return got[1]

    def stop(self) -> None:
        self.client.close()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


@pytest.fixture
def fleet(runs: dict[str, Path], tmp_path: Path, pg_url: str) -> Iterator[tuple[Server, Server, Path]]:
    """Host 1 starts with BPR (the first server of an empty store records it); host 2 starts with
    Popularity on its command line and must join the fleet's recorded BPR run."""
    cfg1, cfg2 = _config(tmp_path / "host1", pg_url), _config(tmp_path / "host2", pg_url)
    one = Server(runs["bpr"], cfg1)
    try:
        two = Server(runs["pop"], cfg2)
    except BaseException:
        one.stop()
        raise
    try:
        yield one, two, cfg2
    finally:
        one.stop()
        two.stop()


def test_reload_through_one_server_is_served_by_the_other(
    fleet: tuple[Server, Server, Path], runs: dict[str, Path]
) -> None:
    one, two, cfg2 = fleet
    assert one.model() == ("bprmf", 1)
    assert two.model() == ("bprmf", 1), "a server starting later serves the fleet's active run"

    admin = {"Authorization": f"Bearer {KEYS['admin']}"}
    r = one.client.post("/admin/reload", json={"run_dir": str(runs["knn"])}, headers=admin)
    assert r.status_code == 200 and r.json()["generation"] == 2, r.text
    assert two.wait_for("itemknn") == 2
    assert two.client.get("/recommend/u3", params={"k": 5}).json()["model"] == "itemknn"

    # a broken run is refused where it is set, and nothing is recorded for the others
    r = two.client.post("/admin/reload", json={"run_dir": str(runs["broken"])}, headers=admin)
    assert r.status_code == 422
    assert one.model() == ("itemknn", 2) and two.model() == ("itemknn", 2)

    # the CLI (e.g. in a deploy job; its own connection to the store) moves both
    from typer.testing import CliRunner

    from modalrec.cli import app

    out = CliRunner().invoke(app, ["serve-activate", str(runs["ease"]), "--config", str(cfg2)])
    assert out.exit_code == 0 and "generation 3 activated" in out.output, out.output
    assert one.wait_for("ease") == 3 and two.wait_for("ease") == 3
