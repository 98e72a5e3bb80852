"""FastAPI dependencies shared by the routers: the server state and API-key checks.

``read_auth``, ``write_auth`` and ``admin_auth`` resolve to the name of the key used (None when the
scope is open); they raise 401 without a valid key and 403 when the key lacks the scope.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request

from modalrec.serving.auth import bearer_token
from modalrec.serving.errors import ApiError
from modalrec.serving.state import ServerState


def state_of(request: Request) -> ServerState:
    """The app's :class:`ServerState` (set by :func:`modalrec.serving.app.create_app`)."""
    state: ServerState = request.app.state.srv
    return state


async def get_state(request: Request) -> ServerState:
    """Dependency form of :func:`state_of` (async: no thread-pool hop per request)."""
    return state_of(request)


State = Annotated[ServerState, Depends(get_state)]


def require(scope: str) -> Callable[[Request], Awaitable[str | None]]:
    """A dependency that checks the Bearer key for ``scope`` (read, write or admin)."""

    async def check(request: Request) -> str | None:
        state = state_of(request)
        if scope == "read" and not state.cfg.auth.read_requires_key:
            return None
        token = bearer_token(request.headers.get("authorization"))
        if not state.keys:
            raise ApiError(
                401, "auth_not_configured", f"no API keys are configured: {scope} endpoints are disabled"
            )
        if token is None:
            raise ApiError(401, "missing_api_key", "this endpoint needs 'Authorization: Bearer <api key>'")
        entry = state.keys.identify(token)
        if entry is None:
            raise ApiError(401, "invalid_api_key", "the API key is not valid")
        if scope not in entry.scopes:
            raise ApiError(403, "forbidden", f"the API key {entry.name!r} lacks the {scope!r} scope")
        return entry.name

    return check


read_auth = Depends(require("read"))
write_auth = Depends(require("write"))
admin_auth = Depends(require("admin"))
