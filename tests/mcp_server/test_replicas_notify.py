"""Replicas of a team server on one PostgreSQL ledger: a client subscribed on one replica hears of a task another
replica finished, once; a client of the replica that finished it, once too."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import pytest
from mcp import Client
from mcp.client.session import IncomingMessage
from mcp.shared.subscriptions import ResourceUpdated
from mcp_types import TextResourceContents
from pydantic import SecretStr

from nano_banana_mcp.config import Settings
from nano_banana_mcp.emulator import Emulator
from nano_banana_mcp.mcp_server import create_server

if TYPE_CHECKING:
    from tests.conftest import PostgresCluster

pytestmark = pytest.mark.anyio


@pytest.fixture
def replicas(
    postgres: PostgresCluster,
    database_url: str,
    emulator: Emulator,
    make_settings: Callable[[str | None, Path], Settings],
    tmp_path: Path,
) -> tuple[Settings, Settings]:
    """Settings of two replicas on one database, each with its own data and output folders."""
    emulator.task_seconds = 0.5
    a, b = (
        make_settings(emulator.base_url, tmp_path / name).model_copy(update={"database_url": SecretStr(database_url)})
        for name in ("a", "b")
    )
    return a, b


async def both_listening(postgres: PostgresCluster, database_url: str) -> None:
    """Until each replica's ledger listens for the finishes of the others."""
    with anyio.fail_after(60):  # only against a hang
        while len(postgres.listeners(database_url)) < 2:
            await anyio.sleep(0.01)


@pytest.mark.filterwarnings("ignore:resources/subscribe is removed")
async def test_a_legacy_subscriber_on_one_replica_hears_of_a_task_another_finished(
    postgres: PostgresCluster, database_url: str, replicas: tuple[Settings, Settings]
) -> None:
    """A 2025 client of replica B subscribes to a task replica A made and finishes: B sends it the update."""
    updates: list[str] = []
    updated = anyio.Event()

    async def on_message(message: IncomingMessage) -> None:
        uri = getattr(getattr(message, "params", None), "uri", None)
        if type(message).__name__ == "ResourceUpdatedNotification" and uri:
            updates.append(str(uri))
            updated.set()

    settings_a, settings_b = replicas
    async with (
        Client(create_server(settings_a), mode="legacy") as on_a,
        Client(create_server(settings_b), mode="legacy", message_handler=on_message) as on_b,
    ):
        await both_listening(postgres, database_url)
        made = await on_a.call_tool("generate_image", {"prompt": "made on A", "wait_seconds": 0})
        uri = f"nano-banana://tasks/{made.structured_content['task_id']}"
        with anyio.fail_after(60):  # only against a hang
            await on_b.subscribe_resource(uri)
            await updated.wait()
        [read] = (await on_b.read_resource(uri)).contents
    assert updates == [uri]
    assert isinstance(read, TextResourceContents)
    assert '"status": "success"' in read.text


async def test_listeners_on_every_replica_hear_a_finish_once(
    postgres: PostgresCluster, database_url: str, replicas: tuple[Settings, Settings]
) -> None:
    """2026 clients listening on A (which finishes the task) and on B each hear of it exactly once."""
    settings_a, settings_b = replicas
    heard: dict[str, list[str]] = {"a": [], "b": []}
    async with Client(create_server(settings_a)) as on_a, Client(create_server(settings_b)) as on_b:
        await both_listening(postgres, database_url)
        made = await on_a.call_tool("generate_image", {"prompt": "made on A", "wait_seconds": 0})
        uri = f"nano-banana://tasks/{made.structured_content['task_id']}"

        async def listen(name: str, client: Client) -> None:
            async with client.listen(resource_subscriptions=[uri]) as sub:
                async for event in sub:
                    assert isinstance(event, ResourceUpdated)
                    heard[name].append(event.uri)

        with anyio.fail_after(60):  # only against a hang
            async with anyio.create_task_group() as tg:
                tg.start_soon(listen, "a", on_a)
                tg.start_soon(listen, "b", on_b)
                while not (heard["a"] and heard["b"]):
                    await anyio.sleep(0.01)
                await anyio.sleep(0.3)  # time for a second event to arrive
                tg.cancel_scope.cancel()
    assert heard == {"a": [uri], "b": [uri]}
