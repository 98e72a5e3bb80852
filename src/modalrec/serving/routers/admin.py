"""Admin endpoints (admin scope): ``POST /admin/reload`` (hot reload) and ``GET /admin/ab`` (A/B report)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from fastapi import APIRouter

from modalrec.core.errors import ModalrecError
from modalrec.serving.deps import State, admin_auth
from modalrec.serving.errors import ApiError
from modalrec.serving.metrics import two_proportion_test
from modalrec.serving.schemas import ReloadIn
from modalrec.serving.state import ServerState

log = logging.getLogger("modalrec.serving")

router = APIRouter()


@router.post("/admin/reload", tags=["admin"])
async def reload(state: State, body: ReloadIn | None = None, _: str | None = admin_auth) -> dict[str, Any]:
    """Load and verify a run directory, then swap it in; a broken one is refused (422), the old keeps serving."""
    body = body or ReloadIn()
    async with state.reload_lock:
        try:
            info = await asyncio.to_thread(state.reload, body.run_dir, body.run_dir_b)
        except ModalrecError as e:
            state.metrics.reloads.labels("refused").inc()
            log.error("reload refused: %s", e)
            raise ApiError(
                422, "run_dir_invalid", f"reload refused, still serving the previous run: {e}"
            ) from None
    state.metrics.reloads.labels("ok").inc()
    return {"status": "reloaded", "generation": state.generation, "arms": info}


@router.get("/admin/ab", tags=["admin"])
async def ab(state: State, _: str | None = admin_auth) -> dict[str, Any]:
    """Per-arm recommendation lists, feedback events and rates, and a two-proportion z-test (b vs a)."""
    await asyncio.to_thread(state.store.flush_impressions)
    positive = [
        e for e, w in state.cfg.feedback.event_weights.items() if w > 0 and e not in ("view", "rating")
    ]
    arms = _arm_stats(state, positive)
    return {
        "share_b": state.cfg.ab.share_b if "b" in state.engines else 0.0,
        "positive_events": positive,
        "arms": arms,
        "test": _ab_test(arms, state.cfg.ab.alpha) if "a" in arms and "b" in arms else None,
        "health": {arm: {"signals": m.signals(), "alerts": m.check()} for arm, m in state.monitors.items()},
    }


def _arm_stats(state: ServerState, positive: list[str]) -> dict[str, Any]:
    """Per arm: run directory, lists served (by source), feedback events, positive events and rate."""
    imps = state.store.impressions_by_arm()
    events = state.store.events_by_arm()
    arms: dict[str, Any] = {}
    for arm in sorted(set(state.engines) | set(imps) | set(events)):
        n = sum(imps.get(arm, {}).values())
        x = sum(v for e, v in events.get(arm, {}).items() if e in positive)
        arms[arm] = {
            "run_dir": str(state.engines[arm].path) if arm in state.engines else None,
            "recommendations": n,
            "recommendations_by_source": imps.get(arm, {}),
            "events": events.get(arm, {}),
            "positive_events": x,
            "rate": x / n if n else None,
        }
    return arms


def _ab_test(arms: dict[str, Any], alpha: float) -> dict[str, Any]:
    """Two-sided two-proportion z-test of arm b against arm a (positive events per list served)."""
    a, b = arms["a"], arms["b"]
    test = two_proportion_test(
        min(a["positive_events"], a["recommendations"]),
        a["recommendations"],
        min(b["positive_events"], b["recommendations"]),
        b["recommendations"],
    )
    test["alpha"] = alpha
    test["significant"] = test.get("p_value") is not None and test["p_value"] < alpha
    test["method"] = "two-sided two-proportion z-test on positive feedback events per recommendation list"
    return test
