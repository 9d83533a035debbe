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

ServeHttp = Callable[[Settings], AbstractContextManager[str]]


@contextmanager
def _serving(settings: Settings) -> Iterator[str]:
    sock = bind("127.0.0.1", 0)
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(http_app(settings, "127.0.0.1", port), log_level="warning"))
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
