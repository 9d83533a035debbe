"""The app factory: the MCP server, its lifespan, resources for results, and the HTTP transport with its auth."""

from __future__ import annotations

import base64
import hashlib
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import anyio
from mcp.server.auth.provider import AccessToken, TokenVerifier
from mcp.server.auth.settings import AuthSettings
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ResourceError
from mcp.server.subscriptions import ResourceUpdated, ServerEvent
from pydantic import AnyHttpUrl, SecretStr
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse

from nano_banana_mcp import __version__, catalog
from nano_banana_mcp.config import Settings, is_loopback, normal_host
from nano_banana_mcp.errors import ConfigError, NanoBananaError
from nano_banana_mcp.images.formats import mime_type
from nano_banana_mcp.mcp_server.apps import ViewerApps, apps_only
from nano_banana_mcp.mcp_server.clients import openclaw_results
from nano_banana_mcp.mcp_server.http import HttpAuth, TenantToken, http_auth, transport_security
from nano_banana_mcp.mcp_server.legacy import LegacySubscribers
from nano_banana_mcp.mcp_server.metrics_route import MetricsEndpoint
from nano_banana_mcp.mcp_server.oauth import JwtVerifier, OAuthConfig
from nano_banana_mcp.mcp_server.sets import install_sets, request_scope
from nano_banana_mcp.mcp_server.tasks_extension import BackgroundTasks
from nano_banana_mcp.mcp_server.tasks_polls import TaskPolls, polls_of
from nano_banana_mcp.mcp_server.tasks_polls_http import install as install_polls
from nano_banana_mcp.mcp_server.tools import App, build_tools, service_of, tenant_of
from nano_banana_mcp.mcp_server.usage import UsageResource
from nano_banana_mcp.mcp_server.watch import ListenLimits
from nano_banana_mcp.observability import logs, metrics
from nano_banana_mcp.runtime import open_service
from nano_banana_mcp.tasks import COLLECT_WAIT, DEFAULT_TENANT, TaskRecord
from nano_banana_mcp.uris import IMAGE_URI, TASK_URI, task_uri

__all__ = [
    "INSTRUCTIONS",
    "SERVER_NAME",
    "StaticTokenVerifier",
    "TenantBus",
    "TenantTokenVerifier",
    "create_server",
    "http_app",
]

log = logging.getLogger(__name__)

SERVER_NAME = "nano-banana"

INSTRUCTIONS = f"""Generate and edit images with Google's Nano Banana models through the Monet AI API.
Call generate_image with a prompt; it returns when the images are saved on disk (paths in the result),
or after wait_seconds with a task_id: the task keeps running in the background, and get_task(task_id,
wait_seconds={COLLECT_WAIT}) collects it later. Nothing is lost and nothing is charged twice.
Models:
{catalog.summary()}"""


