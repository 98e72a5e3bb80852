"""``POST /feedback`` (write scope): one event, answered only after it is committed to SQLite, with the
impression it was attributed to (:mod:`modalrec.serving.experiments`)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from typing import Any

from fastapi import APIRouter

from modalrec.serving import experiments
from modalrec.serving.auth import mask_user_id
from modalrec.serving.deps import State, write_auth
from modalrec.serving.errors import ApiError
from modalrec.serving.feedback import FeedbackRow
from modalrec.serving.redact import scrub_paths
from modalrec.serving.schemas import FeedbackIn, FeedbackOut

log = logging.getLogger("modalrec.serving")

router = APIRouter()


@router.post("/feedback", response_model=FeedbackOut, tags=["feedback"])
async def feedback(state: State, body: FeedbackIn, key_name: str | None = write_auth) -> dict[str, Any]:
    """Store one feedback event; the 200 is sent only after the row is committed to SQLite (WAL)."""
    arm, eng = state.engine_for(body.user_id)
    if body.item_id not in eng.item_pos:
        raise ApiError(404, "unknown_item", f"unknown item id {body.item_id!r}")
    weights = state.cfg.feedback.event_weights
    if body.event not in weights:
        raise ApiError(422, "unknown_event", f"event must be one of: {', '.join(sorted(weights))}")
    if body.event == "rating" and body.value is None:
        raise ApiError(422, "invalid_request", "a rating event needs a value")
    row = FeedbackRow(
        body.user_id,
        body.item_id,
        body.event,
        body.value,
        arm,
        request_id=body.request_id,
        impression_id=body.impression_id,
        rank=body.rank,
        experiment=experiments.current(state.cfg.ab, state.engines)[0],
    )
    try:
        stored = (await asyncio.wrap_future(state.store.submit([row])))[0]
    except Exception as e:  # the write failed: tell the client it was NOT stored
        log.error("feedback write failed: %s", scrub_paths(e))
        raise ApiError(
            503, "store_unavailable", "feedback could not be stored; retry with the same request_id"
        ) from None
    if not stored.duplicate:
        state.metrics.feedback.labels(arm, body.event).inc()
        state.monitors[arm].record_feedback()
    log.debug(
        "feedback %s from %s via key %s",
        body.event,
        mask_user_id(body.user_id, state.cfg.auth.log_salt),
        key_name,
    )
    att = stored.attribution
    return {
        "id": stored.id,
        "duplicate": stored.duplicate,
        "arm": arm,
        "ts": stored.ts,
        "attribution": None
        if att is None
        else {k: v for k, v in dataclasses.asdict(att).items() if k != "experiment"},
    }
