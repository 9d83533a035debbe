"""The Monet client against the emulator over real HTTP, with the emulator's faults."""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Literal

import anyio
import httpx
import pytest
from pydantic import SecretStr

from nano_banana_mcp.catalog import GenerateRequest
from nano_banana_mcp.emulator import Emulator
from nano_banana_mcp.errors import (
    AuthError,
    MonetConnectionError,
    MonetError,
    NotFound,
    RateLimited,
    ServerError,
)
from nano_banana_mcp.monet import MonetClient, RetryPolicy, Task

pytestmark = pytest.mark.anyio

REQUEST = GenerateRequest(prompt="a lighthouse at dusk", model="nano-banana-2", aspect_ratio="16:9", resolution="1K")
FAST = RetryPolicy(attempts=5, wait_initial=0.01, wait_max=0.05, max_retry_after=1.0)
Endpoint = Literal["async", "sync"]
ENDPOINTS: tuple[Endpoint, ...] = ("async", "sync")


OddApi = Callable[[int, dict[str, str], bytes], MonetClient]


@pytest.fixture
async def odd_api() -> AsyncIterator[OddApi]:
    """A client whose API answers every request with these raw bytes (only for what the emulator cannot send)."""
    opened: list[httpx.AsyncClient] = []

    def make(status: int, headers: dict[str, str], body: bytes) -> MonetClient:
        async def raw() -> AsyncIterator[bytes]:  # streamed, so httpx decodes it only when the client reads it
            yield body

        transport = httpx.MockTransport(lambda _request: httpx.Response(status, headers=headers, content=raw()))
        http = httpx.AsyncClient(transport=transport)
        opened.append(http)
        return MonetClient(http, base_url="https://monet.example", api_key=SecretStr("monet_x"), retry=FAST)

    yield make
    for http in opened:
        await http.aclose()


def creates(emulator: Emulator) -> list[tuple[str, int]]:
    """The create requests the emulator answered: (endpoint path, status)."""
    return [(r.path, r.status) for r in emulator.requests if r.method == "POST" and r.path.startswith("/api/v1/tasks/")]


async def follow(client: MonetClient, key: str) -> list[Task]:
    """Every task a create stream reports, to its end."""
    async with client.create_stream(REQUEST, key) as stream:
        return [event.task async for event in stream.events if event.task is not None]


async def create(client: MonetClient, endpoint: Endpoint, key: str) -> Task:
    """Create through one endpoint: the async answer, or the stream's first event."""
    if endpoint == "async":
        return await client.create_async(REQUEST, key)
    return (await follow(client, key))[0]


# -- creates ------------------------------------------------------------------------------------


async def test_create_async_then_get_until_success(client: MonetClient, emulator: Emulator) -> None:
    """A task created through /tasks/async is found by id and ends with an image URL."""
    emulator.task_seconds = 0
    task = await client.create_async(REQUEST, str(uuid.uuid4()))
    got = await client.get_task(task.id)
    assert got.id == task.id
    assert got.status == "success"
    assert got.urls[0].startswith(str(emulator.base_url))
    assert emulator.creates_by_endpoint == {"async": 1}


async def test_create_stream_creates_through_sync(client: MonetClient, emulator: Emulator) -> None:
    """The stream is itself the create: one task, made by POST /tasks/sync, none through /tasks/async."""
    tasks = await follow(client, str(uuid.uuid4()))
    assert tasks[-1].status == "success"
    assert emulator.creates_by_endpoint == {"sync": 1}
    assert creates(emulator) == [("/api/v1/tasks/sync", 200)]


@pytest.mark.parametrize("endpoint", ENDPOINTS)
async def test_same_key_never_creates_twice_on_one_endpoint(
    client: MonetClient, emulator: Emulator, endpoint: Endpoint
) -> None:
    """Sending the same request twice with one key to one endpoint yields one task."""
    key = str(uuid.uuid4())
    first = await create(client, endpoint, key)
    second = await create(client, endpoint, key)
    assert first.id == second.id
    assert emulator.creates == 1
    assert emulator.keys_on_two_endpoints() == set()


async def test_rate_limit_is_retried_after_the_servers_delay(client: MonetClient, emulator: Emulator) -> None:
    """429s are retried after their Retry-After (not the shorter backoff) and exactly one task is created."""
    emulator.faults.rate_limit = 2
    emulator.faults.retry_after = 0.1
    started = time.monotonic()
    await client.create_async(REQUEST, str(uuid.uuid4()))
    assert time.monotonic() - started >= 0.2  # two waits of 0.1 s; FAST's backoff never exceeds 0.05 s
    assert emulator.creates == 1
    assert [status for _, status in creates(emulator)] == [429, 429, 200]


