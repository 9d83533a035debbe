"""Shared fixtures: one emulator served over real HTTP for the session, reset before every test."""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from mcp import Client

from nano_banana_mcp.config import Settings
from nano_banana_mcp.emulator import Emulator, serve_in_thread
from nano_banana_mcp.mcp_server import create_server

API_KEY = "monet_test_key"


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def emulator_server() -> Iterator[Emulator]:
    emulator = Emulator(api_key=API_KEY, task_seconds=0.3, stream_interval=0.05)
    with serve_in_thread(emulator):
        yield emulator


EMULATOR_TESTS = Path(__file__).parent / "emulator"


@pytest.fixture(autouse=True)
def emulator(emulator_server: Emulator, request: pytest.FixtureRequest) -> Iterator[Emulator]:
    """The session's emulator with no tasks, uploads, requests or faults, in strict idempotency (a key dedupes only
    on the endpoint it was first sent to). After every test of the product, no key has gone to a second endpoint:
    against an API that scopes keys per endpoint, that would have charged a task twice."""
    emulator_server.reset()
    yield emulator_server
    if not request.node.path.is_relative_to(EMULATOR_TESTS):  # the emulator's own tests do it on purpose
        assert emulator_server.keys_on_two_endpoints() == set(), "an idempotency key was sent to two endpoints"


@pytest.fixture
def api_key() -> str:
    return API_KEY


def _make_settings(base_url: str | None, root: Path) -> Settings:
    """Settings pointing at the emulator, with test-speed retries and polling, files under ``root``."""
    return Settings(
        api_key=API_KEY,
        base_url=base_url,
        output_dir=root / "out",
        data_dir=root / "data",
        allowed_dirs=[root],
        request_timeout=5,
        retry_base_delay=0.01,
        retry_max_delay=0.05,
        max_retry_after=1,
        poll_interval=0.05,
        poll_max_interval=0.2,
    )


@pytest.fixture
def settings(tmp_path: Path, emulator: Emulator) -> Settings:
    return _make_settings(emulator.base_url, tmp_path)


@pytest.fixture(scope="session")
def make_settings() -> Callable[[str | None, Path], Settings]:
    """Settings for another API URL or folder: ``make_settings(base_url, root)``."""
    return _make_settings


@pytest.fixture(params=["auto", "legacy"])
def mode(request: pytest.FixtureRequest) -> str:
    """Both protocol eras: 2026-07-28 (auto) and the 2025-11-25 handshake most hosts speak today."""
    return request.param


@pytest.fixture
async def mcp_client(settings: Settings, mode: str) -> AsyncIterator[Client]:
    """An SDK client connected in memory to a server built from `settings`."""
    async with Client(create_server(settings), mode=mode, read_timeout_seconds=30) as client:
        yield client


COMMAND = str(Path(sys.executable).with_name("nano-banana-mcp"))


@pytest.fixture(scope="session")
def command() -> str:
    """The installed console script, as a host would start it."""
    return COMMAND


@pytest.fixture
def process_env(tmp_path: Path, emulator: Emulator) -> dict[str, str]:
    """Environment for a real nano-banana-mcp process talking to the emulator, with test-speed timings."""
    return {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "MONET_API_KEY": API_KEY,
        "MONET_BASE_URL": emulator.base_url or "",
        "NANO_BANANA_OUTPUT_DIR": str(tmp_path / "out"),
        "NANO_BANANA_DATA_DIR": str(tmp_path / "data"),
        "NANO_BANANA_RETRY_BASE_DELAY": "0.01",
        "NANO_BANANA_POLL_INTERVAL": "0.05",
        "NANO_BANANA_POLL_MAX_INTERVAL": "0.2",
        "NANO_BANANA_SWEEP_INTERVAL": "0.2",
    }


@pytest.fixture(scope="session")
def png() -> Callable[..., Path]:
    """Write a small PNG: ``png(path, size=(64, 48))`` makes its folder and returns the path."""

    def write(path: Path, size: tuple[int, int] = (64, 48)) -> Path:
        from PIL import Image  # noqa: PLC0415 - only the tests that make images pay for Pillow

        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", size, (10, 120, 200)).save(path, "PNG")
        return path

    return write


@pytest.fixture(scope="session")
def text_of() -> Callable[[Any], str]:
    """The text blocks of a tool result, joined: what the agent reads."""

    def join(result: Any) -> str:
        return "\n".join(c.text for c in result.content if c.type == "text")

    return join
