"""A create the API refused reaches the caller as the error it was (class, status, code), even from another process."""

from __future__ import annotations

import pytest

from nano_banana_mcp.catalog import GenerateRequest
from nano_banana_mcp.config import Settings
from nano_banana_mcp.emulator import Emulator
from nano_banana_mcp.errors import AuthError, MonetError
from nano_banana_mcp.runtime import open_service

pytestmark = pytest.mark.anyio


async def test_a_refused_key_is_an_auth_error_at_the_edge(settings: Settings, emulator: Emulator) -> None:
    emulator.faults.refuse_creates = 100
    emulator.faults.refuse_status = 403
    async with open_service(settings) as service:
        with pytest.raises(AuthError) as raised:
            await service.generate(GenerateRequest(prompt="refused"), wait_seconds=30)
    assert raised.value.status_code == 403
    assert emulator.creates == 0


async def test_a_refusal_read_back_by_the_next_process_keeps_its_status(settings: Settings, emulator: Emulator) -> None:
    emulator.faults.refuse_creates = 100
    emulator.faults.refuse_status = 402
    async with open_service(settings) as service:
        records = await service.submit(GenerateRequest(prompt="no credits"))
        with pytest.raises(MonetError):
            await service.collect(records, wait_seconds=30)
    async with open_service(settings) as again:
        with pytest.raises(MonetError, match="HTTP 402") as raised:
            await again.collect(records, wait_seconds=5)
    assert type(raised.value) is MonetError
    assert raised.value.status_code == 402
    assert raised.value.code == "emulated_402"
