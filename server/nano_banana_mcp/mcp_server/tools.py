"""The five MCP tools: thin signatures that build a request, delegate to the service and shape the result."""

from __future__ import annotations

import base64
import functools
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Annotated

from mcp.server.elicitation import ElicitationResult
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.resolve import Resolve
from mcp.server.mcpserver.tools import Tool
from mcp_types import CallToolResult, ContentBlock, ImageContent, ResourceLink, TextContent, ToolAnnotations
from pydantic import BaseModel, Field

from nano_banana_mcp import catalog
from nano_banana_mcp.catalog import AspectRatio, GenerateRequest, ModelInfo, ModelName, OutputFormat, Resolution
from nano_banana_mcp.config import Settings
from nano_banana_mcp.errors import NanoBananaError
from nano_banana_mcp.mcp_server.apps import ui_binding
from nano_banana_mcp.mcp_server.confirm import NOT_ASKED as _NOT_ASKED
from nano_banana_mcp.mcp_server.confirm import SpendConfirmation, confirm_spend, confirmed
from nano_banana_mcp.mcp_server.http import tenant_of
from nano_banana_mcp.mcp_server.legacy import client_roots
from nano_banana_mcp.mcp_server.schema import slim_tool
from nano_banana_mcp.mcp_server.summary import DEFAULT_VIEW, HostView, host_view, summary_text
from nano_banana_mcp.mcp_server.waits import WAIT_CAP, capped, clamp_note, wait_field
from nano_banana_mcp.storage import StorageError
from nano_banana_mcp.tasks import (
    COLLECT_WAIT,
    RootsProvider,
    Service,
    Status,
    TaskList,
    TaskRecord,
    TaskResult,
    UploadedReference,
)
from nano_banana_mcp.uris import image_uri

__all__ = [
    "DEFERRAL",
    "MAX_WAIT",
    "App",
    "Deferral",
    "ModelList",
    "agent_errors",
    "build_tools",
    "generate_image",
    "get_task",
    "list_models",
    "list_tasks",
    "roots_of",
    "service_of",
    "tenant_of",
    "tool_result",
    "upload_reference",
    "view_of",
]

log = logging.getLogger(__name__)

MAX_WAIT = WAIT_CAP


@dataclass
class Deferral:
    """Set (by ``tasks_extension``) around a ``generate_image`` call that may be answered with a task: the call
    waits at most ``seconds`` for its images and leaves the rows it wrote here, for the task to follow."""

    seconds: float
    records: list[TaskRecord] = field(default_factory=list)


DEFERRAL: ContextVar[Deferral | None] = ContextVar("nano_banana_deferral", default=None)


@dataclass
class App:
    """What the lifespan builds once and every tool reads."""

    service: Service
    settings: Settings
    local: bool = False
    """The client shares the server's machine (stdio): its roots may name folders to read. Never over HTTP."""


class ModelList(BaseModel):
    models: list[ModelInfo]
    default: str


@contextmanager
def agent_errors() -> Iterator[None]:
    """Our errors are meant for the agent: hand their text over as a tool error."""
    try:
        yield
    except NanoBananaError as err:
        raise ToolError(str(err)) from err


def roots_of(ctx: Context[App]) -> RootsProvider | None:
    """The client's roots, on a connection that shares the server's machine (stdio); None over HTTP, where a
    client's folders are its own, never the server's to read."""
    return client_roots(ctx) if ctx.request_context.lifespan_context.local else None


def service_of(ctx: Context[App]) -> Service:
    """The service the lifespan built, as a tool or resource sees it."""
    return ctx.request_context.lifespan_context.service


def view_of(ctx: Context[App]) -> HostView:
    """How results are shaped for this request's client (see ``summary``)."""
    return host_view(ctx, ctx.request_context.lifespan_context.settings.preview)