async def test_long_retry_after_is_not_slept_through(client: MonetClient, emulator: Emulator) -> None:
    """A Retry-After beyond the limit is reported at once, with the wait it asked for, not waited out (an hour:
    waiting it out would hang, stopped by the 60 s guard)."""
    emulator.faults.rate_limit = 1
    emulator.faults.retry_after = 3600
    with anyio.fail_after(60), pytest.raises(RateLimited) as info:
        await client.create_async(REQUEST, str(uuid.uuid4()))
    assert info.value.retry_after == 3600
    assert "3600s" in str(info.value)
    assert creates(emulator) == [("/api/v1/tasks/async", 429)]
    assert emulator.creates == 0


async def test_server_errors_are_retried(client: MonetClient, emulator: Emulator) -> None:
    """5xx answers are retried and exactly one task is created."""
    emulator.faults.server_errors = 3
    await client.create_async(REQUEST, str(uuid.uuid4()))
    assert emulator.creates == 1
    assert [status for _, status in creates(emulator)] == [503, 503, 503, 200]


async def test_lost_create_response_is_retried_with_the_same_key(client: MonetClient, emulator: Emulator) -> None:
    """The task was made but its answer lost: the retry returns that task; one create in all."""
    emulator.faults.lose_create_responses = 1
    task = await client.create_async(REQUEST, str(uuid.uuid4()))
    assert [r.aborted for r in emulator.requests if r.path == "/api/v1/tasks/async"] == [True, False]
    assert emulator.creates == 1
    assert (await client.get_task(task.id)).id == task.id


async def test_persistent_failure_gives_up_with_a_clear_error(client: MonetClient, emulator: Emulator) -> None:
    """When every try fails, the last error says what happened and what to do; nothing was created."""
    emulator.faults.server_errors = 100
    with pytest.raises(ServerError) as info:
        await client.create_async(REQUEST, str(uuid.uuid4()))
    assert info.value.status_code == 503
    assert "HTTP 503" in str(info.value)
    assert "Try again" in str(info.value)
    assert len(creates(emulator)) == FAST.attempts
    assert emulator.creates == 0


@pytest.mark.parametrize("endpoint", ENDPOINTS)
async def test_wrong_key_is_an_auth_error_without_the_key(
    http: httpx.AsyncClient, emulator: Emulator, endpoint: Endpoint
) -> None:
    """A refused key says to check MONET_API_KEY, is not retried, and never shows the key."""
    assert emulator.base_url is not None
    secret = "monet_wrong_" + uuid.uuid4().hex
    bad = MonetClient(http, base_url=emulator.base_url, api_key=SecretStr(secret), retry=FAST)
    with pytest.raises(AuthError) as info:
        await create(bad, endpoint, str(uuid.uuid4()))
    assert "MONET_API_KEY" in str(info.value)
    for text in (str(info.value), repr(info.value), repr(info.value.body), repr(bad)):
        assert secret not in text
    assert [status for _, status in creates(emulator)] == [401]


@pytest.mark.parametrize("endpoint", ENDPOINTS)
async def test_api_refusal_is_passed_on_verbatim(client: MonetClient, emulator: Emulator, endpoint: Endpoint) -> None:
    """When the API refuses what the catalogue allowed, its reason reaches the caller with the status, untried again."""
    emulator.faults.refuse_creates = 1
    with pytest.raises(MonetError) as info:
        await create(client, endpoint, str(uuid.uuid4()))
    assert info.value.status_code == 400
    assert info.value.code == "VALIDATION_ERROR"
    assert "HTTP 400 VALIDATION_ERROR" in str(info.value)
    assert "emulated refusal" in str(info.value)
    assert len(creates(emulator)) == 1


# -- reading --------------------------------------------------------------------------------------


async def test_unknown_task_is_not_found(client: MonetClient, emulator: Emulator) -> None:
    """An unknown id is a NotFound with the API's status, asked once."""
    with pytest.raises(NotFound) as info:
        await client.get_task("task_does_not_exist")
    assert info.value.status_code == 404
    assert "404" in str(info.value)
    assert len(emulator.requests) == 1


async def test_list_is_newest_first_with_the_total(client: MonetClient) -> None:
    """A page of the task list holds the newest tasks first and counts them all."""
    ids = [(await client.create_async(REQUEST, str(uuid.uuid4()))).id for _ in range(3)]
    page = await client.list_tasks(page=1, page_size=2)
    assert [t.id for t in page.tasks] == ids[::-1][:2]
    assert page.total == 3


