"""``GET /recommend/{user_id}``: top-k items for a user, live feedback folded in."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query
from fastapi import Path as PathParam

from modalrec.serving.deps import State, read_auth
from modalrec.serving.schemas import ID_PATTERN, RecommendResponse
from modalrec.serving.settings import LimitsConfig


def build_router(limits: LimitsConfig) -> APIRouter:
    """The router with ``k`` capped at ``limits.max_k`` (the cap is part of the OpenAPI schema)."""
    router = APIRouter()

    @router.get("/recommend/{user_id}", response_model=RecommendResponse, tags=["recommend"])
    async def recommend(
        state: State,
        user_id: str = PathParam(min_length=1, max_length=256, pattern=ID_PATTERN),
        k: int = Query(10, ge=1, le=limits.max_k),
        exclude_seen: bool = Query(
            True, description="leave out items the user interacted with or gave feedback on"
        ),
        _: str | None = read_auth,
    ) -> dict[str, Any]:
        """Top-k items for a user; unknown users get popularity (flagged), their live feedback folded in."""
        arm, eng = state.engine_for(user_id)
        fb = state.store.for_user(user_id)
        u = eng.user_pos.get(user_id)
        ids, scores, source = eng.recommend_index(u, fb, k, exclude_seen=exclude_seen)
        state.metrics.recommendations.labels(arm, source).inc()
        state.store.count_impressions(arm, source)
        state.monitors[arm].record_recommendation(source, float(scores[0]) if len(scores) else None)
        return {
            "user_id": user_id,
            "arm": arm,
            "model": eng.model_name,
            "source": source,
            "fallback": source == "popularity",
            "known_user": u is not None,
            "feedback_events": len(fb),
            "items": [eng.item_brief(int(i), float(s)) for i, s in zip(ids, scores, strict=True)],
        }

    return router
