"""What a client may watch for changes, on either era's wire, and how much of it: the one home of those limits.

A client names the resources it wants to hear about: 2025-era connections with ``resources/subscribe``
(:class:`~nano_banana_mcp.mcp_server.legacy.LegacySubscribers`), 2026 ones with ``subscriptions/listen``, whose
request names every URI at once and whose answer is a stream held open (:class:`ListenLimits`). Either way only
this server's own resources are accepted (a task of the caller's tenant that the ledger knows, or one of the
server's static resources), at most :data:`MAX_WATCHED` at once per 2025 connection or per listen stream; and a
connection or a tenant holds only a few listen streams at once. What a client names is kept only while its
connection or stream lives, so nobody can grow the server's memory by naming made-up URIs.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from mcp.server.connection import Connection
from mcp.server.context import ServerRequestContext
from mcp.server.mcpserver import MCPServer
from mcp.server.subscriptions import ListenHandler, SubscriptionBus
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_PARAMS, INVALID_REQUEST, SubscriptionsListenRequestParams, SubscriptionsListenResult

from nano_banana_mcp.mcp_server.http import tenant_of
from nano_banana_mcp.uris import parse_task_uri

__all__ = [
    "MAX_STREAMS_PER_CONNECTION",
    "MAX_STREAMS_PER_TENANT",
    "MAX_WATCHED",
    "Known",
    "ListenLimits",
    "connection_of",
]

MAX_WATCHED = 100
"""Resources one client may watch at once: a 2025 connection's subscriptions, a 2026 listen stream's URIs."""
MAX_STREAMS_PER_CONNECTION = 4
"""Listen streams open at once on one connection (a stdio pipe; over HTTP each stream is a request of its own)."""
MAX_STREAMS_PER_TENANT = 32
"""Listen streams open at once for one tenant, over every connection (with one token: everyone's)."""

"""A task's resource or one of its images; group 1 is the task's id (or the request's own, before the API's)."""

Known = Callable[[Any, str], Awaitable[bool]]
"""``known(lifespan_state, task_id)``: whether the calling request's tenant has that task in the ledger."""


def connection_of(ctx: ServerRequestContext[Any]) -> Connection:
    """The connection a low-level handler's request came on."""
    # A low-level handler's context has no public ``connection`` (the MCPServer ``Context`` has one, built
    # from this same attribute: mcp/server/context.py); the per-request session holds it.
    connection: Connection = ctx.session._connection  # pyright: ignore[reportPrivateUsage]
    return connection


class ListenLimits:
    """``subscriptions/listen`` (2026), served by the SDK's handler once the request is within the limits.

    Refused before anything is held: more than :data:`MAX_WATCHED` URIs; a URI that is neither a task of the
    caller's tenant the ledger knows (another tenant's task answers like a made-up one) nor a static resource of
    this server; a stream past :data:`MAX_STREAMS_PER_CONNECTION` or :data:`MAX_STREAMS_PER_TENANT`. A stream's
    place is given back when it ends, however it ends.
    """

    def __init__(self, bus: SubscriptionBus, known: Known, static: Callable[[], Awaitable[set[str]]]) -> None:
        self._serve = ListenHandler(bus)
        self._known = known
        self._static = static
        self._by_tenant: dict[str, int] = {}
        self._by_connection: dict[object, int] = {}

    def install(self, mcp: MCPServer[Any]) -> None:
        """Serve ``subscriptions/listen`` on ``mcp`` through these limits (instead of the SDK's handler alone)."""
        # The same low-level registration as legacy.LegacySubscribers.install (the SDK's migration guide shows it).
        lowlevel = mcp._lowlevel_server  # pyright: ignore[reportPrivateUsage]
        lowlevel.add_request_handler("subscriptions/listen", SubscriptionsListenRequestParams, self)

    def open_streams(self) -> int:
        """Listen streams open now, over every tenant."""
        return sum(self._by_tenant.values())

    async def __call__(
        self, ctx: ServerRequestContext[Any], params: SubscriptionsListenRequestParams
    ) -> SubscriptionsListenResult:
        uris = params.notifications.resource_subscriptions or []
        if len(uris) > MAX_WATCHED:
            raise MCPError(
                INVALID_PARAMS,
                f"At most {MAX_WATCHED} resources per listen stream; this one names {len(uris)}. Listen to the "
                "tasks you are waiting for.",
            )
        await self._check(ctx, uris)
        tenant = tenant_of()
        # Over HTTP each listen stream is a request of its own (there is no session); on a pipe (stdio) every
        # request shares the connection's channel, which names the connection.
        connection = None if ctx.request is not None else connection_of(ctx).outbound
        if connection is not None and self._by_connection.get(connection, 0) >= MAX_STREAMS_PER_CONNECTION:
            raise MCPError(
                INVALID_REQUEST,
                f"At most {MAX_STREAMS_PER_CONNECTION} listen streams per connection are open at once; close one, "
                "or listen to several resources on one stream.",
            )
        if self._by_tenant.get(tenant, 0) >= MAX_STREAMS_PER_TENANT:
            raise MCPError(
                INVALID_REQUEST,
                f"At most {MAX_STREAMS_PER_TENANT} listen streams per tenant are open at once; close one, or "
                "listen to several resources on one stream.",
            )
        _count(self._by_tenant, tenant, +1)
        if connection is not None:
            _count(self._by_connection, connection, +1)
        try:
            return await self._serve(ctx, params)
        finally:
            _count(self._by_tenant, tenant, -1)
            if connection is not None:
                _count(self._by_connection, connection, -1)

    async def _check(self, ctx: ServerRequestContext[Any], uris: list[str]) -> None:
        """Refuse the first URI that is not the caller's task nor a static resource (each task asked once)."""
        static: set[str] | None = None
        checked: dict[str, bool] = {}
        for uri in uris:
            task_id = parse_task_uri(uri)
            if task_id is not None:
                if task_id not in checked:
                    checked[task_id] = await self._known(ctx.lifespan_context, task_id)
                if checked[task_id]:
                    continue
            else:
                static = static if static is not None else await self._static()
                if uri in static:
                    continue
            raise MCPError(
                INVALID_PARAMS,
                f"No such resource to listen to: {uri[:200]}. Listen to your tasks' URIs "
                "(nano-banana://tasks/{task_id}).",
            )


def _count(counts: dict[Any, int], key: object, step: int) -> None:
    """Add ``step`` to ``counts[key]``, dropping the key at zero (nothing is kept for a closed stream)."""
    value = counts.get(key, 0) + step
    if value > 0:
        counts[key] = value
    else:
        counts.pop(key, None)
