"""The MCP server: thin tools over the service, resources for results, and the transports."""

from __future__ import annotations

import base64
import hmac
import logging
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit
from urllib.request import url2pathname

import anyio
from mcp.server.auth.provider import AccessToken, TokenVerifier
from mcp.server.auth.settings import AuthSettings
from mcp.server.context import ServerRequestContext
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ToolError
from mcp.server.mcpserver.tools import Tool
from mcp.server.subscriptions import InMemorySubscriptionBus, ResourceUpdated
from mcp.shared.exceptions import MCPDeprecationWarning, MCPError
from mcp_types import (
    CallToolResult,
    ContentBlock,
    EmptyResult,
    ImageContent,
    ResourceLink,
    SubscribeRequestParams,
    TextContent,
    ToolAnnotations,
    UnsubscribeRequestParams,
)
from pydantic import BaseModel, Field, SecretStr
from starlette.applications import Starlette

from nano_banana_mcp import __version__, catalog
from nano_banana_mcp.catalog import AspectRatio, GenerateRequest, ModelInfo, ModelName, Resolution
from nano_banana_mcp.config import Settings, is_loopback
from nano_banana_mcp.errors import ConfigError, NanoBananaError
from nano_banana_mcp.service import Service, Status, TaskList, TaskResult, UploadedReference, open_service
from nano_banana_mcp.store import TaskRecord

__all__ = ["App", "StaticTokenVerifier", "create_server", "http_app"]

log = logging.getLogger(__name__)

SERVER_NAME = "nano-banana"
TASK_URI = "nano-banana://tasks/{task_id}"
IMAGE_URI = "nano-banana://tasks/{task_id}/images/{index}"
MAX_WAIT = 600.0

INSTRUCTIONS = f"""Generate and edit images with Google's Nano Banana models through the Monet AI API.
Call generate_image with a prompt; it returns when the images are saved on disk (paths in the result),
or after wait_seconds with a task_id: the task keeps running in the background, and get_task(task_id,
wait_seconds=60) collects it later. Nothing is lost and nothing is charged twice.
Models:
{catalog.summary()}"""


@dataclass
class App:
    """What the lifespan builds once and every tool reads."""

    service: Service
    settings: Settings


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


def _service(ctx: Context[App]) -> Service:
    return ctx.request_context.lifespan_context.service


def _roots_of(ctx: Context[App]) -> Callable[[], Awaitable[list[Path]]]:
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


async def _tool_result(service: Service, result: TaskResult) -> Annotated[CallToolResult, TaskResult]:
    """Summary line, a small thumbnail per saved image, a resource link per image, structured content."""
    content: list[ContentBlock] = [TextContent(type="text", text=result.summary())]
    for index, image in enumerate(result.images):
        if image.path is None:
            continue
        path = Path(image.path)
        try:
            data, mime = await service.thumbnail(path)
        except OSError:
            log.warning("no thumbnail for %s", path)
        else:
            content.append(ImageContent(type="image", data=base64.b64encode(data).decode(), mime_type=mime))
        content.append(
            ResourceLink(
                type="resource_link",
                name=path.name,
                uri=IMAGE_URI.format(task_id=result.task_id, index=index),
                mime_type=image.mime_type,
                size=image.size_bytes,
                description=f"Full-size image ({image.width}x{image.height}) saved at {path}",
            )
        )
    return CallToolResult(content=content, structured_content=result.model_dump(mode="json"))


# -- tools -------------------------------------------------------------------------------------


async def generate_image(
    prompt: Annotated[str, Field(description="What to draw, or how to change the references.")],
    ctx: Context[App],
    model: Annotated[ModelName, Field(description="See the list above.")] = catalog.DEFAULT,
    aspect_ratio: Annotated[AspectRatio | None, Field(description="Width:height; each model has its own set.")] = None,
    resolution: Annotated[Resolution | None, Field(description="Not for nano-banana-1.")] = None,
    images: Annotated[
        list[str] | None,
        Field(description="Local paths (uploaded for you), https:// URLs, or URLs from upload_reference."),
    ] = None,
    wait_seconds: Annotated[
        float,
        Field(ge=0, le=MAX_WAIT, description="Seconds to wait before returning the task id."),
    ] = 45,
) -> Annotated[CallToolResult, TaskResult]:
    with agent_errors():
        request = GenerateRequest(
            prompt=prompt,
            model=model,
            images=tuple(images or ()),
            aspect_ratio=aspect_ratio,
            resolution=resolution,
        )
        result = await _service(ctx).generate(request, wait_seconds, ctx.report_progress, client_roots=_roots_of(ctx))
        return await _tool_result(_service(ctx), result)


