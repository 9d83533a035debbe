"""The one way the package binds a port: the sockets the MCP server's HTTP transport and the emulator listen on."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

import pytest

from nano_banana_mcp.errors import ConfigError
from nano_banana_mcp.mcp_server.http import bind
from nano_banana_mcp.sockets import listening_socket

BINDERS: dict[str, Callable[[str, int], socket.socket]] = {"listening_socket": listening_socket, "http.bind": bind}


@pytest.mark.parametrize("binder", BINDERS.values(), ids=BINDERS.keys())
def test_connections_served_on_the_socket_have_nagle_off(binder: Callable[[str, int], socket.socket]) -> None:
    """Served as uvicorn serves it (asyncio on the pre-bound socket), each connection has TCP_NODELAY, so an answer
    written in two parts (headers, then body) is not held ~40 ms by Nagle and the delayed ACK."""
    sock = binder("127.0.0.1", 0)
    port = sock.getsockname()[1]

    async def main() -> int:
        accepted: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        class Probe(asyncio.Protocol):
            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                conn = transport.get_extra_info("socket")
                accepted.set_result(conn.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
                transport.close()

        server = await asyncio.get_running_loop().create_server(Probe, sock=sock)
        async with server:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            nodelay = await accepted
            writer.close()
            return nodelay

    assert asyncio.run(main()) != 0


def test_a_port_in_use_is_refused_in_one_line() -> None:
    """``serve --http`` on a port another server holds: a ConfigError naming the port, and the socket is not leaked."""
    with listening_socket("127.0.0.1", 0) as taken:
        port = taken.getsockname()[1]
        with pytest.raises(OSError):
            listening_socket("127.0.0.1", port)
        with pytest.raises(ConfigError, match=rf"Cannot listen on 127\.0\.0\.1 port {port}: .*Choose another --port\."):
            bind("127.0.0.1", port)
