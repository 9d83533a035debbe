"""What a client may watch (2026 ``subscriptions/listen``): only its own tenant's tasks and the server's static
resources, at most 100 per stream, a few streams per connection and per tenant. Over real HTTP (uvicorn in a thread,
SDK clients sending each tenant's token), and in memory for one connection's streams."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import TYPE_CHECKING, Any

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from tests.loopback import TLS

from nano_banana_mcp.config import Settings
from nano_banana_mcp.emulator import Emulator
from nano_banana_mcp.mcp_server import create_server
from nano_banana_mcp.mcp_server.apps import VIEWER_URI
from nano_banana_mcp.mcp_server.watch import MAX_STREAMS_PER_CONNECTION, MAX_STREAMS_PER_TENANT, MAX_WATCHED

if TYPE_CHECKING:
    from tests.conftest import MakeSettings
    from tests.mcp_server.conftest import ServeHttp

pytestmark = pytest.mark.anyio

ALICE = "alice-watch-token-0123456789"
BOB = "bob-watch-token-9876543210"


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory,
    make_settings: MakeSettings,
    emulator_server: Emulator,
    serve_http: ServeHttp,
) -> Iterator[str]:
    """The HTTP app with a tokens file of two tenants, alice and bob; its ``/mcp`` URL."""
    root = tmp_path_factory.mktemp("watch")
    tokens = root / "tokens"
    tokens.write_text(f"alice {ALICE}\nbob {BOB}\n")
    tokens.chmod(0o600)
    settings = make_settings(emulator_server.base_url, root).model_copy(update={"http_tokens_file": tokens})
    with serve_http(settings) as base:
        yield f"{base}/mcp"


@asynccontextmanager
async def connect(url: str, token: str) -> AsyncIterator[Client]:
    async with (
        httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30, verify=TLS) as http,
        Client(streamable_http_client(url, http_client=http), read_timeout_seconds=30) as client,
    ):
        yield client


async def _refused(client: Client, **names: Any) -> str:
    """The message of a listen request the server refuses."""
    with pytest.raises(MCPError) as caught:
        async with client.listen(**names):
            pass
    return caught.value.error.message


async def test_listen_names_only_the_tenants_own_tasks_at_most_100(served: str, emulator: Emulator) -> None:
    """A stream of 101 URIs, a made-up URI, another scheme, or another tenant's task (answered exactly like a
    made-up one) is refused before the stream opens; 100 of one's own task's URIs, and the static viewer, are heard.
    (Before: 200 streams of 5,000 made-up URIs each were all held, RSS 75 → 515 MB, 511 MB after they closed.)"""
    emulator.task_seconds = 0
    async with connect(served, ALICE) as alice, connect(served, BOB) as bob:
        made = await alice.call_tool("generate_image", {"prompt": "watched"})
        task_id = made.structured_content["task_id"]
        own = [f"nano-banana://tasks/{task_id}/images/{n}" for n in range(MAX_WATCHED)]
        too_many = await _refused(alice, resource_subscriptions=[*own, f"nano-banana://tasks/{task_id}"])
        assert f"At most {MAX_WATCHED} resources per listen stream" in too_many
        for uri in ("nano-banana://tasks/made-up-1", "https://example.com/x", "file:///etc/passwd"):
            assert "No such resource" in await _refused(alice, resource_subscriptions=[uri])
        theirs = f"nano-banana://tasks/{task_id}"
        unknown = "nano-banana://tasks/task_nope0000000000"
        assert (await _refused(bob, resource_subscriptions=[theirs])).replace(theirs, "<uri>") == (
            await _refused(bob, resource_subscriptions=[unknown])
        ).replace(unknown, "<uri>")
        async with alice.listen(resource_subscriptions=[*own[:-1], VIEWER_URI]) as sub:
            assert sub.honored.resource_subscriptions == [*own[:-1], VIEWER_URI]


async def test_listen_streams_per_tenant_are_capped_and_given_back(served: str, emulator: Emulator) -> None:
    """One tenant holds at most 32 streams at once over any number of connections; another tenant is not held up,
    and a stream that ends gives its place back."""
    emulator.task_seconds = 0
    async with connect(served, ALICE) as alice, connect(served, BOB) as bob:
        made = await alice.call_tool("generate_image", {"prompt": "watched"})
        uri = f"nano-banana://tasks/{made.structured_content['task_id']}"
        async with AsyncExitStack() as held:
            for _ in range(MAX_STREAMS_PER_TENANT):
                await held.enter_async_context(alice.listen(resource_subscriptions=[uri]))
            refused = await _refused(alice, resource_subscriptions=[uri])
            assert f"At most {MAX_STREAMS_PER_TENANT} listen streams per tenant" in refused
            async with bob.listen(tools_list_changed=True):
                pass
        async with alice.listen(resource_subscriptions=[uri]):
            pass


async def test_listen_streams_per_connection_are_capped(settings: Settings, emulator: Emulator) -> None:
    """One connection (a pipe, as stdio is) holds at most 4 streams at once; one that ends gives its place back."""
    emulator.task_seconds = 0
    async with Client(create_server(settings), mode="auto") as client:
        made = await client.call_tool("generate_image", {"prompt": "watched"})
        uri = f"nano-banana://tasks/{made.structured_content['task_id']}"
        async with AsyncExitStack() as held:
            for _ in range(MAX_STREAMS_PER_CONNECTION):
                await held.enter_async_context(client.listen(resource_subscriptions=[uri]))
            refused = await _refused(client, resource_subscriptions=[uri])
            assert f"At most {MAX_STREAMS_PER_CONNECTION} listen streams per connection" in refused
        async with client.listen(resource_subscriptions=[uri]):
            pass
