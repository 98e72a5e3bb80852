"""Open operational endpoints: ``GET /health`` and ``GET /metrics`` (Prometheus).

Both answer without a key (load balancers and scrapers have none), so neither shows filesystem
paths, secrets or user ids: ``/health`` names the run directories only to an admin key, and
``/metrics`` labels requests by route template (never the raw path) and arm.
"""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response

from modalrec.serving.deps import State, is_admin

router = APIRouter()

#: Fields of :meth:`Engine.info` shown without an admin key. A list of what may be shown rather than of
#: what may not: a field added to ``info()`` later (a path, a store location) stays private until named here.
PUBLIC_INFO = frozenset(
    [
        "model",
        "users",
        "items",
        "live_items",
        "hidden_items",
        "index",
        "modalities",
        "search",
        "load_seconds",
        "load_timings",
    ]
)


@router.get("/health", tags=["ops"])
async def health(state: State, admin: bool = is_admin) -> dict[str, Any]:
    """Liveness plus what is loaded (model, index kind and its measured recall@10) and health signals;
    with an admin key everything :meth:`Engine.info` says, including where each run was loaded from."""
    arms = {arm: e.info() for arm, e in state.engines.items()}
    if not admin:
        arms = {arm: {k: v for k, v in info.items() if k in PUBLIC_INFO} for arm, info in arms.items()}
    return {
        "status": "ok",
        "view": "admin" if admin else "public",
        "generation": state.generation,
        "uptime_s": round(time.time() - state.started, 1),
        "arms": arms,
        "signals": {arm: m.signals() for arm, m in state.monitors.items()},
        "alerts": {arm: m.active for arm, m in state.monitors.items()},
    }


@router.get("/metrics", tags=["ops"], response_class=Response)
async def metrics(state: State) -> Response:
    """Prometheus text format: requests, latency histograms, feedback counts, index size and recall."""
    return Response(state.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")
