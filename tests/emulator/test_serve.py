"""Serving the emulator: in a background thread for tests, and until cancelled for the command."""

from __future__ import annotations

import socket

import anyio
import httpx
import pytest

from nano_banana_mcp.emulator import Emulator, serve, serve_in_thread


def test_serve_in_thread_binds_a_free_port_and_cleans_up() -> None:
    """Port 0 picks a free port; base_url is set while serving and cleared after."""
    emulator = Emulator(api_key="monet_thread")
    with serve_in_thread(emulator) as base_url:
        assert base_url == emulator.base_url
        assert base_url.startswith("http://127.0.0.1:")
        answer = httpx.get(f"{base_url}/api/v1/tasks/list", headers={"Authorization": "Bearer monet_thread"})
        assert answer.json()["total"] == 0
    assert emulator.base_url is None
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{base_url}/api/v1/tasks/list")


def test_serve_in_thread_refuses_a_port_in_use() -> None:
    """A port another socket holds is an OSError at once, not a thread that never starts."""
    with serve_in_thread(Emulator()) as base_url:
        port = int(base_url.rsplit(":", 1)[1])
        with pytest.raises(OSError), serve_in_thread(Emulator(), port=port):
            pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.anyio
async def test_serve_runs_until_cancelled() -> None:
    """serve() answers on its port until its scope is cancelled, then clears base_url."""
    emulator = Emulator(api_key="monet_serve")
    port = free_port()
    async with anyio.create_task_group() as tg:
        tg.start_soon(serve, emulator, "127.0.0.1", port)
        async with httpx.AsyncClient(headers={"Authorization": "Bearer monet_serve"}) as client:
            with anyio.fail_after(60):  # only against a hang
                while True:
                    try:
                        response = await client.get(f"http://127.0.0.1:{port}/api/v1/tasks/list")
                        break
                    except httpx.ConnectError:
                        await anyio.sleep(0.01)
        assert response.status_code == 200
        assert emulator.base_url == f"http://127.0.0.1:{port}"
        tg.cancel_scope.cancel()
    assert emulator.base_url is None
