"""A command starts with the cyclic collector off (its imports make only long-lived objects); once its service is
open, garbage made in cycles is collected again, as a server that runs for days needs."""

from __future__ import annotations

import gc
import weakref

import pytest

from nano_banana_mcp import collector
from nano_banana_mcp.config import Settings
from nano_banana_mcp.runtime import open_service


class Node:
    me: Node | None = None


@pytest.mark.anyio
async def test_cycles_made_once_the_service_is_open_are_collected(settings: Settings) -> None:
    collector.starting()  # as cli.main does
    try:
        async with open_service(settings):
            node = Node()
            node.me = node  # a cycle: only the collector frees it
            gone = weakref.ref(node)
            del node
            kept: list[list[int]] = [
                [] for _ in range(5000)
            ]  # live allocations past the collector's own threshold start a pass
            assert gone() is None, "the collector did not run after start-up"
            del kept
    finally:
        gc.enable()


def test_only_the_first_start_freezes() -> None:
    """A service opened again in the same process (the tests open hundreds) freezes nothing more: garbage waiting at
    that moment would otherwise be frozen with it, never freed."""
    collector.started()  # this process started long ago (tests/conftest.py, at the end of collection)
    frozen = gc.get_freeze_count()
    node = Node()
    node.me = node
    gone = weakref.ref(node)
    del node
    collector.started()
    assert gc.get_freeze_count() == frozen
    gc.collect()
    assert gone() is None
