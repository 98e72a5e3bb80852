"""Open operational endpoints: ``GET /health`` and ``GET /metrics`` (Prometheus)."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response

from modalrec.serving.deps import State

router = APIRouter()


@router.get("/health", tags=["ops"])
async def health(state: State) -> dict[str, Any]:
    """Liveness plus what is loaded (model, index kind and its measured recall@10) and health signals."""
    return {
        "status": "ok",
        "generation": state.generation,
        "uptime_s": round(time.time() - state.started, 1),
        "arms": {arm: e.info() for arm, e in state.engines.items()},
        "signals": {arm: m.signals() for arm, m in state.monitors.items()},
        "alerts": {arm: m.active for arm, m in state.monitors.items()},
    }


@router.get("/metrics", tags=["ops"], response_class=Response)
async def metrics(state: State) -> Response:
    """Prometheus text format: requests, latency histograms, feedback counts, index size and recall."""
    return Response(state.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")
