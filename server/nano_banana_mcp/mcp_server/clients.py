"""Which host is on the other end, and the results shaped for OpenClaw.

OpenClaw (checked with 2026.9.6; its MCP client says ``clientInfo.name`` ``openclaw-bundle-mcp`` and declares no
capabilities) shows the model a tool result as text: ``structuredContent`` pretty-printed first, then each block
(``src/agents/mcp-content.ts``, ``projectMcpCallToolResultContent``). With Tool Search, on by default, the whole
result is serialized once more as JSON, ``structuredContent`` a second time under ``details``, and an image block
becomes its base64 text. So for OpenClaw a result carries no ``structuredContent`` (and ``tools/list`` no
``outputSchema``, which would require it): the first text block (``summary``) already says everything, once.
"""

from __future__ import annotations

from typing import Any

from mcp.server.context import CallNext, HandlerResult, ServerRequestContext

__all__ = ["OPENCLAW_CLIENTS", "client_name", "is_openclaw", "openclaw_results"]

OPENCLAW_CLIENTS = ("openclaw",)
"""``clientInfo.name`` prefixes of OpenClaw's MCP clients (2026.9.6 sends ``openclaw-bundle-mcp``)."""


def client_name(session: Any) -> str:
    """The ``clientInfo.name`` (lower case) a session's client gave, or "" when it gave none."""
    params = getattr(session, "client_params", None)
    info = getattr(params, "client_info", None)
    name = getattr(info, "name", None)
    return name.strip().lower() if isinstance(name, str) else ""


def is_openclaw(session: Any) -> bool:
    """The client is OpenClaw's."""
    return client_name(session).startswith(OPENCLAW_CLIENTS)


async def openclaw_results(ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
    """Server middleware: for OpenClaw, ``tools/list`` without output schemas and ``tools/call`` results without
    ``structuredContent`` (see the module's docstring). Other clients, and other methods, pass untouched."""
    result = await call_next(ctx)
    if ctx.method not in ("tools/list", "tools/call") or not isinstance(result, dict) or not is_openclaw(ctx.session):
        return result
    if ctx.method == "tools/list" and isinstance(tools := result.get("tools"), list):
        listed = [_without(tool, "outputSchema") if isinstance(tool, dict) else tool for tool in tools]
        return {**result, "tools": listed}
    return _without(result, "structuredContent")


def _without(item: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in item.items() if k != key}
