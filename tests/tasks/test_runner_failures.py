"""Answers the page does not describe end clearly: a few tries, then the API's own words; a failure only a setting
mends keeps the task for the next start; a bug fails its row after a few tries with one traceback; ``task_timeout``
gives up following a task the API never finishes; polling slows down to the page's interval."""

from __future__ import annotations

import logging
from pathlib import Path

import anyio
import pytest

from nano_banana_mcp.catalog import GenerateRequest
from nano_banana_mcp.config import Settings
from nano_banana_mcp.emulator import Emulator
from nano_banana_mcp.errors import MonetError
from nano_banana_mcp.runtime import open_service

pytestmark = pytest.mark.anyio

CREATES = ("/api/v1/tasks/sync", "/api/v1/tasks/async")


def requests_to(emulator: Emulator, *paths: str) -> int:
    return sum(r.path in paths for r in emulator.requests)


def polls(emulator: Emulator) -> int:
    return sum(r.method == "GET" and r.path.startswith("/api/v1/tasks/task_") for r in emulator.requests)


@pytest.mark.parametrize("status", [409, 402, 413, 422])
async def test_a_4xx_the_page_does_not_describe_ends_the_call_with_the_apis_words(
    settings: Settings, emulator: Emulator, status: int
) -> None:
    """A create answered 409/402/413/422 every time is not retried for ever: the call fails, naming the status."""
    emulator.faults.refuse_creates = 100
    emulator.faults.refuse_status = status
    async with open_service(settings) as service:
        with pytest.raises(MonetError, match=f"HTTP {status} emulated_{status}"):
            await service.generate(GenerateRequest(prompt="refused"), wait_seconds=30)
    assert 1 <= requests_to(emulator, *CREATES) <= 3
    assert emulator.creates == 0


async def test_an_output_host_off_the_allowlist_keeps_the_task_for_the_next_start(
    settings: Settings, emulator: Emulator
) -> None:
    """The paid task is kept with its URL and the setting's name, not failed; allowed and restarted, it is saved."""
    assert emulator.base_url is not None
    own = emulator.base_url
    emulator.base_url = own.replace("127.0.0.1", "localhost")  # its outputs now come from a host not allowed
    try:
        async with open_service(settings) as service:
            kept = await service.generate(GenerateRequest(prompt="far away"), wait_seconds=30)
        assert kept.status == "running"
        assert kept.error is not None and "NANO_BANANA_DOWNLOAD_HOSTS" in kept.error
        assert kept.images[0].url.startswith("http://localhost:")
        assert kept.images[0].path is None

        allowed = settings.model_copy(update={"download_hosts": ["localhost"]})
        async with open_service(allowed) as service:
            done = await service.wait(kept.task_id, 30)
    finally:
        emulator.base_url = own
    assert done.status == "success", done.error
    assert Path(done.images[0].path or "").is_file()
    assert emulator.creates == 1


async def test_a_bug_fails_the_row_after_a_few_tries_with_one_traceback(
    settings: Settings, emulator: Emulator, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An unexpected exception is not retried for ever: one traceback in the log, then a failed row saying so."""
    tries = 0

    def broken(*_args: object, **_kwargs: object) -> None:
        nonlocal tries
        tries += 1
        raise RuntimeError("a programming error")

    monkeypatch.setattr("nano_banana_mcp.tasks.saving.finish_in_place", broken)
    caplog.set_level(logging.WARNING, logger="nano_banana_mcp")
    async with open_service(settings) as service:
        result = await service.generate(GenerateRequest(prompt="buggy"), wait_seconds=30)
    assert result.status == "failed"
    assert result.error is not None
    assert "RuntimeError: a programming error" in result.error
    assert "tried 3 times" in result.error
    assert tries == 3
    tracebacks = [r for r in caplog.records if r.exc_info is not None]
    assert len(tracebacks) == 1


@pytest.mark.slow  # waits on real time
async def test_task_timeout_gives_up_following_a_task_the_api_never_finishes(
    settings: Settings, emulator: Emulator
) -> None:
    """After task_timeout the row fails, naming the task and its status, and the API is asked no more."""
    emulator.task_seconds = 3600
    patient = settings.model_copy(update={"task_timeout": 1.0})
    async with open_service(patient) as service:
        result = await service.generate(GenerateRequest(prompt="forever"), wait_seconds=30)
        assert result.status == "failed"
        assert result.error is not None and "Gave up after" in result.error
        assert result.task_id in result.error
        asked = len(emulator.requests)
        await anyio.sleep(0.5)  # several poll intervals
        assert len(emulator.requests) == asked


@pytest.mark.slow  # waits on real time
async def test_polling_starts_fast_and_slows_to_the_longest_interval(settings: Settings, emulator: Emulator) -> None:
    """Polled tasks are asked often at first, then less: far fewer GETs than a fixed first interval would make."""
    emulator.task_seconds = 2.0
    polled = settings.model_copy(update={"max_streams": 0, "poll_interval": 0.05, "poll_max_interval": 0.5})
    async with open_service(polled) as service:
        result = await service.generate(GenerateRequest(prompt="polled"), wait_seconds=30)
    assert result.status == "success"
    # A fixed 0.05 s interval would ask ~40 times in 2 s; growing by 1.5x to 0.5 s asks about 10 times.
    assert 3 <= polls(emulator) <= 20
