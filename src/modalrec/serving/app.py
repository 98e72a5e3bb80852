"""The HTTP service: FastAPI app over one (or two, for an A/B test) run directories.

Why these pieces (see also the module docstrings they point to):

- reads (``/recommend``, ``/similar``, ``/search``, ``/items``) are answered from an in-memory
  :class:`~modalrec.serving.engine.Engine`; ``/recommend`` reads the user's feedback from SQLite on
  every call so a POST to any worker is reflected at once (:mod:`modalrec.serving.feedback`);
- writes need ``Authorization: Bearer <key>``; keys are stored hashed (:mod:`modalrec.serving.auth`);
- errors are always JSON: ``{"error": {"status": 404, "code": "unknown_item", "message": "..."}}``;
- the access log names routes, not paths, and masks user ids (``u:<12 hex>``);
- ``POST /admin/reload`` loads and verifies the new run in a thread, then swaps one reference: requests
  already running finish on the engine they started with; a broken run is refused (422) and the old
  one keeps serving. Other worker processes follow within about a second (``active.json``).

Python use::

    from modalrec.serving import create_app, serve
    app = create_app("runs/ml100k", "serve.toml")     # an ASGI app (e.g. for TestClient)
    serve("runs/ml100k", port=8000, workers=2, config="serve.toml")
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import math
import mimetypes
import os
import shutil
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, Literal

from fastapi import Depends, FastAPI, Query, Request
from fastapi import Path as PathParam
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.exceptions import HTTPException as StarletteHTTPException

from modalrec.core.errors import ConfigError, DataError, ModalrecError
from modalrec.core.io import atomic_write_json
from modalrec.serving.auth import KeyStore, bearer_token, mask_user_id
from modalrec.serving.engine import Engine, TextEncoderFn
from modalrec.serving.feedback import FeedbackRow, FeedbackStore
from modalrec.serving.metrics import HealthMonitor, ServingMetrics, two_proportion_test
from modalrec.serving.settings import ServeConfig, load_serve_config

log = logging.getLogger("modalrec.serving")
access_log = logging.getLogger("modalrec.serving.access")
STATIC = Path(__file__).parent / "static"
ID_PATTERN = r"^[^\x00-\x1f/]{1,256}$"
MODALITY = r"^[a-z][a-z0-9_]{0,31}$"
POSITIVE_EVENTS_DEFAULT = ("click", "like", "add_to_cart", "purchase")


# ---------------------------------------------------------------------------------------------- models
class Item(BaseModel):
    item_id: str
    title: str | None = None
    score: float | None = None
    image_url: str | None = None


class RecommendResponse(BaseModel):
    user_id: str
    arm: str = Field(description="A/B arm that served the request ('a' without an A/B test)")
    model: str
    source: Literal["model", "model+feedback", "feedback", "popularity"] = Field(
        description="model: the user's stored vector/history; +feedback: folded in live feedback; "
        "feedback: unknown user, feedback only; popularity: fallback for an unknown user without feedback"
    )
    fallback: bool
    known_user: bool
    feedback_events: int
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

    @field_validator("value")
    @classmethod
    def _finite(cls, v: float | None) -> float | None:
        if v is not None and not math.isfinite(v):
            raise ValueError("value must be a finite number")
        return v


class FeedbackOut(BaseModel):
    id: int
    stored: bool = True
    duplicate: bool
    arm: str
    ts: float


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


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, details: Any = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.details = status, code, message, details


def _error(
    status: int, code: str, message: str, details: Any = None, headers: dict[str, str] | None = None
) -> JSONResponse:
    body: dict[str, Any] = {"status": status, "code": code, "message": message}
    if details is not None:
        body["details"] = details
    return JSONResponse({"error": body}, status_code=status, headers=headers)


ERRORS: dict[int | str, dict[str, Any]] = {
    s: {"model": ErrorResponse} for s in (400, 401, 403, 404, 413, 422, 503)
}


# ---------------------------------------------------------------------------------------------- state
class ServerState:
    """Everything the handlers share: config, keys, engines per arm, feedback store, metrics."""

    def __init__(self, run_dir: str | Path, cfg: ServeConfig, encode_text: TextEncoderFn | None) -> None:
        self.cfg = cfg
        self.keys = KeyStore(cfg.auth.keys)
        self.metrics = ServingMetrics()
        self.state_dir = cfg.state_path
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.active_file = self.state_dir / "active.json"
        self.store = FeedbackStore(cfg.db_path)
        self._encode_text = encode_text
        self._encoder_lock = threading.Lock()
        self.reload_lock = asyncio.Lock()
        run_b = cfg.resolve(cfg.ab.run_b) if cfg.ab.run_b else None
        self.engines: dict[str, Engine] = self._load(Path(run_dir), run_b)
        self.generation, self._active_mtime = self._read_active_generation()
        self.started = time.time()

    # -- text encoder shared by every engine (loaded once per process)
    def encoder(self) -> TextEncoderFn | None:
        if self._encode_text is not None or self.cfg.text_encoder == "none":
            return self._encode_text
        with self._encoder_lock:
            if self._encode_text is None:
                from modalrec.workflows.search import default_text_encoder

                self._encode_text = default_text_encoder()
                self._encode_text(["warm up"])
        return self._encode_text

    def _load(self, run_a: Path, run_b: Path | None) -> dict[str, Engine]:
        engines = {"a": Engine(run_a, self.cfg)}
        if run_b is not None:
            engines["b"] = Engine(run_b, self.cfg)
        if any(e.galleries.get("text") is not None or e.search_index is not None for e in engines.values()):
            enc = self.encoder() if self.cfg.text_encoder != "none" or self._encode_text else None
            for e in engines.values():
                e.encode_text = enc
        self.monitors = {
            arm: HealthMonitor(arm, self.cfg.health, e.score_stats, self.metrics)
            for arm, e in engines.items()
        }
        for arm, e in engines.items():
            self.metrics.index_items.labels(arm).set(len(e.item_ids))
            if e.rec_index is not None:
                self.metrics.index_recall.labels(arm).set(
                    e.rec_index.report.get("recall_at_10", float("nan"))
                )
        return engines

    def arm_for(self, user_id: str) -> str:
        """Deterministic split: the same user always lands in the same arm (hash of salt + id)."""
        if "b" not in self.engines:
            return "a"
        h = int.from_bytes(hashlib.sha256(f"{self.cfg.ab.salt}\x00{user_id}".encode()).digest()[:8], "big")
        return "b" if h / 2**64 < self.cfg.ab.share_b else "a"

    # -- hot reload
    def _read_active_generation(self) -> tuple[int, int]:
        try:
            st = self.active_file.stat()
            return int(json.loads(self.active_file.read_text()).get("generation", 0)), st.st_mtime_ns
        except (FileNotFoundError, ValueError):
            return 0, 0

    def reload(self, run_dir: str | None, run_dir_b: str | None) -> dict[str, Any]:
        """Load and verify new engines (raises ModalrecError when broken); the caller swaps them in."""
        a = Path(run_dir) if run_dir else self.engines["a"].path
        b = Path(run_dir_b) if run_dir_b else (self.engines["b"].path if "b" in self.engines else None)
        engines = self._load(a, b)
        self.engines = engines  # one reference swap; in-flight requests keep the engine they hold
        gen = max(self.generation, self._read_active_generation()[0]) + 1
        atomic_write_json(
            self.active_file, {"generation": gen, "run_dir": str(a), "run_dir_b": str(b) if b else None}
        )
        self.generation, self._active_mtime = self._read_active_generation()
        return {arm: e.info() for arm, e in engines.items()}

    def follow_active(self) -> None:
        """Another worker reloaded: load what ``active.json`` names (keeps the old engines on failure)."""
        try:
            mtime = self.active_file.stat().st_mtime_ns
        except FileNotFoundError:
            return
        if mtime == self._active_mtime:
            return
        self._active_mtime = mtime
        try:
            info = json.loads(self.active_file.read_text())
        except ValueError:
            return
        gen = int(info.get("generation", 0))
        if gen <= self.generation:
            return
        try:
            self.engines = self._load(
                Path(info["run_dir"]), Path(info["run_dir_b"]) if info.get("run_dir_b") else None
            )
            self.generation = gen
            self.metrics.reloads.labels("followed").inc()
            log.info("followed reload to generation %d (%s)", gen, info["run_dir"])
        except ModalrecError as e:
            log.error("could not follow reload to %s: %s", info.get("run_dir"), e)


# ---------------------------------------------------------------------------------------------- ASGI middleware
class GuardMiddleware:
    """Body size limit, request metrics and the masked access log, as plain ASGI (cheap per request)."""

    def __init__(
        self, app: Any, state_ref: Callable[[], ServerState | None], max_body: int, salt: str
    ) -> None:
        self.app = app
        self.state_ref = state_ref
        self.max_body = max_body
        self.salt = salt

    async def __call__(
        self, scope: dict[str, Any], receive: Callable[[], Awaitable[Any]], send: Callable[..., Any]
    ) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = {"code": 500}
        method = scope["method"]
        if method in ("POST", "PUT", "PATCH"):
            headers = dict(scope.get("headers") or [])
            declared = headers.get(b"content-length")
            too_big = declared is not None and declared.isdigit() and int(declared) > self.max_body
            body = b""
            if not too_big:
                more = True
                while more:
                    msg = await receive()
                    body += msg.get("body", b"")
                    more = msg.get("more_body", False)
                    if len(body) > self.max_body:
                        too_big = True
                        break
            if too_big:
                resp = _error(413, "body_too_large", f"request body is larger than {self.max_body} bytes")
                await resp(scope, receive, send)
                self._observe(scope, 413, t0)
                return
            sent = False

            async def replay() -> dict[str, Any]:
                nonlocal sent
                if not sent:
                    sent = True
                    return {"type": "http.request", "body": body, "more_body": False}
                return await receive()

            receive_fn: Callable[[], Awaitable[Any]] = replay
        else:
            receive_fn = receive

        async def send_wrapper(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive_fn, send_wrapper)
        finally:
            self._observe(scope, status["code"], t0)

    def _observe(self, scope: dict[str, Any], code: int, t0: float) -> None:
        dt = time.perf_counter() - t0
        route = scope.get("route")
        template = getattr(route, "path", None) or "unmatched"
        st = self.state_ref()
        if st is not None:
            st.metrics.requests.labels(template, scope["method"], str(code)).inc()
            st.metrics.latency.labels(template).observe(dt)
        if access_log.isEnabledFor(logging.INFO):
            uid = (scope.get("path_params") or {}).get("user_id")
            who = f" user={mask_user_id(uid, self.salt)}" if uid else ""
            access_log.info("%s %s%s %d %.1fms", scope["method"], template, who, code, dt * 1000)


# ---------------------------------------------------------------------------------------------- app
def create_app(
    run_dir: str | Path,
    config: ServeConfig | str | Path | None = None,
    *,
    encode_text: TextEncoderFn | None = None,
) -> FastAPI:
    """Build the FastAPI app for ``run_dir`` (verified on load; raises RunDirError when broken).

    ``config`` is a :class:`ServeConfig`, a path to a server TOML file, or None for defaults (no API
    keys: write endpoints answer 401). ``encode_text`` overrides the query encoder for ``/search``.
    """
    cfg = config if isinstance(config, ServeConfig) else load_serve_config(config)
    state = ServerState(run_dir, cfg, encode_text)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async def follow() -> None:
            while True:
                await asyncio.sleep(1.0)
                if not state.reload_lock.locked():
                    await asyncio.to_thread(state.follow_active)

        task = asyncio.create_task(follow())
        try:
            yield
        finally:
            task.cancel()
            state.store.close()

    app = FastAPI(
        title="modalrec",
        version="0.1.0",
        summary="Multimodal recommendations, similar items and text search over a trained run directory",
        lifespan=lifespan,
        responses=ERRORS,
    )
    app.state.srv = state
    app.add_middleware(
        GuardMiddleware, state_ref=lambda: state, max_body=cfg.limits.max_body_bytes, salt=cfg.auth.log_salt
    )  # type: ignore[arg-type]
    max_k = cfg.limits.max_k

    # -------------------------------------------------------------- errors
    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return _error(exc.status, exc.code, exc.message, exc.details, headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        details = [
            {"where": ".".join(str(p) for p in e.get("loc", ())), "message": e.get("msg", "")}
            for e in exc.errors()
        ]
        first = details[0] if details else {"where": "request", "message": "invalid"}
        return _error(422, "invalid_request", f"{first['where']}: {first['message']}", details)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return _error(exc.status_code, code, str(exc.detail))

    # -------------------------------------------------------------- auth
    def require(scope: str) -> Callable[[Request], Awaitable[str | None]]:
        async def check(request: Request) -> str | None:
            if scope == "read" and not cfg.auth.read_requires_key:
                return None
            token = bearer_token(request.headers.get("authorization"))
            if not state.keys:
                raise ApiError(
                    401, "auth_not_configured", f"no API keys are configured: {scope} endpoints are disabled"
                )
            if token is None:
                raise ApiError(
                    401, "missing_api_key", "this endpoint needs 'Authorization: Bearer <api key>'"
                )
            entry = state.keys.identify(token)
            if entry is None:
                raise ApiError(401, "invalid_api_key", "the API key is not valid")
            if scope not in entry.scopes:
                raise ApiError(403, "forbidden", f"the API key {entry.name!r} lacks the {scope!r} scope")
            return entry.name

        return check

    read_auth = Depends(require("read"))

    def engine_for(user_id: str | None = None) -> tuple[str, Engine]:
        engines = state.engines
        arm = state.arm_for(user_id) if user_id is not None else "a"
        return arm, engines.get(arm, engines["a"])

    # -------------------------------------------------------------- pages
    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    # -------------------------------------------------------------- health and metrics
    @app.get("/health", tags=["ops"])
    async def health() -> dict[str, Any]:
        """Liveness plus what is loaded (model, index kind and its measured recall@10) and health signals."""
        return {
            "status": "ok",
            "generation": state.generation,
            "uptime_s": round(time.time() - state.started, 1),
            "arms": {arm: e.info() for arm, e in state.engines.items()},
            "signals": {arm: m.signals() for arm, m in state.monitors.items()},
            "alerts": {arm: m.active for arm, m in state.monitors.items()},
        }

    @app.get("/metrics", tags=["ops"], response_class=Response)
    async def metrics() -> Response:
        """Prometheus text format: requests, latency histograms, feedback counts, index size and recall."""
        return Response(state.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    # -------------------------------------------------------------- reads
    @app.get("/recommend/{user_id}", response_model=RecommendResponse, tags=["recommend"])
    async def recommend(
        user_id: str = PathParam(min_length=1, max_length=256, pattern=ID_PATTERN),
        k: int = Query(10, ge=1, le=max_k),
        exclude_seen: bool = Query(
            True, description="leave out items the user interacted with or gave feedback on"
        ),
        _: str | None = read_auth,
    ) -> dict[str, Any]:
        """Top-k items for a user; unknown users get popularity (flagged), their live feedback folded in."""
        arm, eng = engine_for(user_id)
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

    @app.get("/similar/{item_id}", response_model=SimilarResponse, tags=["items"])
    async def similar(
        item_id: str = PathParam(min_length=1, max_length=256, pattern=ID_PATTERN),
        k: int = Query(10, ge=1, le=max_k),
        modality: str = Query("fused", pattern=MODALITY, description="fused | text | image | audio | ..."),
        _: str | None = read_auth,
    ) -> dict[str, Any]:
        """Items closest to ``item_id`` (cosine) in the model's item space (fused) or one modality."""
        _arm, eng = engine_for()
        if item_id not in eng.item_pos:
            raise ApiError(404, "unknown_item", f"unknown item id {item_id!r}")
        try:
            pairs = eng.similar(item_id, k, modality)
        except ConfigError as e:
            raise ApiError(400, "unsupported_modality", str(e)) from None
        except DataError as e:
            raise ApiError(404, "no_vector", e.message) from None
        return {"item_id": item_id, "modality": modality, "items": [eng.item_brief(i, s) for i, s in pairs]}

    @app.get("/search", response_model=SearchResponse, tags=["items"])
    async def search(
        q: str = Query(min_length=1, max_length=cfg.limits.max_query_chars, description="free text"),
        k: int = Query(10, ge=1, le=max_k),
        modality: str = Query(
            "text", pattern=MODALITY, description="which item vectors to match: text | image | fused ..."
        ),
        _: str | None = read_auth,
    ) -> dict[str, Any]:
        """Items matching a text query (MiniLM query embedding against the run's item vectors)."""
        if not q.strip():
            raise ApiError(422, "invalid_request", "q: the query is blank")
        _arm, eng = engine_for()
        if not eng.search_available():
            raise ApiError(
                503, "search_unavailable", "this run has no text features or aligned views to search"
            )
        try:
            pairs = await asyncio.to_thread(eng.search, q, k, modality)
        except ConfigError as e:
            raise ApiError(400, "unsupported_modality", str(e)) from None
        return {"query": q, "modality": modality, "items": [eng.item_brief(i, s) for i, s in pairs]}

    @app.get("/items/{item_id}", response_model=ItemDetail, tags=["items"])
    async def item(
        item_id: str = PathParam(min_length=1, max_length=256, pattern=ID_PATTERN), _: str | None = read_auth
    ) -> dict[str, Any]:
        """Catalogue entry: title, text fields, which media exist, popularity, modalities with vectors."""
        _arm, eng = engine_for()
        i = eng.item_pos.get(item_id)
        if i is None:
            raise ApiError(404, "unknown_item", f"unknown item id {item_id!r}")
        return eng.item_detail(i)

    @app.get("/items/{item_id}/image", tags=["items"], response_class=Response)
    async def item_image(
        item_id: str = PathParam(min_length=1, max_length=256, pattern=ID_PATTERN), _: str | None = read_auth
    ) -> Response:
        """The item's image bytes (from a file path or a zip member of the catalogue)."""
        from modalrec.data.media import read_media_bytes

        _arm, eng = engine_for()
        i = eng.item_pos.get(item_id)
        if i is None:
            raise ApiError(404, "unknown_item", f"unknown item id {item_id!r}")
        ref = eng.media_ref(i, "image")
        if ref is None:
            raise ApiError(404, "no_image", f"item {item_id!r} has no image")
        try:
            data = await asyncio.to_thread(read_media_bytes, ref)
        except DataError:
            raise ApiError(404, "no_image", f"the image of item {item_id!r} cannot be read") from None
        mime = mimetypes.guess_type(ref.rsplit("#", 1)[-1])[0] or "application/octet-stream"
        return Response(data, media_type=mime, headers={"Cache-Control": "public, max-age=3600"})

    @app.get("/users", tags=["users"])
    async def users(
        limit: int = Query(50, ge=1, le=1000), offset: int = Query(0, ge=0), _: str | None = read_auth
    ) -> dict[str, Any]:
        """A page of known user ids (for the demo page and for tests)."""
        _arm, eng = engine_for()
        return {"total": len(eng.user_ids), "users": eng.user_ids[offset : offset + limit].tolist()}

    @app.get("/users/{user_id}/history", tags=["users"])
    async def history(
        user_id: str = PathParam(min_length=1, max_length=256, pattern=ID_PATTERN),
        limit: int = Query(20, ge=1, le=500),
        _: str | None = read_auth,
    ) -> dict[str, Any]:
        """The user's training interactions and live feedback (most recent feedback last)."""
        _arm, eng = engine_for(user_id)
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

    # -------------------------------------------------------------- writes
    @app.post("/feedback", response_model=FeedbackOut, tags=["feedback"])
    async def feedback(body: FeedbackIn, key_name: str | None = Depends(require("write"))) -> dict[str, Any]:
        """Store one feedback event; the 200 is sent only after the row is committed to SQLite (WAL)."""
        arm, eng = engine_for(body.user_id)
        if body.item_id not in eng.item_pos:
            raise ApiError(404, "unknown_item", f"unknown item id {body.item_id!r}")
        weights = cfg.feedback.event_weights
        if body.event not in weights:
            raise ApiError(422, "unknown_event", f"event must be one of: {', '.join(sorted(weights))}")
        if body.event == "rating" and body.value is None:
            raise ApiError(422, "invalid_request", "a rating event needs a value")
        row = FeedbackRow(body.user_id, body.item_id, body.event, body.value, arm, request_id=body.request_id)
        try:
            stored = (await asyncio.wrap_future(state.store.submit([row])))[0]
        except Exception as e:  # the write failed: tell the client it was NOT stored
            log.error("feedback write failed: %s", e)
            raise ApiError(
                503, "store_unavailable", "feedback could not be stored; retry with the same request_id"
            ) from None
        if not stored.duplicate:
            state.metrics.feedback.labels(arm, body.event).inc()
            state.monitors[arm].record_feedback()
        log.debug(
            "feedback %s from %s via key %s",
            body.event,
            mask_user_id(body.user_id, cfg.auth.log_salt),
            key_name,
        )
        return {"id": stored.id, "duplicate": stored.duplicate, "arm": arm, "ts": stored.ts}

    # -------------------------------------------------------------- admin
    admin_auth = Depends(require("admin"))

    @app.post("/admin/reload", tags=["admin"])
    async def reload(body: ReloadIn | None = None, _: str | None = admin_auth) -> dict[str, Any]:
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

    @app.get("/admin/ab", tags=["admin"])
    async def ab(_: str | None = admin_auth) -> dict[str, Any]:
        """Per-arm recommendation lists, feedback events and rates, and a two-proportion z-test (b vs a)."""
        await asyncio.to_thread(state.store.flush_impressions)
        imps = state.store.impressions_by_arm()
        events = state.store.events_by_arm()
        positive = [e for e, w in cfg.feedback.event_weights.items() if w > 0 and e not in ("view", "rating")]
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
        test = None
        if "a" in arms and "b" in arms:
            a, b = arms["a"], arms["b"]
            test = two_proportion_test(
                min(a["positive_events"], a["recommendations"]),
                a["recommendations"],
                min(b["positive_events"], b["recommendations"]),
                b["recommendations"],
            )
            test["alpha"] = cfg.ab.alpha
            test["significant"] = test.get("p_value") is not None and test["p_value"] < cfg.ab.alpha
            test["method"] = (
                "two-sided two-proportion z-test on positive feedback events per recommendation list"
            )
        return {
            "share_b": cfg.ab.share_b if "b" in state.engines else 0.0,
            "positive_events": positive,
            "arms": arms,
            "test": test,
            "health": {
                arm: {"signals": m.signals(), "alerts": m.check()} for arm, m in state.monitors.items()
            },
        }

    return app


