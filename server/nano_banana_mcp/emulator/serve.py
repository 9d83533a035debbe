"""Serve an emulator over HTTP with uvicorn: in a background thread, or until cancelled."""

from __future__ import annotations

import logging
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import anyio
import uvicorn
from starlette.types import ASGIApp, Receive, Scope, Send

from nano_banana_mcp.emulator.app import Emulator
from nano_banana_mcp.emulator.wire import error, is_abort

__all__ = ["serve", "serve_in_thread"]

_GRACEFUL_SHUTDOWN_SECONDS = 2

logger = logging.getLogger(__name__)


class _QuietAborts(logging.Filter):
    """Keeps uvicorn from logging a traceback for every connection broken on purpose."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and is_abort(record.exc_info[1]))


_QUIET_ABORTS = _QuietAborts()


class _Under:
    """The emulator's app served only under ``/{token}``: any other path is answered 404 before the app sees it, so
    whoever can connect but does not know the token reaches neither the API nor a file."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self._app = app
        self._token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        path: str = scope["path"]
        head, rest = path[1 : 1 + len(self._token)], path[1 + len(self._token) :]
        if not (secrets.compare_digest(head.encode(), self._token.encode()) and rest.startswith("/")):
            await error(404, "not_found", "Not found.")(scope, receive, send)
            return
        raw: bytes = scope.get("raw_path") or path.encode()
        await self._app({**scope, "path": rest, "raw_path": raw[1 + len(self._token) :]}, receive, send)


@contextmanager
def serve_in_thread(
    emulator: Emulator, host: str = "127.0.0.1", port: int = 0, *, path_token: str | None = None
) -> Iterator[str]:
    """Run uvicorn in a daemon thread on a pre-bound socket (port 0 = free port); yield the base URL.

    With ``path_token`` everything is served under ``/{path_token}`` (the base URL ends with it) and nothing else
    is: the offline mode's private emulator, which other users of the machine can connect to but not use.
    """
    from nano_banana_mcp.sockets import listening_socket  # noqa: PLC0415 - building an emulator loads no product module

    sock = listening_socket(host, port)
    app = emulator.app if path_token is None else _Under(emulator.app, path_token)
    server = uvicorn.Server(_config(app))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="nano-banana-emulator", daemon=True)
    emulator.base_url = _url(host, sock.getsockname()[1]) + (f"/{path_token}" if path_token is not None else "")
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("The emulator did not start; see the log on stderr.")
            time.sleep(0.002)
        yield emulator.base_url
    finally:
        server.should_exit = True
        thread.join(timeout=_GRACEFUL_SHUTDOWN_SECONDS + 5)
        sock.close()
        emulator.base_url = None


async def serve(
    emulator: Emulator, host: str = "127.0.0.1", port: int = 8787, *, sock: socket.socket | None = None
) -> None:
    """Serve until cancelled (the ``nano-banana-mcp emulator`` command), on ``sock`` if given (listening; closed
    here), else on a socket bound to ``host:port`` here."""
    if sock is None:
        from nano_banana_mcp.sockets import listening_socket  # noqa: PLC0415 - as in serve_in_thread

        sock = listening_socket(host, port)
    server = uvicorn.Server(_config(emulator.app))
    emulator.base_url = _url(host, sock.getsockname()[1])
    logger.info("Monet emulator (offline placeholders) listening on %s", emulator.base_url)
    try:
        await server.serve(sockets=[sock])
    except anyio.get_cancelled_exc_class():
        with anyio.CancelScope(shield=True):
            await server.shutdown(sockets=[sock])
        raise
    finally:
        sock.close()
        emulator.base_url = None


def _config(app: ASGIApp) -> uvicorn.Config:
    config = uvicorn.Config(
        app,
        http="h11",  # its faults (bodies cut short, connections dropped) as written for h11 and asyncio's loop,
        loop="asyncio",  # whatever else is installed (httptools and uvloop are, for serve --http)
        ws="none",
        lifespan="off",
        log_config=None,
        log_level="warning",
        access_log=False,
        server_header=False,
        timeout_graceful_shutdown=_GRACEFUL_SHUTDOWN_SECONDS,
    )
    logging.getLogger("uvicorn.error").addFilter(_QUIET_ABORTS)
    return config


def _url(host: str, port: int) -> str:
    host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)  # noqa: S104
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
