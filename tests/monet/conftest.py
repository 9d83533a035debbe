"""Fixtures of the client tests: one httpx client, and a MonetClient on the emulator with fast retries."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from pydantic import SecretStr
from tests.loopback import TLS

from nano_banana_mcp.emulator import Emulator
from nano_banana_mcp.monet import MonetClient, RetryPolicy


@pytest.fixture
def fast_retry() -> RetryPolicy:
    """Five tries, waits of 10-50 ms, Retry-After honoured up to 1 s."""
    return RetryPolicy(attempts=5, wait_initial=0.01, wait_max=0.05, max_retry_after=1.0)


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(verify=TLS) as client:
        yield client


@pytest.fixture
def client(http: httpx.AsyncClient, emulator: Emulator, api_key: str, fast_retry: RetryPolicy) -> MonetClient:
    assert emulator.base_url is not None
    return MonetClient(http, base_url=emulator.base_url, api_key=SecretStr(api_key), retry=fast_retry, timeout=5)
