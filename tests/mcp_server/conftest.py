"""Fixtures of the MCP-face tests: the HTTP app served for real on a loopback port, in a thread."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager

import pytest
import uvicorn

from nano_banana_mcp.config import Settings
from nano_banana_mcp.mcp_server import http_app
from nano_banana_mcp.mcp_server.http import bind
from nano_banana_mcp.mcp_server.tasks_polls_uvicorn import protocol_for

ServeHttp = Callable[..., AbstractContextManager[str]]
"""``serve_http(settings, protocol=True)``: see :func:`_serving`."""


@contextmanager
def _serving(settings: Settings, *, protocol: bool = True) -> Iterator[str]:
    """``protocol``: with the HTTP protocol ``serve --http`` runs (the plain ``tasks/get`` answered by it); else
    uvicorn's own (the app's front middleware answers it)."""
    sock = bind("127.0.0.1", 0)
    port = sock.getsockname()[1]
    app = http_app(settings, "127.0.0.1", port)
    http = (protocol_for(app) if protocol else None) or "auto"
    server = uvicorn.Server(uvicorn.Config(app, http=http, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the HTTP app did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture(scope="session")
def serve_http() -> ServeHttp:
    """``with serve_http(settings) as base:`` the real HTTP app on a free loopback port; ``base`` has no ``/mcp``."""
    return _serving
