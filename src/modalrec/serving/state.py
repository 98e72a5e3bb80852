"""What every request handler shares: config, API keys, the loaded engines per A/B arm, the feedback
store, metrics and health monitors, and hot reload.

One :class:`ServerState` per app, stored as ``app.state.srv``; handlers get it through
:func:`modalrec.serving.deps.get_state`. Hot reload swaps ``engines`` as one reference, so a request
that already took an engine finishes on it. The active run is recorded in the feedback store
(:mod:`modalrec.serving.active`): every server process sharing the store (the workers of one host through
its SQLite file, every host through PostgreSQL) notices a newer generation within about a second
(:meth:`ServerState.follow_active`) and loads that run itself.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from modalrec.core.errors import ModalrecError
from modalrec.serving import active
from modalrec.serving.auth import KeyStore
from modalrec.serving.engine import Engine, TextEncoderFn
from modalrec.serving.feedback import FeedbackStore
from modalrec.serving.live_items import LiveItems
from modalrec.serving.metrics import HealthMonitor, ServingMetrics
from modalrec.serving.redact import scrub_paths
from modalrec.serving.settings import ServeConfig

if TYPE_CHECKING:
    from modalrec.serving.feedback_pg import PostgresFeedbackStore

log = logging.getLogger("modalrec.serving")


class ServerState:
    """Everything the handlers share: config, keys, engines per arm, feedback store, metrics."""

    def __init__(
        self,
        run_dir: str | Path,
        cfg: ServeConfig,
        encode_text: TextEncoderFn | None,
        store: PostgresFeedbackStore | None = None,
    ) -> None:
        """``store``: a shared feedback store (PostgreSQL) opened by the caller; None opens SQLite in the state dir."""
        self.cfg = cfg
        self.keys = KeyStore(cfg.auth.keys)
        self.metrics = ServingMetrics()
        self.state_dir = cfg.state_path
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.store: FeedbackStore | PostgresFeedbackStore = (
            store if store is not None else FeedbackStore(cfg.db_path)
        )
        self._encode_text = encode_text
        self._encoder_lock = threading.Lock()
        self.reload_lock = asyncio.Lock()
        # Items added live (POST /items): stored in the state dir, applied to every engine loaded.
        self.live = LiveItems(cfg)
        run_b = cfg.resolve(cfg.ab.run_b) if cfg.ab.run_b else None
        self.engines: dict[str, Engine] = self._start(Path(run_dir), run_b)
        self.started = time.time()

    # -- text encoder shared by every engine (loaded once per process)
    def encoder(self) -> TextEncoderFn | None:
        if self._encode_text is not None or self.cfg.text_encoder == "none":
            return self._encode_text
        with self._encoder_lock:
            if self._encode_text is None:
                from modalrec.workflows.search import default_text_encoder

                self._encode_text = default_text_encoder()
                self._encode_text(["warm up"])
        return self._encode_text

    def _load(self, run_a: Path, run_b: Path | None) -> dict[str, Engine]:
        # Built HNSW indexes are kept in the state dir: a restart, a reload of the same run and the
        # second worker read them instead of building again (seconds instead of minutes at 200k items).
        cache = self.state_dir / "index-cache"
        engines = {"a": Engine(run_a, self.cfg, index_cache=cache)}
        if run_b is not None:
            engines["b"] = Engine(run_b, self.cfg, index_cache=cache)
        if any(e.galleries.get("text") is not None or e.search_index is not None for e in engines.values()):
            enc = self.encoder() if self.cfg.text_encoder != "none" or self._encode_text else None
            for e in engines.values():
                e.encode_text = enc
        self.monitors = {
            arm: HealthMonitor(arm, self.cfg.health, e.score_stats, self.metrics)
            for arm, e in engines.items()
        }
        self.live.replay(engines)
        if self.cfg.items.warm_up:
            self.live.warm_up(engines)
        for arm, e in engines.items():
            self.metrics.index_items.labels(arm).set(len(e.item_ids) + len(e.live_ids))
            if e.rec_index is not None:
                self.metrics.index_recall.labels(arm).set(
                    e.rec_index.report.get("recall_at_10", float("nan"))
                )
        return engines

    # -- A/B arms
    def arm_for(self, user_id: str) -> str:
        """Deterministic split: the same user always lands in the same arm (hash of salt + id)."""
        if "b" not in self.engines:
            return "a"
        h = int.from_bytes(hashlib.sha256(f"{self.cfg.ab.salt}\x00{user_id}".encode()).digest()[:8], "big")
        return "b" if h / 2**64 < self.cfg.ab.share_b else "a"

    def engine_for(self, user_id: str | None = None) -> tuple[str, Engine]:
        """The arm and engine serving ``user_id`` (arm a for requests without a user)."""
        engines = self.engines
        arm = self.arm_for(user_id) if user_id is not None else "a"
        return arm, engines.get(arm, engines["a"])

    # -- hot reload (the active run recorded in the feedback store: serving.active)
    def _start(self, run_a: Path, run_b: Path | None) -> dict[str, Engine]:
        """Load the runs to serve at start: the shared store's active run when it records one, else
        ``run_a``/``run_b`` (which the first server of an empty shared store records)."""
        shared = self.cfg.feedback.url is not None
        a, b, rec = active.startup_runs(self.store, run_a, run_b, shared=shared)
        engines = self._load(a, b)
        self.fingerprint = active.fingerprint(a, b)
        self._refused_generation = 0
        if shared and rec is None:
            rec = active.record(self.store, a, b, only_if_empty=True)
            if rec.fingerprint != self.fingerprint:  # another server recorded first: follow it
                rec = None
        self.generation = rec.generation if rec is not None else 0
        return engines

    def reload(self, run_dir: str | None, run_dir_b: str | None) -> dict[str, Any]:
        """Load and verify new engines (raises ModalrecError when broken), record them as the active run
        in the store (raises active.StoreUnavailable when it cannot: nothing changes), then swap them in.
        Every other process sharing the store follows."""
        a = Path(run_dir) if run_dir else self.engines["a"].path
        b = Path(run_dir_b) if run_dir_b else (self.engines["b"].path if "b" in self.engines else None)
        engines = self._load(a, b)
        rec = active.record(self.store, a, b)
        self.engines = engines  # one reference swap; in-flight requests keep the engine they hold
        self.generation, self.fingerprint = rec.generation, rec.fingerprint
        return {arm: e.info() for arm, e in engines.items()}

    def follow_active(self) -> None:
        """Another process recorded a newer active run: load and swap it in (keeps the old engines when
        it is broken or differs on this host, and does not try that generation again)."""
        rec = active.newest(self.store)
        if rec is None or rec.generation <= max(self.generation, self._refused_generation):
            return
        if rec.fingerprint == self.fingerprint and (rec.run_dir, rec.run_dir_b) == active.absolute(
            *self._paths()
        ):
            self.generation = rec.generation  # already serving it (e.g. this process recorded it)
            return
        try:
            active.check_here(rec)
            engines = self._load(*rec.paths)
        except ModalrecError as e:
            self._refused_generation = rec.generation
            self.metrics.reloads.labels("follow_refused").inc()
            log.error(
                "could not follow the active run of generation %d: %s",
                rec.generation,
                scrub_paths(active.without_paths(str(e), rec)),
            )
            return
        self.engines = engines
        self.generation, self.fingerprint = rec.generation, rec.fingerprint
        self.metrics.reloads.labels("followed").inc()
        log.info("followed reload to generation %d (run %s)", rec.generation, rec.fingerprint[:12])

    def _paths(self) -> tuple[Path, Path | None]:
        engines = self.engines
        return engines["a"].path, (engines["b"].path if "b" in engines else None)

    async def follow_forever(self, every_s: float = 1.0) -> None:
        """Poll the store's active run (skipped while this process is reloading itself); runs until cancelled."""
        while True:
            await asyncio.sleep(every_s)
            if not self.reload_lock.locked():
                await asyncio.to_thread(self.follow_active)
                try:  # items another worker process added or deleted
                    await self.live.follow(self.engines)
                except Exception:
                    log.exception("could not apply live items stored by another worker")
