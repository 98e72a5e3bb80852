"""User endpoints: ``GET /users`` (known ids) and ``GET /users/{user_id}/history``.

Private by default: both need a read key even when the catalogue reads are open, unless the demo
switch ``[auth] open_user_data = true`` opens them (they list who uses the service and what each did).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query
from fastapi import Path as PathParam

from modalrec.serving.deps import State, user_data_auth
from modalrec.serving.schemas import ID_PATTERN

router = APIRouter()


@router.get("/users", tags=["users"])
async def users(
    state: State,
    limit: int = Query(50, ge=1, le=1000),
    offset: int = Query(0, ge=0),
    _: str | None = user_data_auth,
) -> dict[str, Any]:
    """A page of known user ids (for the demo page and for tests)."""
    _arm, eng = state.engine_for()
    return {"total": len(eng.user_ids), "users": eng.user_ids[offset : offset + limit].tolist()}


@router.get("/users/{user_id}/history", tags=["users"])
async def history(
    state: State,
    user_id: str = PathParam(min_length=1, max_length=256, pattern=ID_PATTERN),
    limit: int = Query(20, ge=1, le=500),
    _: str | None = user_data_auth,
) -> dict[str, Any]:
    """The user's training interactions and live feedback (most recent feedback last)."""
    _arm, eng = state.engine_for(user_id)
    fb = state.store.for_user(user_id)
    return {
        "user_id": user_id,
        "known_user": user_id in eng.user_pos,
        "items": [eng.item_brief(i) for i in eng.history(user_id, limit)],
        "feedback": [
            {
                "item_id": it,
                "event": ev,
                "value": val,
                **({"title": eng.title(eng.item_pos[it])} if it in eng.item_pos else {}),
            }
            for it, ev, val in fb[-limit:]
        ],
    }
