"""The active run of a serving fleet, recorded in the feedback store (table ``serving_active``).

Why in the store: hot reload must reach every server process that answers for the service. The
processes of one host share the SQLite file in ``state_dir``; the processes of many hosts share the
PostgreSQL database of ``[feedback] url``. Recording the active run there (one row per generation,
the newest wins) and polling it about once a second lets ``POST /admin/reload`` on any process, or
``modalrec serve-activate`` from any machine that reaches the store, move the whole fleet: each
process notices the newer generation, loads and verifies that run directory itself, and swaps it in
(:meth:`modalrec.serving.state.ServerState.follow_active`).

What a record holds: the run directories (absolute paths; every host must see the run at the same
path, e.g. a shared filesystem or the same deployment layout) and a fingerprint, the sha256 of their
``manifest.json`` files. The manifest lists the sha256 of every file of the run and the engine checks
them all when it loads, so a host that finds other content at the recorded path refuses to follow
(logged, counted in ``modalrec_reloads_total{outcome="follow_refused"}``) and keeps its current run.

Start-up: with a shared store (PostgreSQL) the record is the fleet's, so a server that starts while
one exists serves the recorded run, whatever its command line names (a restarted or added host
joins the fleet as it is), and the first server of an empty store records its own run. With the
per-host SQLite store, ``modalrec serve RUN`` records ``RUN`` as a new generation before its workers
start (the command line decides, as before); apps built directly by :func:`create_app` serve their
``run_dir`` and follow later records.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from modalrec.core.errors import ModalrecError, RunDirError
from modalrec.serving.redact import scrub_paths

log = logging.getLogger("modalrec.serving")

#: Both dialects; PostgreSQL adds it as schema migration 2 (feedback_pg.MIGRATIONS).
SCHEMA = """
CREATE TABLE IF NOT EXISTS serving_active (
    generation INTEGER PRIMARY KEY,
    run_dir TEXT NOT NULL,
    run_dir_b TEXT,
    fingerprint TEXT NOT NULL,
    set_at DOUBLE PRECISION NOT NULL
);
"""
NEWEST = "SELECT generation, run_dir, run_dir_b, fingerprint, set_at FROM serving_active ORDER BY generation DESC LIMIT 1"


class StoreUnavailable(ModalrecError):
    """The store could not record or read the active run (database down): nothing was activated."""


@dataclass(frozen=True)
class ActiveRun:
    """One generation of the fleet's active run."""

    generation: int
    run_dir: str
    run_dir_b: str | None
    fingerprint: str
    set_at: float

    @property
    def paths(self) -> tuple[Path, Path | None]:
        return Path(self.run_dir), (Path(self.run_dir_b) if self.run_dir_b else None)


class ActiveRunStore(Protocol):
    """What the feedback stores (SQLite and PostgreSQL) provide for the active run."""

    def active_run(self) -> ActiveRun | None:
        """The newest record, or None when no run was ever recorded (raises when the store is down)."""

    def set_active(
        self, run_dir: str, run_dir_b: str | None, fingerprint: str, *, only_if_empty: bool = False
    ) -> ActiveRun:
        """Record a new generation (``only_if_empty``: only when there is none yet) and return the
        newest record afterwards (another writer's, when it won)."""


def fingerprint(run_a: Path, run_b: Path | None) -> str:
    """sha256 over the runs' ``manifest.json`` (which hold the sha256 of every file of the run)."""
    h = hashlib.sha256()
    for d in (run_a, run_b):
        if d is None:
            h.update(b"\x00none")
            continue
        try:
            h.update((d / "manifest.json").read_bytes())
        except OSError:
            raise RunDirError(f"{d}: not a run directory (manifest.json is missing)") from None
        h.update(b"\x00")
    return h.hexdigest()


def absolute(run_a: Path, run_b: Path | None) -> tuple[str, str | None]:
    """The paths as recorded: absolute, so processes with another working directory find them."""
    return str(run_a.resolve()), (str(run_b.resolve()) if run_b is not None else None)


def record(
    store: ActiveRunStore, run_a: Path, run_b: Path | None, *, only_if_empty: bool = False
) -> ActiveRun:
    """Record ``run_a`` (and arm b) as the active run: a new generation every process follows."""
    a, b = absolute(run_a, run_b)
    fp = fingerprint(run_a, run_b)
    try:
        return store.set_active(a, b, fp, only_if_empty=only_if_empty)
    except ModalrecError:
        raise
    except Exception as e:
        raise StoreUnavailable(
            f"the active run could not be recorded in the feedback store: {_first_line(e)}"
        ) from None


def newest(store: ActiveRunStore) -> ActiveRun | None:
    """The newest record; None also while the store is unreachable (followers try again later)."""
    try:
        return store.active_run()
    except Exception as e:
        log.warning(
            "active run not readable from the feedback store, keeping the current one: %s",
            scrub_paths(_first_line(e)),
        )
        return None


def startup_runs(
    store: ActiveRunStore, run_a: Path, run_b: Path | None, *, shared: bool
) -> tuple[Path, Path | None, ActiveRun | None]:
    """Which runs a starting server loads, and the record it starts from (module docstring)."""
    rec = newest(store) if shared else _local_newest(store)
    if not shared or rec is None:
        return run_a, run_b, rec
    a, b = rec.paths
    if absolute(run_a, run_b) != (rec.run_dir, rec.run_dir_b):
        log.warning(
            "serving the active run recorded in the shared feedback store (generation %d, run %s) "
            "instead of the command line's; `modalrec serve-activate` changes it",
            rec.generation,
            rec.fingerprint[:12],
        )
    check_here(rec)
    return a, b, rec


def _local_newest(store: ActiveRunStore) -> ActiveRun | None:
    try:
        return store.active_run()
    except Exception:
        return None


def check_here(rec: ActiveRun) -> None:
    """Refuse a record whose run directories hold other content on this host than where it was set."""
    a, b = rec.paths
    if fingerprint(a, b) != rec.fingerprint:
        raise RunDirError(
            f"{rec.run_dir}: the active run of generation {rec.generation} has other content on this host "
            "than where it was activated (manifest sha256 differs); deploy the same run directory to every host"
        )


def _first_line(e: Exception) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def without_paths(message: str, rec: ActiveRun) -> str:
    """A log line's text with the run directories replaced (logs show no filesystem paths)."""
    for p in (rec.run_dir, rec.run_dir_b):
        if p:
            message = message.replace(p, "<run dir>")
    return message
