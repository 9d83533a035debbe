"""The MCP Apps face (``io.modelcontextprotocol/ui``): one view that shows results where the conversation is.

``generate_image``, ``get_task`` and ``list_tasks`` name the view ``ui://nano-banana/viewer`` in their
``_meta.ui.resourceUri`` (bound in ``tools.build_tools``). A host that negotiated the extension renders their
results in it: a task's images, its progress until it finishes, its request, and the actions Variations, Edit
and Retry; or, for ``list_tasks``, a gallery of recent tasks. The view is one self-contained HTML document
(``viewer/viewer.html``: no network, no CDN) that talks to the host over the extension's postMessage JSON-RPC
and reaches this server only through the host (``tools/call``, ``resources/read``).

A client that did not negotiate the extension gets exactly what it got before: the tool list without the
binding, the resource list without the view, and tool results without the request details. The spec says a
server SHOULD check the client's capabilities before offering UI-bound tools ("Client<>Server Capability
Negotiation" in ext-apps ``specification/2026-01-26/apps.mdx``), and that is all the middleware here does.
"""

from __future__ import annotations

import functools
from importlib import resources
from typing import TYPE_CHECKING, Any

from mcp.server.apps import Apps, ResourcePermissions, client_supports_apps
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp_types import CallToolRequestParams, CallToolResult

from nano_banana_mcp.mcp_server.http import tenant_of

if TYPE_CHECKING:
    from nano_banana_mcp.tasks import Service

__all__ = [
    "BOUND_TOOLS",
    "REQUEST_META",
    "VIEWER_URI",
    "ViewerApps",
    "apps_only",
    "ui_binding",
    "viewer_html",
    "with_request",
]

VIEWER_URI = "ui://nano-banana/viewer"
BOUND_TOOLS = ("generate_image", "get_task", "list_tasks")
"""The tools whose results the view renders."""
REQUEST_META = "nano-banana/request"
"""The ``_meta`` key of a bound result that carries its request (for the view's Variations, Edit and Retry)."""
_REQUEST_TOOLS = ("generate_image", "get_task")


def ui_binding() -> dict[str, Any]:
    """The ``_meta`` of a bound tool: the spec's nested ``ui.resourceUri`` only (the flat key is deprecated)."""
    return {"ui": {"resourceUri": VIEWER_URI}}


@functools.cache
def viewer_html() -> str:
    """The view's HTML, as shipped in the package."""
    return resources.files(__package__).joinpath("viewer", "viewer.html").read_text(encoding="utf-8")


class ViewerApps(Apps):
    """The extension with our one view; bound results carry their request for clients that negotiated it.

    The request (model, ratio, resolution, references, count) is what Variations and Retry send again and what
    Edit keeps; ``get_task``'s arguments do not have it, so it comes from the ledger. It goes in the result's
    ``_meta``, which hosts give the view and keep out of the model's context.
    """

    def __init__(self) -> None:
        super().__init__()
        self.add_html_resource(
            VIEWER_URI,
            viewer_html(),
            name="viewer",
            title="Nano Banana viewer",
            description="Shows generated images, a task's progress, and recent tasks; makes variations and edits.",
            permissions=ResourcePermissions(clipboard_write={}),  # the path's copy button; it falls back without
            prefers_border=True,
        )

    async def intercept_tool_call(
        self, params: CallToolRequestParams, ctx: ServerRequestContext[Any, Any], call_next: CallNext
    ) -> HandlerResult:
        result = await call_next(ctx)
        if params.name in _REQUEST_TOOLS and isinstance(result, CallToolResult):
            await with_request(result, ctx)
        return result


async def with_request(result: CallToolResult, ctx: ServerRequestContext[Any, Any]) -> CallToolResult:
    """A tool's successful result with its request in ``_meta``, for a client that negotiated the extension (also what
    a completed MCP task of ``generate_image`` carries, in ``tasks_extension``)."""
    if not result.is_error and isinstance(result.structured_content, dict) and client_supports_apps(ctx):
        request = await _request_of(ctx.lifespan_context.service, result.structured_content)
        if request is not None:
            result.meta = {**(result.meta or {}), REQUEST_META: request}
    return result


async def _request_of(service: Service, structured: dict[str, Any]) -> dict[str, Any] | None:
    """The request behind a result (None for a task made elsewhere)."""
    task_id = structured.get("task_id")
    found = await service.request_of(task_id, tenant=tenant_of()) if isinstance(task_id, str) else None
    if found is None:
        return None
    request = found.model_dump(mode="json")
    request["count"] = max(1, len(structured.get("task_ids") or ()))
    return request


async def apps_only(ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
    """Server middleware: ``tools/list`` without the UI binding and ``resources/list`` without ``ui://``
    resources, for a client that did not negotiate the extension.

    Middleware sees the wire form (a dict) of the answer; anything else passes untouched.
    """
    result = await call_next(ctx)
    if ctx.method not in ("tools/list", "resources/list") or not isinstance(result, dict):
        return result
    if client_supports_apps(ctx):
        return result
    if ctx.method == "tools/list" and isinstance(tools := result.get("tools"), list):
        return {**result, "tools": [_unbound(tool) for tool in tools]}
    if ctx.method == "resources/list" and isinstance(listed := result.get("resources"), list):
        kept = [r for r in listed if not (isinstance(r, dict) and str(r.get("uri", "")).startswith("ui://"))]
        return {**result, "resources": kept}
    return result


def _unbound(tool: Any) -> Any:
    """A listed tool without ``_meta.ui`` (and without ``_meta`` when nothing else is in it)."""
    if not isinstance(tool, dict) or not isinstance(meta := tool.get("_meta"), dict) or "ui" not in meta:
        return tool
    rest = {k: v for k, v in meta.items() if k != "ui"}
    unbound = {k: v for k, v in tool.items() if k != "_meta"}
    return unbound | {"_meta": rest} if rest else unbound
