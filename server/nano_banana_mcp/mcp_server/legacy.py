"""2025-era shims: what only handshake (``2025-11-25`` and older) connections have or need.

``resources/subscribe``, which the 2026 subscription bus does not reach, and the client's roots,
which a client can declare only on a legacy connection.
"""

from __future__ import annotations

import logging
import warnings
import weakref
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from urllib.request import url2pathname

import anyio
from mcp.server.connection import Connection
from mcp.server.context import ServerRequestContext
from mcp.server.mcpserver import Context, MCPServer
from mcp.shared.exceptions import MCPDeprecationWarning, MCPError
from mcp_types import INVALID_PARAMS, EmptyResult, SubscribeRequestParams, UnsubscribeRequestParams

from nano_banana_mcp.mcp_server.watch import MAX_WATCHED, Known, connection_of
from nano_banana_mcp.uris import parse_task_uri

__all__ = ["LegacySubscribers", "client_roots"]

log = logging.getLogger(__name__)


class LegacySubscribers:
    """``resources/subscribe`` for 2025-era clients, which the 2026 subscription bus does not reach.

    Only this server's own task URIs of tasks in the ledger can be subscribed, at most
    ``MAX_PER_SESSION`` (:data:`~nano_banana_mcp.mcp_server.watch.MAX_WATCHED`) per connection; a connection's
    subscriptions live in its own state and are dropped when it closes, so a client cannot grow the server's memory
    by subscribing.
    """

    MAX_PER_SESSION = MAX_WATCHED
    _STATE_KEY = "nano_banana.subscriptions"

    def __init__(self, known: Known) -> None:
        """``known(lifespan_state, task_id)`` tells whether a task may be subscribed to."""
        self._known = known
        self._connections: weakref.WeakSet[Connection] = weakref.WeakSet()

    def install(self, mcp: MCPServer[Any]) -> None:
        """Serve ``resources/subscribe`` and ``resources/unsubscribe`` on ``mcp``."""

        async def subscribe(ctx: ServerRequestContext[Any], params: SubscribeRequestParams) -> EmptyResult:
            uri = str(params.uri)
            task_id = parse_task_uri(uri)
            if task_id is None or not await self._known(ctx.lifespan_context, task_id):
                raise MCPError(INVALID_PARAMS, f"No such task resource: {uri[:200]}. Subscribe to a task's URI.")
            connection = connection_of(ctx)
            uris: set[str] = connection.state.setdefault(self._STATE_KEY, set())
            if uri not in uris and len(uris) >= self.MAX_PER_SESSION:
                raise MCPError(INVALID_PARAMS, f"At most {self.MAX_PER_SESSION} subscriptions per session.")
            if connection not in self._connections:
                self._connections.add(connection)
                connection.exit_stack.callback(self._connections.discard, connection)  # dropped when it closes
            uris.add(uri)
            return EmptyResult()

        async def unsubscribe(ctx: ServerRequestContext[Any], params: UnsubscribeRequestParams) -> EmptyResult:
            connection_of(ctx).state.get(self._STATE_KEY, set()).discard(str(params.uri))
            return EmptyResult()

        # MCPServer has no public way to add these handlers yet; the SDK's migration guide shows this one:
        # https://github.com/modelcontextprotocol/python-sdk/blob/main/docs/migration.md#registering-lowlevel-handlers-from-mcpserver
        lowlevel = mcp._lowlevel_server  # pyright: ignore[reportPrivateUsage]
        lowlevel.add_request_handler("resources/subscribe", SubscribeRequestParams, subscribe)
        lowlevel.add_request_handler("resources/unsubscribe", UnsubscribeRequestParams, unsubscribe)

    def count(self) -> int:
        """Subscriptions held now, over every open connection."""
        return sum(len(c.state.get(self._STATE_KEY, ())) for c in list(self._connections))

    async def notify(self, uri: str) -> None:
        """Tell each connection subscribed to ``uri`` that it changed; a subscription is good for one update."""
        for connection in list(self._connections):
            uris: set[str] = connection.state.get(self._STATE_KEY, set())
            if uri not in uris:
                continue
            uris.discard(uri)
            try:
                await connection.outbound.notify("notifications/resources/updated", {"uri": uri})
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                log.debug("subscriber of %s is gone", uri)


def client_roots(ctx: Context[Any]) -> Callable[[], Awaitable[list[Path]]]:
    """The folders the MCP client declares as roots (2025-era connections that offer them), as paths (unresolved:
    :class:`~nano_banana_mcp.tasks.References` judges each). Asked for only on stdio (see ``tools``)."""

    async def roots() -> list[Path]:
        capabilities = ctx.client_capabilities
        if capabilities is None or capabilities.roots is None:
            return []
        try:
            with warnings.catch_warnings():  # roots are a 2025-era feature, and those clients are who have them
                warnings.simplefilter("ignore", MCPDeprecationWarning)
                listed = await ctx.session.list_roots()
        except (MCPError, anyio.BrokenResourceError, anyio.ClosedResourceError) as err:
            log.warning("could not list the client's roots: %s", err)
            return []
        return [
            Path(url2pathname(parts.path))
            for root in listed.roots
            if (parts := urlsplit(str(root.uri))).scheme == "file"
        ]

    return roots
