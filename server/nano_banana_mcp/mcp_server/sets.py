"""Named reference sets over MCP: the resources ``nano-banana://sets`` (the caller's sets) and
``nano-banana://sets/{name}`` (one set and its images), each image at ``nano-banana://sets/{name}/images/{n}``, and
completion of set names.

MCP completes the variables of resource templates and the arguments of prompts, not tool arguments: a host that lets
its user pick a resource (``nano-banana://sets/{name}``) gets the caller's set names; the ``images`` of
``generate_image`` is a tool argument, which no MCP host completes today.

A static resource is read without a request context in this SDK, so :func:`request_scope` (server middleware) keeps
the request's service at hand for ``nano-banana://sets``. Everything is the caller's tenant's: another tenant's set
answers exactly like one that does not exist.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ResourceError
from mcp_types import CompleteRequestParams, CompleteResult, Completion

from nano_banana_mcp.errors import NanoBananaError
from nano_banana_mcp.mcp_server.http import tenant_of
from nano_banana_mcp.mcp_server.tools import App, service_of
from nano_banana_mcp.tasks import Service
from nano_banana_mcp.uris import SET_IMAGE_URI, SET_URI, SETS_URI

__all__ = ["install_sets", "request_scope"]

_SERVICE: ContextVar[Service | None] = ContextVar("nano_banana_sets_service", default=None)


async def request_scope(ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
    """Server middleware: the request's service, for the one resource read without a context (``nano-banana://sets``)."""
    app = ctx.lifespan_context
    token = _SERVICE.set(app.service if isinstance(app, App) else None)
    try:
        return await call_next(ctx)
    finally:
        _SERVICE.reset(token)


def install_sets(mcp: MCPServer[App]) -> None:
    """Serve the sets' resources and complete set names on ``mcp`` (with :func:`request_scope` in its middleware)."""

    @mcp.resource(SETS_URI, name="sets", mime_type="application/json", description="Your named reference sets.")
    async def sets_resource() -> str:
        service = _SERVICE.get()
        if service is None:
            raise ResourceError("The server is starting; read nano-banana://sets again in a moment.")
        try:
            return (await service.sets.list_sets(tenant_of())).model_dump_json(indent=2)
        except NanoBananaError as err:
            raise ResourceError(str(err)) from err

    @mcp.resource(
        SET_URI,
        name="set",
        mime_type="application/json",
        description="A reference set and its images; pass its URI in generate_image's images to use them all.",
    )
    async def set_resource(name: str, ctx: Context[App]) -> str:
        try:
            return (await service_of(ctx).sets.get(name, tenant_of())).model_dump_json(indent=2)
        except NanoBananaError as err:
            raise ResourceError(str(err)) from err

    @mcp.resource(SET_IMAGE_URI, name="set image", description="An image of a reference set, as kept.")
    async def set_image_resource(name: str, index: str, ctx: Context[App]) -> bytes:
        if not (index.isascii() and index.isdigit() and len(index) <= 3):
            raise ResourceError(f"Set images are numbered 0, 1, 2, ...; got {index[:20]!r}.")
        try:
            return await service_of(ctx).sets.image(name, int(index), tenant_of())
        except NanoBananaError as err:
            raise ResourceError(str(err)) from err

    async def complete(ctx: ServerRequestContext[App, Any], params: CompleteRequestParams) -> CompleteResult:
        ref, argument = params.ref, params.argument
        names: list[str] = []
        if getattr(ref, "uri", None) in (SET_URI, SET_IMAGE_URI) and argument.name == "name":
            try:
                names = await ctx.lifespan_context.service.sets.names(argument.value, tenant_of())
            except NanoBananaError:
                names = []  # completion is a convenience: a database hiccup offers nothing rather than an error
        return CompleteResult(completion=Completion(values=names, total=len(names), has_more=False))

    # MCPServer's own completion decorator hands its function no request context (and so no service): the lowlevel
    # handler does, as legacy.py registers its own.
    lowlevel = mcp._lowlevel_server  # pyright: ignore[reportPrivateUsage]
    lowlevel.add_request_handler("completion/complete", CompleteRequestParams, complete)
