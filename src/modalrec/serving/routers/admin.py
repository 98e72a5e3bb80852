"""Admin endpoints (admin scope): ``POST /admin/reload`` (hot reload) and ``GET /admin/ab`` (the
experiment report: metrics per arm, guardrails, attribution, and the test that answers; the statistics
are :mod:`modalrec.serving.abstats`, the report :func:`modalrec.serving.experiments.build_report`)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from fastapi import APIRouter

from modalrec.core.errors import ModalrecError
from modalrec.serving import experiments
from modalrec.serving.active import StoreUnavailable
from modalrec.serving.deps import State, admin_auth
from modalrec.serving.errors import ApiError
from modalrec.serving.redact import scrub_paths
from modalrec.serving.schemas import ReloadIn

log = logging.getLogger("modalrec.serving")

router = APIRouter()


@router.post("/admin/reload", tags=["admin"])
async def reload(state: State, body: ReloadIn | None = None, _: str | None = admin_auth) -> dict[str, Any]:
    """Load and verify a run directory, record it as the active run in the feedback store (every server
    process sharing the store follows), then swap it in; a broken one is refused (422), a store that
    cannot record it answers 503; either way the old run keeps serving."""
    body = body or ReloadIn()
    async with state.reload_lock:
        try:
            info = await asyncio.to_thread(state.reload, body.run_dir, body.run_dir_b)
        except StoreUnavailable as e:
            state.metrics.reloads.labels("refused").inc()
            log.error("reload not recorded: %s", scrub_paths(e, (body.run_dir, body.run_dir_b)))
            raise ApiError(
                503, "store_unavailable", f"reload not done, still serving the previous run: {e}"
            ) from None
        except ModalrecError as e:
            state.metrics.reloads.labels("refused").inc()
            log.error("reload refused: %s", scrub_paths(e, (body.run_dir, body.run_dir_b)))
            raise ApiError(
                422, "run_dir_invalid", f"reload refused, still serving the previous run: {e}"
            ) from None
    state.metrics.reloads.labels("ok").inc()
    return {"status": "reloaded", "generation": state.generation, "arms": info}


@router.get("/admin/ab", tags=["admin"])
async def ab(state: State, _: str | None = admin_auth) -> dict[str, Any]:
    """The running experiment: metrics per arm with user-clustered errors, guardrails, unattributed
    events, sample-ratio check, minimum detectable effect, and which test answered and why."""
    engines = dict(state.engines)
    exp, mode = experiments.current(state.cfg.ab, engines)
    plan = experiments.analysis_plan(state.cfg.ab, engines)
    positive = experiments.positive_events(state.cfg.ab, state.cfg.feedback.event_weights)
    report = await asyncio.to_thread(experiments.build_report, state.store, exp, mode, plan, positive)
    test = report.get("test")
    return {
        "experiment": exp,
        "mode": mode,
        "share_b": plan.share_b,
        "metric": plan.metric,
        "alpha": plan.alpha,
        "positive_events": positive,
        "runs": {arm: {"run_dir": str(e.path), "model": e.model_name} for arm, e in engines.items()},
        **report,
        "answer": test["decision"] if test else None,
        "health": {arm: {"signals": m.signals(), "alerts": m.check()} for arm, m in state.monitors.items()},
    }