async def get_task(
    task_id: Annotated[str, Field(min_length=1, max_length=200, description="The task id from generate_image.")],
    ctx: Context[App],
    wait_seconds: Annotated[
        float, Field(ge=0, le=MAX_WAIT, description="Wait up to this long for the task to finish.")
    ] = 0,
) -> Annotated[CallToolResult, TaskResult]:
    """Status and images of a task; with wait_seconds, wait for it to finish first."""
    with agent_errors():
        result = await _service(ctx).wait(task_id, wait_seconds, ctx.report_progress)
        return await _tool_result(_service(ctx), result)


async def list_tasks(
    ctx: Context[App],
    page: Annotated[int, Field(ge=1, le=10_000, description="Page number, from 1.")] = 1,
    page_size: Annotated[int, Field(ge=1, le=100, description="Tasks per page.")] = 20,
    status: Annotated[Status | None, Field(description="Only tasks with this status.")] = None,
) -> TaskList:
    """Recent tasks, newest first, with status and saved files (this machine's and the API's)."""
    with agent_errors():
        return await _service(ctx).list(page, page_size, status)


async def upload_reference(
    path: Annotated[str, Field(min_length=1, max_length=4096, description="Local path of an image file.")],
    ctx: Context[App],
) -> UploadedReference:
    """Upload a local image once; pass the URL in generate_image's images until expires_at (24 hours)."""
    with agent_errors():
        return await _service(ctx).upload(path, client_roots=_roots_of(ctx))


async def list_models() -> ModelList:
    """The Nano Banana models and what each accepts: reference images, aspect ratios, resolutions."""
    return ModelList(models=catalog.model_info(), default=catalog.DEFAULT)


def _generate_description() -> str:
    return (
        "Generate or edit images with a Nano Banana model. Returns when the images are saved (paths and a "
        "preview), or after wait_seconds with a task_id that keeps running: collect it with get_task(task_id, "
        f"wait_seconds=60), never by generating again.\n{catalog.summary()}"
    )