async def image_types(ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
    """Server middleware: an image resource read is answered with the image's own MIME type.

    A resource template has one MIME type for every URI it matches, and a saved image may be PNG, JPEG, WebP or
    GIF (``output_format``); so the type is taken from each blob's first bytes here, on the wire form.
    """
    result = await call_next(ctx)
    if ctx.method != "resources/read" or not isinstance(result, dict):
        return result
    contents = result.get("contents")
    if not isinstance(contents, list):
        return result
    return result | {"contents": [_typed(item) for item in contents]}


def _typed(item: Any) -> Any:
    if not (
        isinstance(item, dict) and isinstance(blob := item.get("blob"), str) and "/images/" in str(item.get("uri"))
    ):
        return item
    mime = mime_type(base64.b64decode(blob[:64]))  # 64 base64 characters: the first 48 bytes
    return item | {"mimeType": mime} if mime else item


class TenantBus:
    """The ``subscriptions/listen`` bus, by tenant: a listener hears about its own tenant's tasks only.

    A task's update is delivered only to the streams opened with its tenant's token (streams name only their own
    tenant's tasks: :class:`~nano_banana_mcp.mcp_server.watch.ListenLimits`); events for everyone (list changes)
    reach every stream.
    """

    def __init__(self) -> None:
        self._listeners: dict[object, tuple[str, Callable[[ServerEvent], None]]] = {}

    async def publish(self, event: ServerEvent, *, tenant: str | None = None) -> None:
        """Deliver ``event`` to every listener, or (``tenant``) to that tenant's only."""
        for listening, listener in list(self._listeners.values()):
            if tenant is not None and listening != tenant:
                continue
            try:
                listener(event)
            except Exception:  # one bad listener must not starve the others
                log.exception("subscription listener raised; continuing")
        await anyio.lowlevel.checkpoint()

    def subscribe(self, listener: Callable[[ServerEvent], None]) -> Callable[[], None]:
        """Register a listener of the calling request's tenant (called in the listen request)."""
        token = object()
        self._listeners[token] = (tenant_of(), listener)

        def unsubscribe() -> None:
            self._listeners.pop(token, None)

        return unsubscribe


def create_server(
    settings: Settings,
    *,
    public_url: str | None = None,
    token: SecretStr | None = None,
    tenants: Sequence[TenantToken] = (),
    oauth: OAuthConfig | None = None,
    health: Health | None = None,
) -> MCPServer[App]:
    """The MCP server for these settings; its lifespan owns the HTTP client and the task runner.

    With ``public_url`` and ``token`` (HTTP only), every request needs that bearer token (the tenant ``default``);
    with ``tenants`` instead, one of theirs, and each request sees only its token's tenant's tasks (and generates on
    its tenant's own Monet key when it has one); with ``oauth`` instead, a JWT access token of that identity
    provider, whose subject (or configured claim) is the tenant. Without ``public_url`` the server is for stdio (or
    in memory): its client shares this machine, and the client's roots may name folders to read.
    """
    tenant_keys = {entry.tenant: entry.key for entry in tenants if entry.key is not None}
    tenant_limits = {entry.tenant: entry.daily_images for entry in tenants if entry.daily_images is not None}

    bus = TenantBus()
    tasks = BackgroundTasks(bus)  # the MCP Tasks extension: the host carries the long wait

    async def known(app: App, task_id: str) -> bool:
        return await app.service.knows(task_id, tenant=tenant_of())

    subscribers = LegacySubscribers(known)
    usage = UsageResource()  # nano-banana://usage: the caller's own spend

    async def on_finished(record: TaskRecord) -> None:
        """Tell subscribed clients that a task's resource changed (finished in the background).

        A call that returned before the API named the task gave the request's own id: both names are told.
        """
        await tasks.finished(record)
        for handle in dict.fromkeys(h for h in (record.task_id, record.key) if h):
            uri = task_uri(handle)
            await bus.publish(ResourceUpdated(uri=uri), tenant=record.tenant)
            await subscribers.notify(uri)

    @asynccontextmanager
    async def lifespan(_: MCPServer[App]) -> AsyncIterator[App]:
        async with open_service(
            settings, on_finished=on_finished, tenant_keys=tenant_keys, tenant_limits=tenant_limits
        ) as service:
            app = App(service=service, settings=settings, local=public_url is None)  # HTTP: client roots never read
            usage.app = app
            if health is not None:
                health.app = app
            polls.bind(service)
            try:
                yield app
            finally:
                polls.unbind()
                if health is not None:
                    health.app = None

    mcp: MCPServer[App] = MCPServer(
        SERVER_NAME,
        title="Nano Banana",
        version=__version__,
        instructions=INSTRUCTIONS,
        website_url="https://monet.vision",
        lifespan=lifespan,
        tools=build_tools(),
        extensions=[ViewerApps(), tasks],  # MCP Apps: the viewer, bound to the tools that show images
        # Apps offered only to clients that negotiated it; images typed; listens for task notifications served
        middleware=[apps_only, image_types, tasks.listen, request_scope, openclaw_results],
        subscriptions=bus,
        **_auth(token, tenants, public_url, oauth),
    )
    subscribers.install(mcp)
    usage.install(mcp)
    polls = TaskPolls(mcp)  # the plain tasks/get answered by the transports, ahead of the SDK's pipeline

    async def static_uris() -> set[str]:
        return {str(resource.uri) for resource in await mcp.list_resources()}

    ListenLimits(bus, known, static_uris).install(mcp)

    @mcp.resource(TASK_URI, name="task", mime_type="application/json", description="A task's status and files.")
    async def task_resource(task_id: str, ctx: Context[App]) -> str:
        try:
            result = await service_of(ctx).get(task_id, tenant=tenant_of())
        except NanoBananaError as err:
            raise ResourceError(str(err)) from err
        return result.model_dump_json(indent=2)

    @mcp.resource(IMAGE_URI, name="image", description="A saved output image, full size.")
    async def image_resource(task_id: str, index: str, ctx: Context[App]) -> bytes:
        # ASCII digits only: "²" is a digit int() refuses, and 5,000 digits are past its limit
        if not (index.isascii() and index.isdigit() and len(index) <= 3):
            raise ResourceError(
                f"Task {task_id[:200]} has no image {index[:20]!r}: images are numbered 0, 1, 2, ... (each result's "
                "images[].uri names one)."
            )
        try:  # only an image inside the store (folder, or bucket and prefix) is served, whatever the ledger says
            return await service_of(ctx).image_bytes(task_id, int(index), tenant=tenant_of())
        except NanoBananaError as err:
            raise ResourceError(str(err)) from err

    install_sets(mcp)  # nano-banana://sets, nano-banana://sets/{name} and their images; set names completed
    return mcp


# -- HTTP --------------------------------------------------------------------------------------


def http_app(
    settings: Settings, host: str = "127.0.0.1", port: int = 8000, *, auth: HttpAuth | None = None
) -> Starlette:
    """The streamable-HTTP app at ``/mcp``, served on ``host:port``.

    Every request needs the bearer token of ``auth`` (by default ``http_auth(settings, host)``: the configured
    token, or one made once and kept in the data folder); only an ``auth`` made with ``no_auth`` on loopback
    has none. On loopback, in any spelling, DNS-rebinding protection is on: a Host or Origin header that does
    not name this server is refused.
    """
    if auth is None:
        auth = http_auth(settings, host)
    if not auth.required and not is_loopback(host):
        raise ConfigError(f"Refusing to serve HTTP on {host} without a bearer token. Drop --no-auth.")
    name = normal_host(host)
    shown_host = f"[{name}]" if ":" in name else name
    public_url = (settings.public_url or "").strip().rstrip("/") or f"http://{shown_host}:{port}"
    if not public_url.startswith(("https://", "http://")) or public_url.endswith("/mcp"):
        raise ConfigError(
            "NANO_BANANA_PUBLIC_URL must be the https:// URL clients reach this server at, without the /mcp path "
            "(for example https://mcp.example.com)."
        )
    health = Health()
    mcp = create_server(
        settings,
        public_url=public_url,
        token=auth.token,
        tenants=auth.tenants,
        oauth=auth.oauth,
        health=health,
    )
    mcp.custom_route("/healthz", methods=["GET"])(health.endpoint)  # outside /mcp: no token, no Host check
    tokens = [auth.token.get_secret_value()] if auth.token is not None else []
    logs.redact(*tokens, *(t.secret.decode(errors="replace") for t in auth.tenants if not t.hashed))
    metrics.know_tenants(entry.tenant for entry in auth.tenants)  # tenant labels: these, then a bounded few
    metrics_token = settings.metrics_token if settings.metrics_token is not None else auth.token
    if metrics_token is not None and metrics_token.get_secret_value().strip():
        reader = MetricsEndpoint(health, StaticTokenVerifier(metrics_token))
    else:  # tenants' tokens name tenants, not the operator: /metrics (every tenant's figures) stays closed to them
        reader = MetricsEndpoint(health, None, closed=auth.required)
    mcp.custom_route("/metrics", methods=["GET"])(reader.endpoint)  # its own bearer check
    app = mcp.streamable_http_app(host=name, transport_security=transport_security(host, port))
    polls = polls_of(mcp)
    if polls is not None:
        # the plain tasks/get answered in front of the app, with the SDK's own auth: its verifier never waits unless
        # it is an identity provider's (keys fetched), so the protocol may answer it without a task of its own
        install_polls(app, polls, auth_at_once=auth.oauth is None)
    return app


class Health:
    """``GET /healthz`` for load balancers: whether this replica's ledger answers and its image store is writable.

    No auth and no secrets: the answer names only what is reachable (200) or not (503), never why.
    """

    def __init__(self) -> None:
        self.app: App | None = None

    async def endpoint(self, _request: Request) -> JSONResponse:
        app = self.app
        if app is None:
            return JSONResponse({"status": "starting"}, status_code=503)
        checks = await app.service.health()
        healthy = all(value == "ok" for value in checks.values())
        return JSONResponse({"status": "ok" if healthy else "degraded", **checks}, status_code=200 if healthy else 503)


class TenantTokenVerifier(TokenVerifier):
    """Maps a bearer token to its tenant: compared in constant time with every tenant's (digests for ``sha256:``
    entries), all of them whatever matches; once accepted, looked up by its SHA-256 (a preimage is needed to probe
    that look-up, and the tenants are fixed for the life of the process). The tenant is the access token's
    ``subject``, so the SDK's session ownership tells tenants apart, and
    :func:`~nano_banana_mcp.mcp_server.tools.tenant_of` reads it."""

    def __init__(self, tenants: Sequence[TenantToken]) -> None:
        self._tenants = tuple(tenants)
        self._accepted: dict[bytes, AccessToken] = {}
        """The access token of each token accepted so far, by its SHA-256 (at most one per tenant's token: a host
        presents its token on every request, its tasks/get polls once a second each)."""

    async def verify_token(self, token: str) -> AccessToken | None:
        presented = token.encode()
        digest = hashlib.sha256(presented).digest()
        accepted = self._accepted.get(digest)
        if accepted is not None:
            return accepted
        found = None
        for entry in self._tenants:  # no early exit: the time taken does not tell which entry matched
            if entry.matches(presented, digest):
                found = entry.tenant
        if found is None:
            return None
        accepted = AccessToken(token="<bearer>", client_id="nano-banana-http", scopes=[], subject=found)  # noqa: S106
        self._accepted[digest] = accepted
        return accepted


class StaticTokenVerifier(TenantTokenVerifier):
    """Accepts exactly one bearer token, compared in constant time: the tenant ``default``."""

    def __init__(self, token: SecretStr) -> None:
        super().__init__([TenantToken(DEFAULT_TENANT, token.get_secret_value().encode())])


def _auth(
    token: SecretStr | None, tenants: Sequence[TenantToken], public_url: str | None, oauth: OAuthConfig | None = None
) -> dict[str, Any]:
    """``MCPServer`` arguments that require this bearer token (or one of the tenants', or the identity provider's
    access tokens), when serving HTTP."""
    if public_url is None:
        return {}
    if oauth is not None:
        return {
            "token_verifier": JwtVerifier(oauth),
            "auth": AuthSettings(
                issuer_url=AnyHttpUrl(oauth.issuer),  # the protected-resource metadata names the identity provider
                resource_server_url=AnyHttpUrl(f"{public_url}/mcp"),
                required_scopes=None,
                validate_token_resource=False,  # the verifier checks the token's audience itself
            ),
        }
    if token is None and not tenants:
        return {}
    verifier = TenantTokenVerifier(tenants) if tenants else StaticTokenVerifier(token) if token else None
    assert verifier is not None
    return {
        "token_verifier": verifier,
        "auth": AuthSettings(
            issuer_url=AnyHttpUrl(public_url),
            resource_server_url=AnyHttpUrl(f"{public_url}/mcp"),
            validate_token_resource=False,  # static tokens for this server; they carry no audience
        ),
    }
