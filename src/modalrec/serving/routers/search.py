"""Vector lookups: ``/similar/{item_id}`` (nearest items) and ``/search`` (text query)."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Query
from fastapi import Path as PathParam

from modalrec.core.errors import ConfigError, DataError
from modalrec.serving.deps import State, read_auth
from modalrec.serving.errors import ApiError
from modalrec.serving.schemas import ID_PATTERN, MODALITY, SearchResponse, SimilarResponse
from modalrec.serving.settings import LimitsConfig


def build_router(limits: LimitsConfig) -> APIRouter:
    """The router with ``k`` capped at ``limits.max_k`` and ``q`` at ``limits.max_query_chars``."""
    router = APIRouter()
    max_k = limits.max_k

    @router.get("/similar/{item_id}", response_model=SimilarResponse, tags=["items"])
    async def similar(
        state: State,
        item_id: str = PathParam(min_length=1, max_length=256, pattern=ID_PATTERN),
        k: int = Query(10, ge=1, le=max_k),
        modality: str = Query("fused", pattern=MODALITY, description="fused | text | image | audio | ..."),
        _: str | None = read_auth,
    ) -> dict[str, Any]:
        """Items closest to ``item_id`` (cosine) in the model's item space (fused) or one modality."""
        _arm, eng = state.engine_for()
        if item_id not in eng.item_pos:
            raise ApiError(404, "unknown_item", f"unknown item id {item_id!r}")
        try:
            pairs = eng.similar(item_id, k, modality)
        except ConfigError as e:
            raise ApiError(400, "unsupported_modality", str(e)) from None
        except DataError as e:
            raise ApiError(404, "no_vector", e.message) from None
        return {"item_id": item_id, "modality": modality, "items": [eng.item_brief(i, s) for i, s in pairs]}

    @router.get("/search", response_model=SearchResponse, tags=["items"])
    async def search(
        state: State,
        q: str = Query(min_length=1, max_length=limits.max_query_chars, description="free text"),
        k: int = Query(10, ge=1, le=max_k),
        modality: str = Query(
            "text", pattern=MODALITY, description="which item vectors to match: text | image | fused ..."
        ),
        _: str | None = read_auth,
    ) -> dict[str, Any]:
        """Items matching a text query (MiniLM query embedding against the run's item vectors)."""
        if not q.strip():
            raise ApiError(422, "invalid_request", "q: the query is blank")
        _arm, eng = state.engine_for()
        if not eng.search_available():
            raise ApiError(
                503, "search_unavailable", "this run has no text features or aligned views to search"
            )
        try:
            pairs = await asyncio.to_thread(eng.search, q, k, modality)
        except ConfigError as e:
            raise ApiError(400, "unsupported_modality", str(e)) from None
        return {"query": q, "modality": modality, "items": [eng.item_brief(i, s) for i, s in pairs]}

    return router
