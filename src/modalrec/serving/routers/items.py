"""Catalogue endpoints: ``GET /items/{item_id}``, ``GET /items/{item_id}/image``, and the live catalogue:
``POST /items`` (add an item now) and ``DELETE /items/{item_id}`` (hide it everywhere), both with the
write scope. How an item is placed and stored: :mod:`modalrec.serving.live_items`; upload checks:
:mod:`modalrec.serving.uploads`."""

from __future__ import annotations

import asyncio
import mimetypes
from typing import Any

from fastapi import APIRouter, Request
from fastapi import Path as PathParam
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError
from starlette.datastructures import UploadFile

from modalrec.core.errors import DataError
from modalrec.serving.deps import State, read_auth, write_auth
from modalrec.serving.engine import Engine
from modalrec.serving.errors import ApiError
from modalrec.serving.live_items import LiveItemError, LiveItems, NewItem
from modalrec.serving.schemas import ID_PATTERN, ItemAdded, ItemDeleted, ItemDetail, ItemIn
from modalrec.serving.uploads import KINDS, CheckedMedia, UploadError, check_upload, read_under_root

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


@router.post(
    "/items",
    response_model=ItemAdded,
    status_code=201,
    tags=["items"],
    responses={200: {"model": ItemAdded, "description": "the same id and content were added before"}},
)
async def add_item(request: Request, state: State, _: str | None = write_auth) -> Any:
    """Add an item now: encoded with the run's encoders, placed by its cold-start model, then
    recommendable, similar and searchable at once; answered after it is stored.

    Body: JSON ``{"item_id", "fields": {...}, "image_path", "audio_path"}`` (paths under the configured
    media root), or ``multipart/form-data`` with ``item_id``, text fields by column name, and files
    ``image`` / ``audio``. 201 created, 200 the same id and content again, 409 another item with that
    id (or a model that cannot place items), 422 a bad field or upload (nothing stored).
    """
    _arm, eng = state.engine_for()
    why = eng.placement_problem()
    if why is not None:
        raise ApiError(409, "model_cannot_place", why)
    item = await _read_item(request, state.live, eng)
    try:
        answer, created = await state.live.add(state.engines, item)
    except LiveItemError as e:
        raise ApiError(e.status, e.code, e.message) from None
    return JSONResponse(ItemAdded(**answer).model_dump(), status_code=201 if created else 200)


@router.delete("/items/{item_id}", response_model=ItemDeleted, tags=["items"])
async def delete_item(
    state: State,
    item_id: str = PathParam(min_length=1, max_length=256, pattern=ID_PATTERN),
    _: str | None = write_auth,
) -> dict[str, Any]:
    """Hide an item from /recommend, /similar, /search and lookups, durably (catalogue or live item)."""
    try:
        return await state.live.delete(state.engines, item_id)
    except LiveItemError as e:
        raise ApiError(e.status, e.code, e.message) from None


async def _read_item(request: Request, live: LiveItems, eng: Engine) -> NewItem:
    """The request as a checked :class:`NewItem` (fields against the catalogue, media by
    :func:`~modalrec.serving.uploads.check_upload`); ApiError 422/403 otherwise."""
    ctype = request.headers.get("content-type", "")
    uploads: dict[str, bytes] = {}
    try:
        if ctype.startswith("multipart/form-data"):
            body = await _read_form(request, live, uploads)
        elif ctype.startswith("application/json"):
            body = ItemIn.model_validate_json(await request.body())
        else:
            raise ApiError(422, "invalid_request", "send application/json, or multipart/form-data with files")
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(x) for x in first["loc"]) or "body"
        raise ApiError(422, "invalid_request", f"{where}: {first['msg']}") from None
    allowed = live.text_fields(eng)
    unknown = sorted(k for k in body.fields if k not in allowed)
    if unknown:
        raise ApiError(
            422, "unknown_field", f"fields {unknown} are not catalogue columns; allowed: {', '.join(allowed)}"
        )
    fields = {k: str(v) for k, v in body.fields.items() if v is not None}
    paths = {"image": body.image_path, "audio": body.audio_path}
    media: dict[str, CheckedMedia] = {}
    for kind in KINDS:
        data, path = uploads.get(kind), paths[kind]
        if data is not None and path is not None:
            raise ApiError(422, "invalid_request", f"{kind}: send the file or {kind}_path, not both")
        try:
            if path is not None:
                data = await asyncio.to_thread(read_under_root, live.media_root, path, kind, live.limits)
            if data is not None:
                media[kind] = await asyncio.to_thread(check_upload, kind, data, live.limits)
        except UploadError as e:
            raise ApiError(e.status, e.code, e.message) from None
    return NewItem(body.item_id, fields, media)


async def _read_form(request: Request, live: LiveItems, uploads: dict[str, bytes]) -> ItemIn:
    """A multipart form as :class:`ItemIn`; its files (``image``, ``audio``) go into ``uploads``."""
    try:
        form = await request.form(max_files=len(KINDS), max_fields=256)
    except Exception as e:  # starlette's MultiPartException / HTTPException: a malformed form
        raise ApiError(
            422, "invalid_request", f"not a readable multipart form ({getattr(e, 'detail', e)})"
        ) from None
    raw: dict[str, Any] = {}
    for key, value in form.multi_items():
        if isinstance(value, UploadFile):
            if key not in KINDS:
                raise ApiError(422, "invalid_request", f"file field {key!r}: files go in 'image' or 'audio'")
            if key in uploads:
                raise ApiError(422, "invalid_request", f"{key}: one file per kind")
            uploads[key] = await value.read(live.limits.max_bytes + 1)
        elif key in raw:
            raise ApiError(422, "invalid_request", f"form field {key!r} appears twice")
        else:
            raw[key] = value
    return ItemIn(
        item_id=raw.pop("item_id", ""),
        image_path=raw.pop("image_path", None),
        audio_path=raw.pop("audio_path", None),
        fields=raw,
    )