async def tool_result(
    service: Service, result: TaskResult, view: HostView = DEFAULT_VIEW, clamped: str | None = None
) -> Annotated[CallToolResult, TaskResult]:
    """What ``generate_image`` and ``get_task`` return (and a completed MCP task carries): the summary (``summary``),
    a small thumbnail per saved image unless ``view`` leaves it out (or a note saying why there is none), a resource
    link per image, structured content (no image data)."""
    content: list[ContentBlock] = [TextContent(type="text", text=summary_text(result, view, clamped))]
    for index, image in enumerate(result.images):
        if image.path is None:
            continue
        location = image.path
        if view.preview:
            content.append(await _preview(service, location, index))
        content.append(
            ResourceLink(
                type="resource_link",
                name=location.rsplit("/", 1)[-1],
                uri=image.uri or image_uri(result.task_id, index),
                mime_type=image.mime_type,
                size=image.size_bytes,
                description=f"Full-size image ({image.width}x{image.height}) saved at {location}",
            )
        )
    return CallToolResult(content=content, structured_content=result.model_dump(mode="json"))


async def _preview(service: Service, location: str, index: int) -> ContentBlock:
    """The inline preview of a saved image, or a note saying why there is none (the preview is a courtesy: the result
    comes without it)."""
    try:
        data, mime = await service.thumbnail(location)
    except (OSError, ValueError, StorageError) as err:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        log.warning("no preview of %s: %s", location, reason)
        note = f"No preview of image {index + 1} ({reason}); the result stands, the image is at {location}."
        return TextContent(type="text", text=note)
    return ImageContent(type="image", data=base64.b64encode(data).decode(), mime_type=mime)


# -- tools -------------------------------------------------------------------------------------


async def generate_image(
    prompt: Annotated[str, Field(description="What to draw, or how to change the references.")],
    ctx: Context[App],
    model: Annotated[ModelName, Field(description="See the list above.")] = catalog.DEFAULT,
    aspect_ratio: Annotated[AspectRatio | None, Field(description="Width:height.")] = None,
    resolution: Annotated[Resolution | None, Field(description="Not for nano-banana-1.")] = None,
    images: Annotated[
        list[str] | None,
        Field(description="References: images[].uri, nano-banana://sets/{name}, paths, https:// or data: URIs."),
    ] = None,
    count: Annotated[int, Field(ge=1, le=catalog.MAX_COUNT, description="Images, each its own task.")] = 1,
    output_format: Annotated[OutputFormat | None, Field(description="Convert saved files.")] = None,
    wait_seconds: Annotated[float, wait_field("Then it returns the task id.")] = 45,
    request_id: Annotated[
        str | None,
        Field(min_length=1, max_length=200, description="Your id; sent again, it returns the same tasks."),
    ] = None,
    confirmation: Annotated[ElicitationResult[SpendConfirmation], Resolve(confirm_spend)] = _NOT_ASKED,
) -> Annotated[CallToolResult, TaskResult]:
    """Submit a generation and wait up to ``wait_seconds`` for its images; return them, or the task id.

    The agent reads the description ``build_tools`` passes (built from the catalogue), not this docstring.
    """
    confirmed(confirmation)  # NANO_BANANA_CONFIRM_OVER: the person said yes, or was not asked (mcp_server/confirm.py)
    with agent_errors():
        request = GenerateRequest(
            prompt=prompt,
            model=model,
            images=tuple(images or ()),
            aspect_ratio=aspect_ratio,
            resolution=resolution,
            output_format=output_format,
        )
        service = service_of(ctx)
        wait_seconds, asked = capped(wait_seconds)
        records = await service.submit(request, roots_of(ctx), count, tenant=tenant_of(), request_id=request_id)
        deferral = DEFERRAL.get()
        if deferral is not None:  # the host may carry the wait (the MCP Tasks extension): a short one here
            deferral.records, wait_seconds = records, min(wait_seconds, deferral.seconds)
        result = await service.collect(records, wait_seconds, ctx.report_progress, tenant=tenant_of())
        return await tool_result(service, result, view_of(ctx), clamp_note(asked) if asked is not None else None)


async def get_task(
    task_id: Annotated[str, Field(min_length=1, max_length=200, description="The task id from generate_image.")],
    ctx: Context[App],
    wait_seconds: Annotated[float, wait_field("Wait this long for it to finish.")] = 0,
) -> Annotated[CallToolResult, TaskResult]:
    """Status and images of a task; with wait_seconds, wait for it to finish first."""
    with agent_errors():
        service = service_of(ctx)
        wait_seconds, asked = capped(wait_seconds)
        result = await service.wait(task_id, wait_seconds, ctx.report_progress, tenant=tenant_of())
        return await tool_result(service, result, view_of(ctx), clamp_note(asked) if asked is not None else None)


