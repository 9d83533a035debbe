"""The Monet client against the emulator over real HTTP, with the emulator's faults."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from nano_banana_mcp.catalog import GenerateRequest
from nano_banana_mcp.errors import AuthError, DownloadError, MonetConnectionError, MonetError, NotFound, RateLimited
from nano_banana_mcp.monet import MonetClient, RetryPolicy, Task

pytestmark = pytest.mark.anyio

REQUEST = GenerateRequest(prompt="a lighthouse at dusk", model="nano-banana-2", aspect_ratio="16:9", resolution="1K")
FAST = RetryPolicy(max_retries=4, base_delay=0.01, max_delay=0.05, max_retry_after=1.0)


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


@pytest.fixture
def client(http: httpx.AsyncClient, emulator, api_key: str) -> MonetClient:
    return MonetClient(http, base_url=emulator.base_url, api_key=SecretStr(api_key), retry=FAST, timeout=5)


def creates(emulator) -> list:
    return [r for r in emulator.requests if r.method == "POST" and r.path.startswith("/api/v1/tasks/")]


async def test_create_then_get_until_success(client: MonetClient, emulator) -> None:
    """A created task is found by id and ends with an image URL."""
    emulator.task_seconds = 0
    task = await client.create_task(REQUEST, str(uuid.uuid4()))
    assert task.id.startswith("task_")
    got = await client.get_task(task.id)
    assert got.id == task.id
    assert got.status == "success"
    assert got.urls and got.urls[0].startswith(emulator.base_url)


async def test_same_key_never_creates_twice(client: MonetClient, emulator) -> None:
    """Sending the same request twice with one key yields one task."""
    key = str(uuid.uuid4())
    first = await client.create_task(REQUEST, key)
    second = await client.create_task(REQUEST, key)
    assert first.id == second.id
    assert emulator.creates == 1


async def test_rate_limit_is_retried_after_the_servers_delay(client: MonetClient, emulator) -> None:
    """429s are retried (honouring Retry-After) and exactly one task is created."""
    emulator.faults.rate_limit = 2
    task = await client.create_task(REQUEST, str(uuid.uuid4()))
    assert task.id
    assert emulator.creates == 1
    assert [r.status for r in creates(emulator)] == [429, 429, 200]


async def test_long_retry_after_is_not_slept_through(client: MonetClient, emulator) -> None:
    """A Retry-After beyond the limit is reported at once, not waited out."""
    emulator.faults.rate_limit = 1
    emulator.faults.retry_after = 30
    with pytest.raises(RateLimited) as info:
        await client.create_task(REQUEST, str(uuid.uuid4()))
    assert info.value.retry_after == 30
    assert "30s" in str(info.value)
    assert emulator.creates == 0


async def test_server_errors_are_retried(client: MonetClient, emulator) -> None:
    """5xx answers are retried and exactly one task is created."""
    emulator.faults.server_errors = 3
    await client.create_task(REQUEST, str(uuid.uuid4()))
    assert emulator.creates == 1
    assert [r.status for r in creates(emulator)] == [503, 503, 503, 200]


async def test_lost_create_response_is_retried_with_the_same_key(client: MonetClient, emulator) -> None:
    """The task was made but its response lost: the retry returns that task; one create in all."""
    emulator.faults.lose_create_responses = 1
    task = await client.create_task(REQUEST, str(uuid.uuid4()))
    assert emulator.creates == 1
    assert (await client.get_task(task.id)).id == task.id


async def test_persistent_failure_gives_up_with_a_clear_error(client: MonetClient, emulator) -> None:
    """When every retry fails, the error says so and nothing was created."""
    emulator.faults.server_errors = 100
    with pytest.raises(MonetError, match=r"HTTP 503.*gave up after 5 attempts"):
        await client.create_task(REQUEST, str(uuid.uuid4()))
    assert emulator.creates == 0


async def test_wrong_key_is_an_auth_error_without_the_key(http: httpx.AsyncClient, emulator) -> None:
    """A refused key says to check MONET_API_KEY, and never echoes the key."""
    secret = "monet_wrong_" + uuid.uuid4().hex
    bad = MonetClient(http, base_url=emulator.base_url, api_key=SecretStr(secret), retry=FAST)
    with pytest.raises(AuthError) as info:
        await bad.create_task(REQUEST, str(uuid.uuid4()))
    assert "MONET_API_KEY" in str(info.value)
    assert secret not in str(info.value)
    assert secret not in repr(bad)
    assert [r.status for r in creates(emulator)] == [401]  # not retried


async def test_api_refusal_is_passed_on_verbatim(client: MonetClient, emulator) -> None:
    """When the API refuses what the catalogue allowed, its reason reaches the caller with the status."""
    emulator.faults.refuse_creates = 1
    with pytest.raises(MonetError) as info:
        await client.create_task(REQUEST, str(uuid.uuid4()))
    assert info.value.status_code == 400
    assert "HTTP 400 VALIDATION_ERROR" in str(info.value)
    assert "emulated refusal" in str(info.value)


async def test_unknown_task_is_not_found(client: MonetClient) -> None:
    """An unknown id is a NotFound with the API's message."""
    with pytest.raises(NotFound, match="404"):
        await client.get_task("task_does_not_exist")