def _compact(node: Any, *, in_properties: bool = False) -> Any:
    """A JSON schema without what pydantic adds for humans (titles, null defaults): agents pay per byte."""
    if isinstance(node, list):
        return [_compact(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {}
    for key, value in node.items():
        if not in_properties and ((key == "title" and isinstance(value, str)) or (key == "default" and value is None)):
            continue
        if key == "$defs":  # the classes' docstrings are for readers of the code
            defs = {name: {k: v for k, v in d.items() if k != "description"} for name, d in value.items()}
            out[key] = _compact(defs, in_properties=True)
        else:
            out[key] = _compact(value, in_properties=key == "properties")
    return _nullable(out) if not in_properties else out


def _nullable(node: dict[str, Any]) -> dict[str, Any]:
    """``anyOf: [{type: T, ...}, {type: null}]`` written the short way: ``type: [T, null]``."""
    options = node.get("anyOf")
    if not (isinstance(options, list) and len(options) == 2 and {"type": "null"} in options):
        return node
    other = next(o for o in options if o != {"type": "null"})
    if not isinstance(other.get("type"), str) or "$ref" in other:
        return node
    merged = {k: v for k, v in node.items() if k != "anyOf"} | other | {"type": [other["type"], "null"]}
    if "enum" in merged:
        merged["enum"] = [*merged["enum"], None]
    return merged


def _slim(tool: Tool) -> Tool:
    tool.parameters = _compact(tool.parameters)
    if tool.fn_metadata.output_schema is not None:
        tool.fn_metadata.output_schema = _compact(tool.fn_metadata.output_schema)
    return tool


def _tools() -> list[Tool]:
    read_only = ToolAnnotations(read_only_hint=True, idempotent_hint=True)  # destructive_hint means nothing here
    generate = Tool.from_function(
        generate_image,
        title="Generate image",
        description=_generate_description(),
        annotations=ToolAnnotations(
            read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=True
        ),
    )
    # Per-model rules (ratios, resolutions, reference counts) as JSON-schema conditionals on `model`.
    catalog.constrain(generate.parameters)
    tools = [
        generate,
        Tool.from_function(
            upload_reference,
            title="Upload reference image",
            annotations=ToolAnnotations(
                read_only_hint=False, destructive_hint=False, idempotent_hint=True, open_world_hint=True
            ),
        ),
        Tool.from_function(
            get_task, title="Get task", annotations=read_only.model_copy(update={"open_world_hint": True})
        ),
        Tool.from_function(
            list_tasks,
            title="List tasks",
            annotations=read_only.model_copy(update={"open_world_hint": False}),
        ),
        Tool.from_function(
            list_models,
            title="List models",
            annotations=read_only.model_copy(update={"open_world_hint": False}),
        ),
    ]
    return [_slim(tool) for tool in tools]


def _auth(settings: Settings, public_url: str | None) -> dict[str, Any]:
    if public_url is None or settings.http_token is None:
        return {}
    return {
        "token_verifier": StaticTokenVerifier(settings.http_token),
        "auth": AuthSettings(
            issuer_url=public_url,
            resource_server_url=f"{public_url}/mcp",
            validate_token_resource=False,  # one static token for this server; it carries no audience
        ),
    }


class _LegacySubscribers:
    """``resources/subscribe`` for 2025-era clients, which the 2026 subscription bus does not reach."""

    def __init__(self) -> None:
        self._sessions: dict[str, list[Any]] = {}

    def install(self, mcp: MCPServer[App]) -> None:
        async def subscribe(ctx: ServerRequestContext[App], params: SubscribeRequestParams) -> EmptyResult:
            self._sessions.setdefault(str(params.uri), []).append(ctx.session)
            return EmptyResult()

        async def unsubscribe(ctx: ServerRequestContext[App], params: UnsubscribeRequestParams) -> EmptyResult:
            sessions = self._sessions.get(str(params.uri), [])
            if ctx.session in sessions:
                sessions.remove(ctx.session)
            return EmptyResult()

        lowlevel = mcp._lowlevel_server
        lowlevel.add_request_handler("resources/subscribe", SubscribeRequestParams, subscribe)
        lowlevel.add_request_handler("resources/unsubscribe", UnsubscribeRequestParams, unsubscribe)

    async def notify(self, uri: str) -> None:
        for session in self._sessions.pop(uri, []):
            try:
                await session.send_resource_updated(uri)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                log.debug("subscriber of %s is gone", uri)


class StaticTokenVerifier(TokenVerifier):
    """Accepts exactly one bearer token, compared in constant time."""

    def __init__(self, token: SecretStr) -> None:
        self._token = token.get_secret_value().encode()

    async def verify_token(self, token: str) -> AccessToken | None:
        if hmac.compare_digest(token.encode(), self._token):
            return AccessToken(token="<bearer>", client_id="nano-banana-http", scopes=[])  # noqa: S106 - a label
        return None


def http_app(settings: Settings, host: str = "127.0.0.1", port: int = 8000) -> Starlette:
    """The streamable-HTTP app at ``/mcp``.

    On loopback, DNS-rebinding protection is on (foreign Host or Origin headers are refused). Any other
    address requires a bearer token (``NANO_BANANA_HTTP_TOKEN``); without one this refuses to build.
    A token, when set, is required on loopback too.
    """
    if not is_loopback(host) and settings.http_token is None:
        raise ConfigError(
            f"Refusing to serve HTTP on {host} without a bearer token: anyone who can reach that address could "
            "generate images on your account. Set NANO_BANANA_HTTP_TOKEN (or --auth-token), or serve on 127.0.0.1."
        )
    shown_host = f"[{host}]" if ":" in host else host
    mcp = create_server(settings, public_url=f"http://{shown_host}:{port}")
    return mcp.streamable_http_app(host=host)


def create_server(settings: Settings, *, public_url: str | None = None) -> MCPServer[App]:
    """The MCP server for these settings; its lifespan owns the HTTP client and the watcher.

    With ``public_url`` (HTTP only) and a token in the settings, every request needs that bearer token.
    """

    bus = InMemorySubscriptionBus()
    subscribers = _LegacySubscribers()

    async def on_finished(record: TaskRecord) -> None:
        """Tell subscribed clients that a task's resource changed (finished in the background)."""
        if record.task_id is None:
            return
        uri = TASK_URI.format(task_id=record.task_id)
        await bus.publish(ResourceUpdated(uri=uri))
        await subscribers.notify(uri)

    @asynccontextmanager
    async def lifespan(_: MCPServer[App]) -> AsyncIterator[App]:
        async with open_service(settings, on_finished=on_finished) as service:
            yield App(service=service, settings=settings)

    mcp: MCPServer[App] = MCPServer(
        SERVER_NAME,
        title="Nano Banana",
        version=__version__,
        instructions=INSTRUCTIONS,
        website_url="https://monet.vision",
        lifespan=lifespan,
        tools=_tools(),
        subscriptions=bus,
        **_auth(settings, public_url),
    )
    subscribers.install(mcp)

    @mcp.resource(TASK_URI, name="task", mime_type="application/json", description="A task's status and files.")
    async def task_resource(task_id: str, ctx: Context[App]) -> str:
        try:
            result = await _service(ctx).get(task_id)
        except NanoBananaError as err:
            raise ResourceError(str(err)) from err
        return result.model_dump_json(indent=2)

    @mcp.resource(IMAGE_URI, name="image", description="A saved output image, full size.")
    async def image_resource(task_id: str, index: str, ctx: Context[App]) -> bytes:
        try:
            result = await _service(ctx).get(task_id)
        except NanoBananaError as err:
            raise ResourceError(str(err)) from err
        if not index.isdigit() or int(index) >= len(result.images):
            raise ResourceError(f"Task {task_id} has no image {index}.")
        path = result.images[int(index)].path
        if path is None:
            raise ResourceError(f"Image {index} of task {task_id} is not saved yet; try get_task first.")
        return await anyio.Path(path).read_bytes()

    return mcp
