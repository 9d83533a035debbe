"""``nano-banana-mcp serve``: the MCP server over stdio (what hosts start), or streamable HTTP with its auth."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import anyio

from nano_banana_mcp.cli.exits import EXIT_OK
from nano_banana_mcp.cli.settings import add_settings_flags
from nano_banana_mcp.config import Settings

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """``serve`` and its HTTP and auth flags."""
    serve = sub.add_parser("serve", help="run the MCP server (stdio by default)")
    serve.add_argument("--http", action="store_true", help="serve streamable HTTP instead of stdio")
    serve.add_argument("--host", default="127.0.0.1", help="HTTP host (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="HTTP port (default 8000)")
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
    """Serve until stopped: stdio, or with ``--http`` streamable HTTP on the port bound (its auth set up first)."""
    from nano_banana_mcp.mcp_server import create_server  # noqa: PLC0415

    if args.http:
        import uvicorn  # noqa: PLC0415

        from nano_banana_mcp.config import normal_host  # noqa: PLC0415
        from nano_banana_mcp.mcp_server import http_app  # noqa: PLC0415
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
            port = sock.getsockname()[1]
            app = http_app(settings, args.host, port, auth=auth)
            host = normal_host(args.host)
            print(auth.start_message(f"http://{f'[{host}]' if ':' in host else host}:{port}/mcp"), file=sys.stderr)
            uvicorn.Server(uvicorn.Config(app, log_level="warning")).run(sockets=[sock])
    else:
        from nano_banana_mcp.mcp_server.stdio import serve_stdio  # noqa: PLC0415

        anyio.run(serve_stdio, create_server(settings))
    return EXIT_OK
