"""``nano-banana-mcp serve``: the MCP server over stdio (what hosts start), or streamable HTTP with its auth."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio

from nano_banana_mcp.cli.arguments import Parser, port
from nano_banana_mcp.cli.exits import EXIT_OK, own_error
from nano_banana_mcp.cli.settings import add_settings_flags
from nano_banana_mcp.errors import NanoBananaError
from nano_banana_mcp.observability import logs

if TYPE_CHECKING:
    import socket

    from starlette.applications import Starlette

    from nano_banana_mcp.config import Settings

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction[Parser]) -> None:
    """``serve`` and its HTTP and auth flags."""
    serve = sub.add_parser("serve", help="run the MCP server (stdio by default)")
    serve.add_argument("--http", action="store_true", help="serve streamable HTTP instead of stdio")
    serve.add_argument("--host", default="127.0.0.1", help="HTTP host (default 127.0.0.1)")
    serve.add_argument("--port", type=port, default=8000, help="HTTP port (default 8000; 0: any free port)")
    serve.add_argument(
        "--auth-token-file",
        dest="http_token_file",
        type=Path,
        metavar="PATH",
        help="file holding the bearer token HTTP clients must send (default: one made on the first start and kept "
        "in the data dir, mode 600) [NANO_BANANA_HTTP_TOKEN_FILE]",
    )
    serve.add_argument(
        "--auth-tokens-file",
        dest="http_tokens_file",
        type=Path,
        metavar="PATH",
        help="file of `tenant token [KEY_ENV_VAR]` lines, one bearer token per tenant; each tenant sees only its "
        "own tasks, images and uploads; a third field names the MONET_* environment variable holding the tenant's "
        "own Monet API key (else it uses MONET_API_KEY); mode 600 [NANO_BANANA_HTTP_TOKENS_FILE]",
    )
    serve.add_argument(
        "--auth-token",
        dest="http_token",
        metavar="TOKEN",
        help="the bearer token itself: other users can read it in the process list, so prefer the environment "
        "variable or --auth-token-file [NANO_BANANA_HTTP_TOKEN]",
    )
    serve.add_argument(
        "--no-auth",
        action="store_true",
        help="serve HTTP without a bearer token, on loopback only, for local tools that cannot send headers: "
        "any program or user on this machine can then use your key and read your images",
    )
    serve.add_argument(
        "--oauth-issuer",
        dest="oauth_issuer",
        metavar="URL",
        help="your identity provider's issuer (https://...): clients sign in there and the server accepts the JWT "
        "access tokens it signs; each subject is a tenant [NANO_BANANA_OAUTH_ISSUER]",
    )
    serve.add_argument(
        "--oauth-audience",
        dest="oauth_audience",
        metavar="AUD",
        help="the audience this server's access tokens carry; required with --oauth-issuer "
        "[NANO_BANANA_OAUTH_AUDIENCE]",
    )
    serve.add_argument(
        "--oauth-tenant-claim",
        dest="oauth_tenant_claim",
        metavar="CLAIM",
        help="the access-token claim naming the tenant (default sub) [NANO_BANANA_OAUTH_TENANT_CLAIM]",
    )
    serve.add_argument(
        "--public-url",
        dest="public_url",
        metavar="URL",
        help="the URL clients reach this server at, before /mcp, behind a proxy or load balancer "
        "[NANO_BANANA_PUBLIC_URL]",
    )
    add_settings_flags(serve)


def run(settings: Settings, args: argparse.Namespace) -> int:
    """Serve until stopped: stdio, or with ``--http`` streamable HTTP on the port bound (its auth set up first, before
    the SDK is loaded: a refused token file or a busy port is said at once)."""
    from nano_banana_mcp.observability import traces  # noqa: PLC0415

    traces.configure()  # opt-in: only when the OTEL_* variables ask for traces
    if args.http:
        from nano_banana_mcp.config import normal_host  # noqa: PLC0415
        from nano_banana_mcp.mcp_server.http import bind, http_auth  # noqa: PLC0415

        auth = http_auth(settings, args.host, no_auth=args.no_auth)
        if args.http_token is not None:
            auth = dataclasses.replace(auth, source="--auth-token")
            print(
                "warning: --auth-token puts the token in the process list, where other users of this machine can read "
                "it; set NANO_BANANA_HTTP_TOKEN or use --auth-token-file instead.",
                file=sys.stderr,
            )
        if not auth.required:
            print(
                "warning: --no-auth: any program or user on this machine can call this server, generate on your "
                "account and read your images through it. Use it only for local tools that cannot send headers.",
                file=sys.stderr,
            )
        with bind(args.host, args.port) as sock:  # the port actually served (--port 0: a free one)
            from nano_banana_mcp.mcp_server import http_app  # noqa: PLC0415

            served = sock.getsockname()[1]
            app = http_app(settings, args.host, served, auth=auth)
            host = normal_host(args.host)
            _run_http(app, sock, auth.start_message(f"http://{f'[{host}]' if ':' in host else host}:{served}/mcp"))
    else:
        from nano_banana_mcp.mcp_server import create_server  # noqa: PLC0415
        from nano_banana_mcp.mcp_server.stdio import serve_stdio  # noqa: PLC0415

        anyio.run(serve_stdio, create_server(settings))
    return EXIT_OK


def _run_http(app: Starlette, sock: socket.socket, banner: str) -> None:
    """Serve ``app`` on ``sock`` with uvicorn. ``banner`` is printed once the app has started (its ledger and image
    store open and checked); a start-up that fails on a setting (a database or bucket that cannot be used) is that
    setting's one-line error instead, with no banner and none of uvicorn's tracebacks."""
    import uvicorn  # noqa: PLC0415

    failed: list[NanoBananaError] = []
    opening = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(target: Any) -> AsyncIterator[Any]:
        started = False
        try:
            async with opening(target) as state:
                started = True
                print(banner, file=sys.stderr)
                yield state
        except BaseException as err:
            if not started and (own := own_error(err)) is not None:
                failed.append(own)  # uvicorn is told (it stops), and says nothing: see the filter below
            raise

    app.router.lifespan_context = lifespan
    from uvicorn.config import LOGGING_CONFIG  # noqa: PLC0415

    # JSON logs (NANO_BANANA_LOG_FORMAT): uvicorn's own lines go to our handler too, not to its text one
    from nano_banana_mcp.mcp_server.tasks_polls_uvicorn import protocol_for  # noqa: PLC0415

    # httptools' protocol, answering the hosts' tasks/get polls itself; else uvicorn's choice ("auto")
    config = uvicorn.Config(
        app,
        http=protocol_for(app) or "auto",
        log_level="warning",
        log_config=None if logs.is_json() else LOGGING_CONFIG,
    )

    class _SaidByUs(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return not failed  # once the start-up failed on a setting, main() says it, on one line

    logging.getLogger("uvicorn.error").addFilter(_SaidByUs())
    try:
        uvicorn.Server(config).run(sockets=[sock])
    except SystemExit:  # uvicorn's way out of a failed start-up
        if failed:
            raise failed[0] from None
        raise