async def list_tasks(
    ctx: Context[App],
    page: Annotated[int, Field(ge=1, le=10_000, description="Page number, from 1.")] = 1,
    page_size: Annotated[int, Field(ge=1, le=100, description="Tasks per page.")] = 20,
    status: Annotated[Status | None, Field(description="Only tasks with this status.")] = None,
) -> TaskList:
    """Recent tasks, newest first, with status and saved files."""
    with agent_errors():
        return await service_of(ctx).list_tasks(page, page_size, status, tenant=tenant_of())


async def upload_reference(
    path: Annotated[str, Field(min_length=1, max_length=4096, description="Local path of an image file.")],
    ctx: Context[App],
    set: str | None = None,  # the tool's argument; checked by the service (one-line refusals)
) -> UploadedReference:
    """Upload an image (with ``set``, any reference) and keep it in that set: see ``_UPLOAD_DESCRIPTION``."""
    with agent_errors():
        return await service_of(ctx).upload(path, client_roots=roots_of(ctx), tenant=tenant_of(), into=set)


async def list_models() -> ModelList:
    """The Nano Banana models and what each accepts: reference images, aspect ratios, resolutions."""
    return ModelList(models=catalog.model_info(), default=catalog.DEFAULT)


# -- the tool list -----------------------------------------------------------------------------


def _generate_description() -> str:
    return (
        "Generate or edit images with a Nano Banana model. Returns the saved images, or after wait_seconds a "
        f"task_id that keeps running: collect it with get_task(task_id, wait_seconds={COLLECT_WAIT}), never by "
        "generating again; if cut off, list_tasks shows it first. To edit an image, pass its images[].uri in "
        f"images.\n{catalog.summary()}"
    )


_UPLOAD_DESCRIPTION = (
    "Upload an image once; pass the URL in generate_image's images until expires_at (24 h). With set, also keep it in "
    "nano-banana://sets/{set}."
)


def build_tools() -> list[Tool]:
    """The five tools with titles, annotations, per-model schema rules, and compacted schemas; those whose results
    the MCP Apps viewer shows are bound to it (``apps.apps_only`` hides the binding from clients without Apps).

    Each server gets its own copies of tools made once per process: the SDK reads a function's signature into
    pydantic models and schemas (~40 ms for the five), and they depend on nothing but this module and the catalogue."""
    return [tool.model_copy(deep=True) for tool in _made_tools()]


@functools.cache
def _made_tools() -> tuple[Tool, ...]:
    read_only = ToolAnnotations(read_only_hint=True, idempotent_hint=True)  # destructive_hint means nothing here
    generate = Tool.from_function(
        generate_image,
        title="Generate image",
        description=_generate_description(),
        annotations=ToolAnnotations(
            read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=True
        ),
        meta=ui_binding(),
    )
    # Per-model rules (ratios, resolutions, reference counts) as JSON-schema conditionals on `model`.
    catalog.constrain(generate.parameters)
    tools = [
        generate,
        Tool.from_function(
            upload_reference,
            title="Upload reference image",
            description=_UPLOAD_DESCRIPTION,
            annotations=ToolAnnotations(
                read_only_hint=False, destructive_hint=False, idempotent_hint=True, open_world_hint=True
            ),
        ),
        Tool.from_function(
            get_task,
            title="Get task",
            annotations=read_only.model_copy(update={"open_world_hint": True}),
            meta=ui_binding(),
        ),
        Tool.from_function(
            list_tasks,
            title="List tasks",
            annotations=read_only.model_copy(update={"open_world_hint": False}),
            meta=ui_binding(),
        ),
        Tool.from_function(
            list_models,
            title="List models",
            annotations=read_only.model_copy(update={"open_world_hint": False}),
        ),
    ]
    return tuple(slim_tool(tool) for tool in tools)
