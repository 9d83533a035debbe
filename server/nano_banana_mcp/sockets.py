"""Listening sockets: the one way this package binds a port, for every server it runs (the MCP server over HTTP,
the emulator), each handed to uvicorn ready to accept."""

from __future__ import annotations

import socket
import sys

__all__ = ["BACKLOG", "listening_socket"]

BACKLOG = 2048
"""Connections the system queues before the server accepts them (uvicorn's default): clients that connect before the
server has started wait instead of being refused."""


def listening_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` (port 0: a free one) and listening; OSError, the socket closed, when the
    address cannot be had. ``host`` is used as given (an IPv6 address without brackets).

    Made as uvicorn makes its own: ``IPPROTO_TCP`` spelled out, since asyncio sets TCP_NODELAY only on sockets whose
    proto says TCP (without it each keep-alive answer, headers then body, waits ~40 ms on Nagle and the delayed ACK);
    ``SO_REUSEADDR`` so that a restart gets its port back at once, except on Windows, where it would let another
    process take the port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        if sys.platform != "win32":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(BACKLOG)
    except OSError:
        sock.close()
        raise
    return sock
