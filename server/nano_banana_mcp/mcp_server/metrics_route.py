"""``GET /metrics`` on the HTTP server: the Prometheus text of :mod:`nano_banana_mcp.observability.metrics`, to a
bearer of the server's token (the single token, a tenant's token from the tokens file, or an access token of the
identity provider; nobody at all only with ``--no-auth`` on loopback). Outside ``/mcp``, as ``/healthz`` is."""

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
    """The route's handler; ``verifier`` None: no token required (``--no-auth``)."""

    def __init__(self, health: Health, verifier: TokenVerifier | None) -> None:
        self._health = health
        self._verifier = verifier

    async def endpoint(self, request: Request) -> Response:
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
