"""``nano-banana://usage``: the caller's own usage over MCP (today and this month, by model and resolution, with its
daily limit), as JSON.

A resource rather than a tool: reading what was spent changes nothing, an agent or the viewer reads it when it needs
to, and ``tools/list`` (paid for in every conversation's context) stays as small as it is. The tenant is the caller's
own (its bearer token's); nobody reads another tenant's usage here (the operator has ``nano-banana-mcp usage``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ResourceError

from nano_banana_mcp.errors import NanoBananaError
from nano_banana_mcp.mcp_server.http import tenant_of

if TYPE_CHECKING:
    from nano_banana_mcp.mcp_server.tools import App

__all__ = ["USAGE_URI", "UsageResource"]

USAGE_URI = "nano-banana://usage"


class UsageResource:
    """The resource, reading the service of the server's running lifespan (``app``, set by the lifespan: a static
    resource is given no context)."""

    def __init__(self) -> None:
        self.app: App | None = None

    def install(self, mcp: MCPServer[App]) -> None:
        @mcp.resource(
            USAGE_URI,
            name="usage",
            mime_type="application/json",
            description="Your images (and their cost) today and this month, by model and resolution, and your daily "
            "limit.",
        )
        async def usage_resource() -> str:
            if self.app is None:
                raise ResourceError("The server is starting; read nano-banana://usage again in a moment.")
            try:
                report = await self.app.service.usage(tenant=tenant_of())
            except NanoBananaError as err:
                raise ResourceError(str(err)) from err
            return report.model_dump_json(indent=2)
