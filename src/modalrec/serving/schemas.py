"""Request and response bodies of the HTTP API (pydantic), and the id/modality patterns they share.

These models are the OpenAPI schema at ``/docs``; a field renamed here is a breaking API change.
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

ID_PATTERN = r"^[^\x00-\x1f/]{1,256}$"
MODALITY = r"^[a-z][a-z0-9_]{0,31}$"


class Item(BaseModel):
    item_id: str
    title: str | None = None
    score: float | None = None
    image_url: str | None = None


class RecommendResponse(BaseModel):
    user_id: str
    arm: str = Field(
        description="A/B arm that served the request ('a' without an A/B test, 'interleaved' when the "
        "list interleaves both arms)"
    )
    model: str
    source: Literal["model", "model+feedback", "feedback", "popularity"] = Field(
        description="model: the user's stored vector/history; +feedback: folded in live feedback; "
        "feedback: unknown user, feedback only; popularity: fallback for an unknown user without feedback"
    )
    fallback: bool
    known_user: bool
    feedback_events: int
    impression_id: str = Field(
        description="id of this list as shown; POST /feedback may name it (with the rank clicked) so the "
        "event is attributed to this list"
    )
    items: list[Item]


class SimilarResponse(BaseModel):
    item_id: str
    modality: str
    items: list[Item]


class SearchResponse(BaseModel):
    query: str
    modality: str
    items: list[Item]


class ItemDetail(Item):
    fields: dict[str, Any]
    media: dict[str, bool]
    popularity: int
    modalities: list[str]
    live: bool = Field(default=False, description="added through POST /items after the run was fitted")


class ItemIn(BaseModel):
    """``POST /items`` as JSON (no uploads: media by ``image_path`` / ``audio_path`` under the media root).
    A multipart form carries the same names as fields, any other form field being a text field, and
    the files as ``image`` / ``audio`` parts."""

    model_config = ConfigDict(extra="forbid")
    item_id: str = Field(min_length=1, max_length=256, pattern=ID_PATTERN)
    fields: dict[str, str | int | float | None] = Field(
        default_factory=dict, description="text fields by catalogue column (title, genres, ...)"
    )
    image_path: str | None = Field(
        default=None, max_length=1024, description="relative to [items] media_root"
    )
    audio_path: str | None = Field(
        default=None, max_length=1024, description="relative to [items] media_root"
    )


class ItemAdded(BaseModel):
    item_id: str
    created: bool = Field(description="False: the same id and content were added before (nothing done)")
    modalities: list[str] = Field(description="modalities the item has a vector for")
    missing: dict[str, str] = Field(description="modalities without a vector, and why")
    media: dict[str, dict[str, Any]] = Field(
        description="checked uploads: format, sha256, size in pixels or seconds"
    )
    arms: list[str] = Field(description="A/B arms whose model placed the item")


class ItemDeleted(BaseModel):
    item_id: str
    deleted: bool


class FeedbackIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    user_id: str = Field(min_length=1, max_length=256, pattern=ID_PATTERN)
    item_id: str = Field(min_length=1, max_length=256, pattern=ID_PATTERN)
    event: str = Field(
        pattern=r"^[a-z][a-z_]{0,31}$", description="e.g. click, like, purchase, rating, dislike"
    )
    value: float | None = Field(default=None, description="rating value, or a multiplier of the event weight")
    request_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=128,
        description="idempotency key: a retry with the same id is stored once",
    )
    impression_id: str | None = Field(
        default=None,
        pattern=r"^[0-9a-f]{32}$",
        description="the impression_id of the /recommend answer that showed the item",
    )
    rank: int | None = Field(
        default=None, ge=1, le=10_000, description="1-based position of the item in that answer"
    )

    @field_validator("value")
    @classmethod
    def _finite(cls, v: float | None) -> float | None:
        if v is not None and not math.isfinite(v):
            raise ValueError("value must be a finite number")
        return v


class AttributionOut(BaseModel):
    impression_id: str | None = Field(description="the impression credited (None: unattributed)")
    rank: int | None = None
    arm: str | None = None
    team: str | None = Field(default=None, description="interleaving: the arm whose list gave the item")
    how: str = Field(description="named | window | unattributed: <reason>")


class FeedbackOut(BaseModel):
    id: int
    stored: bool = True
    duplicate: bool
    arm: str
    ts: float
    attribution: AttributionOut | None = None


class ReloadIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    run_dir: str | None = Field(
        default=None, description="new run directory (default: reload the current one)"
    )
    run_dir_b: str | None = Field(default=None, description="new run directory for A/B arm b (default: keep)")


class ErrorBody(BaseModel):
    status: int
    code: str
    message: str
    details: Any = None


class ErrorResponse(BaseModel):
    error: ErrorBody


# The error statuses every route may answer (documented once, on the app).
ERRORS: dict[int | str, dict[str, Any]] = {
    s: {"model": ErrorResponse} for s in (400, 401, 403, 404, 409, 413, 422, 503)
}
