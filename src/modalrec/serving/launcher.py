"""Running the HTTP service under uvicorn: :func:`serve` (what ``modalrec serve`` calls) and the
per-worker app factory :func:`app_from_env`.

:func:`serve` verifies the run directory before any port opens, pins every worker to one compute
thread, and with ``workers > 1`` gives uvicorn's forked workers a shared Prometheus directory.
The workers build their app from environment variables (``MODALREC_SERVE_RUN_DIR``,
``MODALREC_SERVE_CONFIG``, ``MODALREC_SERVE_THREADS``, ``MODALREC_SERVE_LOG_LEVEL``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from modalrec.serving.app import create_app
from modalrec.serving.settings import ServeConfig, load_serve_config

ENV_RUN, ENV_CONFIG = "MODALREC_SERVE_RUN_DIR", "MODALREC_SERVE_CONFIG"
#: Seconds uvicorn's supervisor waits for a worker to answer its health ping before it kills and
#: replaces it (uvicorn's default is 5). Why so long: a starting worker imports torch and faiss and
#: loads the run with the GIL held for seconds at a time; on a loaded 2-core machine (load 30) that
#: passed 5 s, so workers were killed and restarted while starting (the two-worker CLI test failed
#: twice). A hung worker is now replaced after two minutes instead of five seconds.
WORKER_HEALTHCHECK_S = 120


def app_from_env() -> FastAPI:
    """App factory for uvicorn workers (``uvicorn --factory modalrec.serving.launcher:app_from_env``)."""
    import torch

    threads = int(os.environ.get("MODALREC_SERVE_THREADS", "1"))
    torch.set_num_threads(threads)
    with contextlib.suppress(Exception):
        import faiss

        faiss.omp_set_num_threads(threads)
    with contextlib.suppress(ImportError):  # BLAS pools already started in this process
        from threadpoolctl import threadpool_limits

        threadpool_limits(threads)
    logging.basicConfig(
        level=os.environ.get("MODALREC_SERVE_LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    return create_app(os.environ[ENV_RUN], os.environ.get(ENV_CONFIG) or None)


def _healthcheck_option(config_class: type) -> dict[str, Any]:
    """``timeout_worker_healthcheck=WORKER_HEALTHCHECK_S`` where uvicorn has the option (0.37 and later).

    >>> import uvicorn
    >>> _healthcheck_option(uvicorn.Config)
    {'timeout_worker_healthcheck': 120}
    """
    import inspect

    known = "timeout_worker_healthcheck" in inspect.signature(config_class).parameters
    return {"timeout_worker_healthcheck": WORKER_HEALTHCHECK_S} if known else {}


def _remove_stale_metric_dirs(state_dir: Path) -> None:
    """Drop the per-worker metric files of servers that are no longer running (a killed server
    cannot clean up after itself); directories of live servers on the same state dir are kept."""
    for d in state_dir.glob("prometheus-*"):
        pid = d.name.removeprefix("prometheus-")
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(d, ignore_errors=True)
        except PermissionError:
            pass  # alive, another user's process


def _record_local_run(run_dir: Path, cfg: ServeConfig) -> None:
    """With the per-host SQLite store, the command line decides what this host serves: record its run as
    a new generation of the active run, so the workers start from it and do not follow an old reload.
    (With a shared PostgreSQL store the fleet's record decides; see modalrec.serving.active.)"""
    from modalrec.serving import active
    from modalrec.serving.feedback import FeedbackStore

    run_b = cfg.resolve(cfg.ab.run_b) if cfg.ab.run_b else None
    store = FeedbackStore(cfg.db_path)
    try:
        active.record(store, run_dir, run_b)
    finally:
        store.close()


def serve(
    run_dir: str | Path,
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
    config: str | Path | None = None,
    *,
    log_level: str = "info",
) -> None:
    """Run the HTTP service (what ``modalrec serve RUN_DIR`` calls). Blocks until stopped.

    The run directory is verified first (a broken one raises RunDirError before any port opens).
    With ``workers > 1`` uvicorn forks processes; Prometheus counters are then aggregated across them.
    """
    import uvicorn

    from modalrec.workflows.rundir import read_manifest

    read_manifest(run_dir, verify=True)
    cfg = load_serve_config(config)
    state_dir = cfg.state_path
    state_dir.mkdir(parents=True, exist_ok=True)
    if cfg.feedback.url is None:
        _record_local_run(Path(run_dir), cfg)
    # One compute thread per worker (workers = cores): BLAS/OpenMP pools that spin on every core of
    # every worker cost many times their work under load. Set before the workers import numpy.
    threads = os.environ.setdefault("MODALREC_SERVE_THREADS", "1")
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, threads)
    os.environ[ENV_RUN] = str(Path(run_dir).resolve())
    os.environ[ENV_CONFIG] = str(Path(config).resolve()) if config else ""
    os.environ["MODALREC_SERVE_LOG_LEVEL"] = log_level
    if workers > 1:
        _remove_stale_metric_dirs(state_dir)
        prom = state_dir / f"prometheus-{os.getpid()}"
        shutil.rmtree(prom, ignore_errors=True)
        prom.mkdir(parents=True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(prom)
    uvicorn.run(
        "modalrec.serving.launcher:app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        access_log=False,  # uvicorn's access log prints raw paths (user ids); ours masks them
        log_level=log_level,
        timeout_keep_alive=30,
        **_healthcheck_option(uvicorn.Config),
    )
