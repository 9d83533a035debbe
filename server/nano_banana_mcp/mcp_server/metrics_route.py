"""``GET /metrics`` on the HTTP server: the Prometheus text of :mod:`nano_banana_mcp.observability.metrics`, to a
bearer of the operator's token: ``NANO_BANANA_METRICS_TOKEN``, else the server's one token. With a tokens file or
an identity provider and no metrics token, nobody reads it (a tenant's token names a tenant, and the figures are every
tenant's); with ``--no-auth`` on loopback, anybody. Outside ``/mcp``, as ``/healthz`` is."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mcp.server.auth.provider import TokenVerifier
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from nano_banana_mcp.observability import metrics

if TYPE_CHECKING:
    from nano_banana_mcp.mcp_server.app import Health

__all__ = ["MetricsEndpoint"]


class MetricsEndpoint:
    """The route's handler; ``verifier`` None: no token required (``--no-auth``), or, ``closed``, none opens it."""

    def __init__(self, health: Health, verifier: TokenVerifier | None, *, closed: bool = False) -> None:
        self._health = health
        self._verifier = verifier
        self._closed = closed

    async def endpoint(self, request: Request) -> Response:
        if self._closed:
            return PlainTextResponse(
                "/metrics is closed: tenants' tokens do not open it. Set NANO_BANANA_METRICS_TOKEN on the server and "
                "send it: Authorization: Bearer <token>.",
                status_code=403,
            )
        if self._verifier is not None:
            scheme, _, token = request.headers.get("authorization", "").partition(" ")
            known = await self._verifier.verify_token(token.strip()) if scheme.lower() == "bearer" else None
            if known is None:
                return PlainTextResponse(
                    "Send the server's bearer token: Authorization: Bearer <token>.",
                    status_code=401,
                    headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
                )
        app = self._health.app
        body = metrics.exposition(app.service if app is not None else None)
        return Response(body, media_type=metrics.CONTENT_TYPE)
