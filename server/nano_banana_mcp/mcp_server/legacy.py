"""2025-era shims: what only handshake (``2025-11-25`` and older) connections have or need.

``resources/subscribe``, which the 2026 subscription bus does not reach, and the client's roots,
which a client can declare only on a legacy connection.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from urllib.request import url2pathname

import anyio
from mcp.server.context import ServerRequestContext
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.session import ServerSession
from mcp.shared.exceptions import MCPDeprecationWarning, MCPError
from mcp_types import EmptyResult, SubscribeRequestParams, UnsubscribeRequestParams

__all__ = ["LegacySubscribers", "client_roots"]

log = logging.getLogger(__name__)


class LegacySubscribers:
    """``resources/subscribe`` for 2025-era clients, which the 2026 subscription bus does not reach."""

    def __init__(self) -> None:
        self._sessions: dict[str, list[ServerSession]] = {}

    def install(self, mcp: MCPServer[Any]) -> None:
        """Serve ``resources/subscribe`` and ``resources/unsubscribe`` on ``mcp``."""

        async def subscribe(ctx: ServerRequestContext[Any], params: SubscribeRequestParams) -> EmptyResult:
            self._sessions.setdefault(str(params.uri), []).append(ctx.session)
            return EmptyResult()

        async def unsubscribe(ctx: ServerRequestContext[Any], params: UnsubscribeRequestParams) -> EmptyResult:
            sessions = self._sessions.get(str(params.uri), [])
            if ctx.session in sessions:
                sessions.remove(ctx.session)
            return EmptyResult()

        # MCPServer has no public way to add these handlers yet; the SDK's migration guide shows this one:
        # https://github.com/modelcontextprotocol/python-sdk/blob/main/docs/migration.md#registering-lowlevel-handlers-from-mcpserver
        lowlevel = mcp._lowlevel_server  # pyright: ignore[reportPrivateUsage]
        lowlevel.add_request_handler("resources/subscribe", SubscribeRequestParams, subscribe)
        lowlevel.add_request_handler("resources/unsubscribe", UnsubscribeRequestParams, unsubscribe)

    async def notify(self, uri: str) -> None:
        """Tell each session subscribed to ``uri`` that it changed; a subscription is good for one update."""
        for session in self._sessions.pop(uri, []):
            try:
                await session.send_resource_updated(uri)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                log.debug("subscriber of %s is gone", uri)


def client_roots(ctx: Context[Any]) -> Callable[[], Awaitable[list[Path]]]:
    """The folders the MCP client declares as roots (2025-era connections that offer them), as paths."""

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
        paths = []
        for root in listed.roots:
            parts = urlsplit(str(root.uri))
            if parts.scheme == "file":
                paths.append(Path(await anyio.Path(url2pathname(parts.path)).resolve()))
        return paths

    return roots
