"""Catalogue endpoints: ``GET /items/{item_id}`` and ``GET /items/{item_id}/image``."""

from __future__ import annotations

import asyncio
import mimetypes
from typing import Any

from fastapi import APIRouter
from fastapi import Path as PathParam
from fastapi.responses import Response

from modalrec.core.errors import DataError
from modalrec.serving.deps import State, read_auth
from modalrec.serving.engine import Engine
from modalrec.serving.errors import ApiError
from modalrec.serving.schemas import ID_PATTERN, ItemDetail

router = APIRouter()


def _item_index(eng: Engine, item_id: str) -> int:
    i = eng.item_pos.get(item_id)
    if i is None:
        raise ApiError(404, "unknown_item", f"unknown item id {item_id!r}")
    return i


@router.get("/items/{item_id}", response_model=ItemDetail, tags=["items"])
async def item(
    state: State,
    item_id: str = PathParam(min_length=1, max_length=256, pattern=ID_PATTERN),
    _: str | None = read_auth,
) -> dict[str, Any]:
    """Catalogue entry: title, text fields, which media exist, popularity, modalities with vectors."""
    _arm, eng = state.engine_for()
    return eng.item_detail(_item_index(eng, item_id))


@router.get("/items/{item_id}/image", tags=["items"], response_class=Response)
async def item_image(
    state: State,
    item_id: str = PathParam(min_length=1, max_length=256, pattern=ID_PATTERN),
    _: str | None = read_auth,
) -> Response:
    """The item's image bytes (from a file path or a zip member of the catalogue)."""
    from modalrec.data.media import read_media_bytes

    _arm, eng = state.engine_for()
    ref = eng.media_ref(_item_index(eng, item_id), "image")
    if ref is None:
        raise ApiError(404, "no_image", f"item {item_id!r} has no image")
    try:
        data = await asyncio.to_thread(read_media_bytes, ref)
    except DataError:
        raise ApiError(404, "no_image", f"the image of item {item_id!r} cannot be read") from None
    mime = mimetypes.guess_type(ref.rsplit("#", 1)[-1])[0] or "application/octet-stream"
    return Response(data, media_type=mime, headers={"Cache-Control": "public, max-age=3600"})