async def test_unreachable_api_is_a_connection_error(http: httpx.AsyncClient) -> None:
    """Nothing listening: a connection error that names the URL, after bounded retries."""
    dead = MonetClient(http, base_url="http://127.0.0.1:9", api_key=SecretStr("monet_x"), retry=FAST, timeout=1)
    with pytest.raises(MonetConnectionError, match=r"127\.0\.0\.1:9"):
        await dead.get_task("task_x")


async def test_stream_follows_the_task_to_success(client: MonetClient, emulator) -> None:
    """The SSE stream with the task's key reports progress and ends with the final task."""
    emulator.task_seconds = 0.3
    key = str(uuid.uuid4())
    created = await client.create_task(REQUEST, key)
    seen: list[Task] = []

    async def on_update(task: Task) -> None:
        seen.append(task)

    final = await client.follow_stream(REQUEST, key, on_update)
    assert final.id == created.id
    assert final.status == "success"
    assert len(seen) >= 2
    assert emulator.creates == 1  # the stream attached to the task, it made no new one


async def test_dropped_stream_raises_so_the_caller_can_poll(client: MonetClient, emulator) -> None:
    """A stream cut mid-way is an error, never a silent success."""
    emulator.task_seconds = 0.5
    emulator.faults.drop_streams = 1
    key = str(uuid.uuid4())
    await client.create_task(REQUEST, key)

    async def ignore(task: Task) -> None:
        return None

    with pytest.raises(MonetConnectionError):
        await client.follow_stream(REQUEST, key, ignore)


async def test_download_streams_to_disk_atomically(client: MonetClient, emulator, tmp_path: Path) -> None:
    """A finished image lands complete at the destination, with no temp files left over."""
    emulator.task_seconds = 0
    task = await client.create_task(REQUEST, str(uuid.uuid4()))
    url = (await client.get_task(task.id)).urls[0]
    got = await client.download(url, tmp_path / "out.png", max_bytes=50_000_000)
    assert got.path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert got.size == got.path.stat().st_size
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"]


async def test_cut_download_is_retried(client: MonetClient, emulator, tmp_path: Path) -> None:
    """A download that breaks off is fetched again; the file is whole."""
    emulator.task_seconds = 0
    task = await client.create_task(REQUEST, str(uuid.uuid4()))
    url = (await client.get_task(task.id)).urls[0]
    emulator.faults.cut_downloads = 2
    got = await client.download(url, tmp_path / "out.png", max_bytes=50_000_000)
    full = httpx.get(url).content
    assert got.path.read_bytes() == full
    ranged = [r.status for r in emulator.requests if r.path.startswith("/files/outputs/")]
    assert 206 in ranged  # resumed where it broke off, not started over


async def test_oversized_download_is_refused(client: MonetClient, emulator, tmp_path: Path) -> None:
    """An image over the size cap is not saved."""
    emulator.task_seconds = 0
    task = await client.create_task(REQUEST, str(uuid.uuid4()))
    url = (await client.get_task(task.id)).urls[0]
    with pytest.raises(DownloadError, match="limit"):
        await client.download(url, tmp_path / "out.png", max_bytes=1000)
    assert list(tmp_path.iterdir()) == []


async def test_upload_returns_a_usable_url(client: MonetClient, emulator) -> None:
    """An uploaded file comes back at its URL, byte for byte."""
    data = b"\x89PNG\r\n\x1a\n" + b"0" * 100
    uploaded = await client.upload_file(data, "ref.png", "image/png")
    assert httpx.get(uploaded.url).content == data
    assert emulator.uploads == 1


def test_backoff_is_capped_and_jittered() -> None:
    """Delays double from the base, never exceed the cap, and stop after max_retries."""
    policy = RetryPolicy(max_retries=6, base_delay=1.0, max_delay=8.0)
    for attempt in range(6):
        delay = policy.delay(attempt)
        assert delay is not None
        ceiling = min(2.0**attempt, 8.0)
        assert ceiling / 2 <= delay <= ceiling
    assert policy.delay(6) is None
    assert policy.delay(0, retry_after=3.0) == 3.0
    assert policy.delay(0, retry_after=120.0) is None
