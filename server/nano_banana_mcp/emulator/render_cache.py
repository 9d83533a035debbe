"""The rendered placeholder of each task (:mod:`.render`), made once off the event loop and kept for a while."""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio
from starlette.concurrency import run_in_threadpool

from nano_banana_mcp.emulator.render import render_placeholder

if TYPE_CHECKING:
    from nano_banana_mcp.emulator.state import Task

__all__ = ["RenderCache"]

_IMAGE_CACHE = 64
"""Rendered images kept in memory (a 4K placeholder is ~0.4 MB)."""


class RenderCache:
    """The PNG of each task, rendered at most once at a time per task; only the most recent ones are kept.

    Offline mode runs for days inside the server, so older images are evicted; a render is deterministic, so an
    evicted one comes back byte for byte, ETag included.
    """

    def __init__(self) -> None:
        self._images: dict[str, bytes] = {}
        self._locks: dict[str, anyio.Lock] = {}

    async def png(self, task: Task) -> bytes:
        """The task's PNG, rendered in a worker thread the first time it is asked for."""
        lock = self._locks.setdefault(task.id, anyio.Lock())
        async with lock:
            png = self._images.get(task.id)
            if png is None:
                png = await run_in_threadpool(
                    render_placeholder,
                    model=task.model,
                    prompt=str(task.input.get("prompt", "")),
                    aspect_ratio=task.input.get("aspect_ratio"),
                    resolution=task.input.get("resolution"),
                    seed=task.id,
                )
                self._images[task.id] = png
                while len(self._images) > _IMAGE_CACHE:
                    evicted = next(iter(self._images))
                    del self._images[evicted]
                    self._locks.pop(evicted, None)
        return png
