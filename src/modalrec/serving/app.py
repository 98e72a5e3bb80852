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
  one keeps serving. The new run is recorded in the feedback store, and every server process sharing
  that store (the workers of a host, or every host with PostgreSQL) follows within about a second
  (:mod:`~modalrec.serving.active`).

Layout: request/response models in :mod:`~modalrec.serving.schemas`, JSON errors in
:mod:`~modalrec.serving.errors`, the shared :class:`~modalrec.serving.state.ServerState` (engines, feedback
store, hot reload) in :mod:`~modalrec.serving.state`, dependencies (state, API-key scopes) in
:mod:`~modalrec.serving.deps`, the ASGI guard (body limit, metrics, access log) in
:mod:`~modalrec.serving.middleware`, one router per area in :mod:`modalrec.serving.routers`, and the
uvicorn launcher in :mod:`~modalrec.serving.launcher`. This module assembles them.

Python use::

    from modalrec.serving import create_app, serve
    app = create_app("runs/ml100k", "serve.toml")     # an ASGI app (e.g. for TestClient)
    serve("runs/ml100k", port=8000, workers=2, config="serve.toml")
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI

from modalrec.serving.engine import TextEncoderFn
from modalrec.serving.errors import install_error_handlers
from modalrec.serving.middleware import GuardMiddleware
from modalrec.serving.routers import admin, feedback, items, ops, recommend, search, users, web
from modalrec.serving.schemas import ERRORS
from modalrec.serving.settings import ServeConfig, load_serve_config
from modalrec.serving.state import ServerState

if TYPE_CHECKING:
    from modalrec.serving.feedback_pg import PostgresFeedbackStore

__all__ = ["create_app"]


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Follow reloads by other workers while the app runs; close the feedback store at shutdown."""
    state: ServerState = app.state.srv
    task = asyncio.create_task(state.follow_forever())
    try:
        yield
    finally:
        task.cancel()
        state.store.close()
        state.live.close()


def _shared_store(cfg: ServeConfig) -> PostgresFeedbackStore | None:
    """The PostgreSQL feedback store of ``[feedback] url`` (None: SQLite in the state dir). An unreachable
    database raises ConfigError naming its address, so the server stops before it listens."""
    if cfg.feedback.url is None:
        return None
    from modalrec.serving.feedback_pg import PostgresFeedbackStore

    return PostgresFeedbackStore(cfg.feedback.url, attribution_window_s=cfg.ab.attribution_window_s)


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
    shared = _shared_store(cfg)  # a PostgreSQL store is checked before the (slower) engine load
    try:
        state = ServerState(run_dir, cfg, encode_text, store=shared)
    except BaseException:
        if shared is not None:
            shared.close()
        raise
    state.store.attribution_window_s = cfg.ab.attribution_window_s
    app = FastAPI(
        title="modalrec",
        version="0.1.0",
        summary="Multimodal recommendations, similar items and text search over a trained run directory",
        lifespan=lifespan,
        responses=ERRORS,
    )
    app.state.srv = state
    app.add_middleware(
        GuardMiddleware,
        max_body=cfg.limits.max_body_bytes,
        salt=cfg.auth.log_salt,
        # POST /items carries up to one image and one audio file, each checked in serving.uploads
        large_bodies={"/items": 2 * cfg.items.max_upload_bytes + 1_048_576},
    )
    install_error_handlers(app)
    app.include_router(web.router)
    web.mount_static(app)
    app.include_router(ops.router)
    app.include_router(recommend.build_router(cfg.limits))
    app.include_router(search.build_router(cfg.limits))
    app.include_router(items.router)
    app.include_router(users.router)
    app.include_router(feedback.router)
    app.include_router(admin.router)
    return app


def __getattr__(name: str) -> Any:
    # serve and app_from_env moved to modalrec.serving.launcher; still importable from here
    # (e.g. ``uvicorn --factory modalrec.serving.app:app_from_env``).
    if name in ("serve", "app_from_env"):
        from modalrec.serving import launcher

        return getattr(launcher, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
