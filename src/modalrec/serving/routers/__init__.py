"""The HTTP routes, one :class:`fastapi.APIRouter` per area (included in this order by
:func:`modalrec.serving.app.create_app`):

- :mod:`.web`: the demo page at ``/`` (and ``/static``);
- :mod:`.ops`: ``/health`` and ``/metrics`` (open);
- :mod:`.recommend`: ``/recommend/{user_id}``;
- :mod:`.search`: ``/similar/{item_id}`` and ``/search``;
- :mod:`.items`: ``/items/{item_id}`` and ``/items/{item_id}/image``;
- :mod:`.users`: ``/users`` and ``/users/{user_id}/history``;
- :mod:`.feedback`: ``POST /feedback`` (write scope);
- :mod:`.admin`: ``POST /admin/reload`` and ``GET /admin/ab`` (admin scope).

Routers whose query limits come from the server config (``limits.max_k``, ``limits.max_query_chars``,
part of the OpenAPI schema) are built per app by ``build_router(limits)``; the others are
module-level ``router`` objects. Shared state always comes from :mod:`modalrec.serving.deps`.
"""
