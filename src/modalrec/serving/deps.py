"""FastAPI dependencies shared by the routers: the server state and API-key checks.

``read_auth``, ``write_auth``, ``admin_auth`` and ``user_data_auth`` resolve to the name of the key used
(None when the scope is open); they raise 401 without a valid key and 403 when the key lacks the scope.
``is_admin`` only tells whether an admin key came along (open endpoints show more to it).
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


def check_key(state: ServerState, header: str | None, scope: str, what: str = "this endpoint") -> str:
    """The name of the key in the ``Authorization`` header if it has ``scope``; else a 401/403 ApiError."""
    token = bearer_token(header)
    if not state.keys:
        raise ApiError(401, "auth_not_configured", f"no API keys are configured: {what} needs a {scope} key")
    if token is None:
        raise ApiError(
            401, "missing_api_key", f"{what} needs 'Authorization: Bearer <api key>' ({scope} scope)"
        )
    entry = state.keys.identify(token)
    if entry is None:
        raise ApiError(401, "invalid_api_key", "the API key is not valid")
    if scope not in entry.scopes:
        raise ApiError(403, "forbidden", f"the API key {entry.name!r} lacks the {scope!r} scope")
    return entry.name


def require(scope: str) -> Callable[[Request], Awaitable[str | None]]:
    """A dependency that checks the Bearer key for ``scope`` (read, write or admin)."""

    async def check(request: Request) -> str | None:
        state = state_of(request)
        if scope == "read" and not state.cfg.auth.read_requires_key:
            return None
        return check_key(state, request.headers.get("authorization"), scope)

    return check


async def _user_data(request: Request) -> str | None:
    """Read key for the user endpoints, unless the demo switch ``[auth] open_user_data`` makes them
    as open as the catalogue reads (``read_requires_key`` still closes both).

    Why apart from ``read_auth``: the catalogue may be public while the list of users and what each
    of them did is personal data; opening one must not open the other.
    """
    state = state_of(request)
    if state.cfg.auth.open_user_data and not state.cfg.auth.read_requires_key:
        return None
    what = "user data (/users, /users/{user_id}/history; a demo may set [auth] open_user_data = true)"
    return check_key(state, request.headers.get("authorization"), "read", what)


async def _is_admin(request: Request) -> bool:
    """Whether the request carries a valid admin key; never raises (open endpoints stay open to
    probes and to the web page's read key, which then get the public view)."""
    state = state_of(request)
    token = bearer_token(request.headers.get("authorization"))
    if token is None or not state.keys:
        return False
    entry = state.keys.identify(token)
    return entry is not None and "admin" in entry.scopes


read_auth = Depends(require("read"))
write_auth = Depends(require("write"))
admin_auth = Depends(require("admin"))
user_data_auth = Depends(_user_data)
is_admin = Depends(_is_admin)