# ---------------------------------------------------------------------------------------------- running
ENV_RUN, ENV_CONFIG = "MODALREC_SERVE_RUN_DIR", "MODALREC_SERVE_CONFIG"


def app_from_env() -> FastAPI:
    """App factory for uvicorn workers (``uvicorn --factory modalrec.serving.app:app_from_env``)."""
    import torch

    threads = int(os.environ.get("MODALREC_SERVE_THREADS", "1"))
    torch.set_num_threads(threads)
    with contextlib.suppress(Exception):
        import faiss

        faiss.omp_set_num_threads(threads)
    with contextlib.suppress(ImportError):  # BLAS pools already started in this process
        from threadpoolctl import threadpool_limits

        threadpool_limits(threads)
    logging.basicConfig(
        level=os.environ.get("MODALREC_SERVE_LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    return create_app(os.environ[ENV_RUN], os.environ.get(ENV_CONFIG) or None)


def _remove_stale_metric_dirs(state_dir: Path) -> None:
    """Drop the per-worker metric files of servers that are no longer running (a killed server
    cannot clean up after itself); directories of live servers on the same state dir are kept."""
    for d in state_dir.glob("prometheus-*"):
        pid = d.name.removeprefix("prometheus-")
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            shutil.rmtree(d, ignore_errors=True)
        except PermissionError:
            pass  # alive, another user's process


def serve(
    run_dir: str | Path,
    host: str = "127.0.0.1",
    port: int = 8000,
    workers: int = 1,
    config: str | Path | None = None,
    *,
    log_level: str = "info",
) -> None:
    """Run the HTTP service (what ``modalrec serve RUN_DIR`` calls). Blocks until stopped.

    The run directory is verified first (a broken one raises RunDirError before any port opens).
    With ``workers > 1`` uvicorn forks processes; Prometheus counters are then aggregated across them.
    """
    import uvicorn

    from modalrec.workflows.rundir import read_manifest

    read_manifest(run_dir, verify=True)
    cfg = load_serve_config(config)
    state_dir = cfg.state_path
    state_dir.mkdir(parents=True, exist_ok=True)
    (state_dir / "active.json").unlink(missing_ok=True)  # start from the run named here, not an old reload
    # One compute thread per worker (workers = cores): BLAS/OpenMP pools that spin on every core of
    # every worker cost many times their work under load. Set before the workers import numpy.
    threads = os.environ.setdefault("MODALREC_SERVE_THREADS", "1")
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, threads)
    os.environ[ENV_RUN] = str(Path(run_dir).resolve())
    os.environ[ENV_CONFIG] = str(Path(config).resolve()) if config else ""
    os.environ["MODALREC_SERVE_LOG_LEVEL"] = log_level
    if workers > 1:
        _remove_stale_metric_dirs(state_dir)
        prom = state_dir / f"prometheus-{os.getpid()}"
        shutil.rmtree(prom, ignore_errors=True)
        prom.mkdir(parents=True)
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(prom)
    uvicorn.run(
        "modalrec.serving.app:app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        access_log=False,  # uvicorn's access log prints raw paths (user ids); ours masks them
        log_level=log_level,
        timeout_keep_alive=30,
    )