async def test_upload_returns_a_usable_url(client: MonetClient, emulator: Emulator) -> None:
    """An uploaded file comes back at its URL, byte for byte."""
    data = b"\x89PNG\r\n\x1a\n" + b"0" * 100
    uploaded = await client.upload_file(data, "ref.png", "image/png")
    async with httpx.AsyncClient() as plain:
        assert (await plain.get(uploaded.url)).content == data
    assert emulator.uploads == 1


async def test_unreachable_api_is_a_connection_error(http: httpx.AsyncClient) -> None:
    """Nothing listening: a connection error that names the URL and the setting to check."""
    with socket.socket() as bound:  # bound, never listening: connections are refused
        bound.bind(("127.0.0.1", 0))
        base_url = f"http://127.0.0.1:{bound.getsockname()[1]}"
        dead = MonetClient(http, base_url=base_url, api_key=SecretStr("monet_x"), retry=FAST, timeout=1)
        with pytest.raises(MonetConnectionError) as info:
            await dead.get_task("task_x")
    assert base_url in str(info.value)
    assert "MONET_BASE_URL" in str(info.value)


# -- the create stream ------------------------------------------------------------------------------


async def test_stream_follows_the_task_named_in_its_first_event_to_success(
    client: MonetClient, emulator: Emulator
) -> None:
    """Every event is the task the first one named, with progress on the way, and the last is its success."""
    tasks = await follow(client, str(uuid.uuid4()))
    assert len(tasks) >= 3
    assert {t.id for t in tasks} == {tasks[0].id}
    assert tasks[-1].status == "success"
    assert tasks[-1].urls
    assert any(t.status == "processing" for t in tasks)
    assert (await client.get_task(tasks[0].id)).status == "success"


async def test_dropped_stream_raises_after_the_id_is_known(client: MonetClient, emulator: Emulator) -> None:
    """A stream cut mid-way is a connection error, never a silent end, and the caller already has the id to poll."""
    emulator.task_seconds = 0.5
    emulator.faults.drop_streams = 1
    seen: list[Task] = []
    with pytest.raises(MonetConnectionError):
        async with client.create_stream(REQUEST, str(uuid.uuid4())) as stream:
            async for event in stream.events:
                assert event.task is not None
                seen.append(event.task)
    assert seen
    assert seen[-1].status != "success"
    assert (await client.get_task(seen[0].id)).id == seen[0].id
    assert emulator.creates == 1


async def test_a_stream_lost_before_any_event_is_resent_with_the_same_key(
    client: MonetClient, emulator: Emulator
) -> None:
    """The stream breaks before naming the task: sent again with its key, it follows the same single task."""
    emulator.faults.lose_create_responses = 1
    key = str(uuid.uuid4())
    with pytest.raises(MonetConnectionError):
        await follow(client, key)
    tasks = await follow(client, key)
    assert tasks[-1].status == "success"
    assert emulator.creates_by_endpoint == {"sync": 1}


async def test_the_stream_does_not_retry_by_itself(client: MonetClient, emulator: Emulator) -> None:
    """A 503 on the create stream is raised once for the caller to resend; nothing was created."""
    emulator.faults.server_errors = 1
    with pytest.raises(ServerError):
        await follow(client, str(uuid.uuid4()))
    assert creates(emulator) == [("/api/v1/tasks/sync", 503)]
    assert emulator.creates == 0


# -- odd bytes the emulator cannot produce -----------------------------------------------------------


async def test_an_unreadable_error_body_is_a_monet_error(odd_api: OddApi) -> None:
    """An error body that claims gzip but is plain text gives a MonetError, not a crash."""
    headers = {"Content-Encoding": "gzip", "Content-Type": "application/json"}
    with pytest.raises(MonetError, match="decoded"):
        await odd_api(400, headers, b'{"error": "no"}').get_task("task_x")


@pytest.mark.parametrize("depth", [50, 100_000])
async def test_a_deeply_nested_error_body_is_a_monet_error(odd_api: OddApi, depth: int) -> None:
    """An absurdly nested JSON error gives a short MonetError with the status, not a RecursionError."""
    body = '{"error": ' * depth + '"too deep"' + "}" * depth
    with pytest.raises(MonetError) as info:
        await odd_api(400, {"Content-Type": "application/json"}, body.encode()).get_task("task_x")
    assert info.value.status_code == 400
    assert "HTTP 400" in str(info.value)
    assert len(str(info.value)) < 1000
