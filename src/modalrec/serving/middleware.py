"""Plain ASGI middleware (cheap per request): request body size limit, request metrics and the
masked access log.

The access log names route templates (``/recommend/{user_id}``), never raw paths, and shows user
ids only as salted hashes (``u:<12 hex>``, :func:`modalrec.serving.auth.mask_user_id`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from modalrec.serving.auth import mask_user_id
from modalrec.serving.errors import error_response

access_log = logging.getLogger("modalrec.serving.access")

Receive = Callable[[], Awaitable[Any]]
BODY_METHODS = ("POST", "PUT", "PATCH")


class GuardMiddleware:
    """Body size limit, request metrics and the masked access log.

    The metrics go to the :class:`~modalrec.serving.state.ServerState` of the app serving the request
    (``scope["app"].state.srv``).
    """

    def __init__(
        self, app: Any, max_body: int, salt: str, large_bodies: dict[str, int] | None = None
    ) -> None:
        """``large_bodies``: exact paths with their own body limit (uploads), others get ``max_body``."""
        self.app = app
        self.max_body = max_body
        self.salt = salt
        self.large_bodies = large_bodies or {}

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Callable[..., Any]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = {"code": 500}
        receive_fn = receive
        if scope["method"] in BODY_METHODS:
            limit = self.large_bodies.get(scope.get("path", ""), self.max_body)
            body = await self._read_body(scope, receive, limit)
            if body is None:
                resp = error_response(413, "body_too_large", f"request body is larger than {limit} bytes")
                await resp(scope, receive, send)
                self._observe(scope, 413, t0)
                return
            receive_fn = _replay(body, receive)

        async def send_wrapper(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive_fn, send_wrapper)
        finally:
            self._observe(scope, status["code"], t0)

    async def _read_body(self, scope: dict[str, Any], receive: Receive, limit: int) -> bytes | None:
        """The whole request body, or None when it is (or is declared to be) over ``limit``."""
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return None
        chunks: list[bytes] = []
        size = 0
        more = True
        while more:
            msg = await receive()
            chunk = msg.get("body", b"")
            chunks.append(chunk)
            size += len(chunk)
            more = msg.get("more_body", False)
            if size > limit:
                return None
        return b"".join(chunks)

    def _observe(self, scope: dict[str, Any], code: int, t0: float) -> None:
        dt = time.perf_counter() - t0
        route = scope.get("route")
        template = getattr(route, "path", None) or "unmatched"
        st = getattr(getattr(scope.get("app"), "state", None), "srv", None)
        if st is not None:
            st.metrics.requests.labels(template, scope["method"], str(code)).inc()
            st.metrics.latency.labels(template).observe(dt)
        if access_log.isEnabledFor(logging.INFO):
            uid = (scope.get("path_params") or {}).get("user_id")
            who = f" user={mask_user_id(uid, self.salt)}" if uid else ""
            access_log.info("%s %s%s %d %.1fms", scope["method"], template, who, code, dt * 1000)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands the already-read body over once, then defers to the server's."""
    sent = False

    async def replay() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
