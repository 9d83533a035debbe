"""The background engine: follows every task the process created until it ends, then saves its images.

Each task is followed by the API's event stream first (``POST /tasks/sync`` with the task's own
idempotency key attaches to the existing task) and, when the stream fails or ends early, by polling
``GET /tasks/{id}`` with a growing interval. All of it runs in one task group owned by the server.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
from anyio.abc import TaskGroup

from nano_banana_mcp.config import Settings
from nano_banana_mcp.errors import DownloadError, MonetConnectionError, MonetError, RateLimited, ServerError
from nano_banana_mcp.images import image_meta, output_path
from nano_banana_mcp.monet import MonetClient, Task
from nano_banana_mcp.store import SavedImage, TaskRecord, TaskStore

__all__ = ["Watcher"]

log = logging.getLogger(__name__)

Listener = Callable[[TaskRecord], Awaitable[None]]


class Watcher:
    """Follows tasks in the background and wakes whoever waits on them."""

    def __init__(
        self,
        client: MonetClient,
        store: TaskStore,
        settings: Settings,
        task_group: TaskGroup,
        *,
        on_finished: Listener | None = None,
    ) -> None:
        self._client = client
        self._store = store
        self._settings = settings
        self._tg = task_group
        self._on_finished = on_finished
        self._active: set[str] = set()
        self._events: dict[str, anyio.Event] = {}

    def follow(self, key: str) -> None:
        """Start following the task with this key, unless it is already followed."""
        if key in self._active:
            return
        self._active.add(key)
        self._tg.start_soon(self._run, key, name=f"follow {key}")

    def is_following(self, key: str) -> bool:
        return key in self._active

    def change_event(self, key: str) -> anyio.Event:
        """An event set at the next change of this task's record. Take it before reading the record."""
        event = self._events.get(key)
        if event is None:
            event = self._events[key] = anyio.Event()
        return event

    # -- the life of one task ------------------------------------------------------------------

    async def _run(self, key: str) -> None:
        try:
            with anyio.fail_after(self._settings.task_timeout):
                await self._follow(key)
        except TimeoutError:
            await self._note(key, f"Stopped following after {self._settings.task_timeout:g}s; ask get_task later.")
        except Exception as err:
            log.exception("following task %s failed", key)
            await self._note(key, f"Following the task failed: {err}")
        finally:
            self._active.discard(key)
            self._notify(key)
        record = await self._store.get(key)
        if record is not None and record.finished and self._on_finished is not None:
            await self._on_finished(record)

    async def _follow(self, key: str) -> None:
        record = await self._store.get(key)
        if record is None or record.task_id is None:
            return
        if record.phase == "created":
            task = await self._until_terminal(record)
            record = await self._apply(key, task)
        if record.phase == "succeeded":
            await self._download(record)

    async def _until_terminal(self, record: TaskRecord) -> Task:
        async def on_update(task: Task) -> None:
            await self._apply(record.key, task)

        try:
            return await self._client.follow_stream(record.request, record.key, on_update)
        except MonetError as err:
            log.info("task %s: stream unavailable (%s); polling instead", record.task_id, err)
        return await self._poll(record)

    async def _poll(self, record: TaskRecord) -> Task:
        assert record.task_id is not None
        interval = self._settings.poll_interval
        while True:
            try:
                task = await self._client.get_task(record.task_id)
            except (MonetConnectionError, ServerError, RateLimited) as err:
                # Already retried inside the client; the task is still ours to finish, so keep going.
                log.warning("task %s: polling failed (%s); trying again", record.task_id, err)
                await anyio.sleep(self._settings.poll_max_interval)
                continue
            await self._apply(record.key, task)
            if task.is_terminal:
                return task
            await anyio.sleep(interval)
            interval = min(interval * 1.5, self._settings.poll_max_interval)

    async def _apply(self, key: str, task: Task) -> TaskRecord:
        """Record what the API said about the task, and wake the waiters."""
        record = await self._store.get(key)
        assert record is not None
        record.api_status = task.status
        record.progress = task.progress if task.progress is not None else record.progress
        if task.status == "success" and record.phase == "created":
            record.phase = "succeeded"
            record.images = [SavedImage(path=None, url=url) for url in task.urls]
            if not record.images:
                record.phase = "failed"
                record.error = "The task succeeded but the API returned no image URL."
        elif task.status == "failed" and record.phase == "created":
            record.phase = "failed"
            record.error = task.error_message() or "The task failed at Monet; no reason was given."
        await self._store.save(record)
        self._notify(key)
        return record

    async def _download(self, record: TaskRecord) -> None:
        out_dir = self._settings.output_dir
        try:
            await anyio.Path(out_dir).mkdir(parents=True, exist_ok=True)
            for index, image in enumerate(record.images):
                if image.path is not None:
                    continue
                dest = output_path(out_dir, record.key, index, "image/png", record.created_at)
                got = await self._client.download(image.url, dest, max_bytes=self._settings.max_download_bytes)
                meta = await self._check_image(got.path)
                final = output_path(out_dir, record.key, index, meta.mime_type, record.created_at)
                if final != got.path:
                    await anyio.Path(got.path).replace(final)
                record.images[index] = SavedImage(
                    path=str(final),
                    url=image.url,
                    mime_type=meta.mime_type,
                    width=meta.width,
                    height=meta.height,
                    size_bytes=got.size,
                )
                await self._store.save(record)
        except OSError as err:
            record.error = _disk_error(out_dir, err)
            await self._store.save(record)
            log.error("task %s: %s", record.task_id, record.error)
            return
        except DownloadError as err:
            record.error = str(err)
            await self._store.save(record)
            log.error("task %s: %s", record.task_id, record.error)
            return
        record.phase = "downloaded"
        record.error = None
        await self._store.save(record)

    @staticmethod
    async def _check_image(path: Path) -> object:
        try:
            return await anyio.to_thread.run_sync(image_meta, path)
        except ValueError as err:
            await anyio.Path(path).unlink(missing_ok=True)
            raise DownloadError(f"The API sent a file that is not an image ({err}).") from err

    async def _note(self, key: str, message: str) -> None:
        record = await self._store.get(key)
        if record is not None:
            record.error = message
            await self._store.save(record)

    def _notify(self, key: str) -> None:
        event = self._events.pop(key, None)
        if event is not None:
            event.set()


def _disk_error(out_dir: Path, err: OSError) -> str:
    if err.errno == errno.ENOSPC:
        reason = "the disk is full"
    elif err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        reason = "the folder is not writable"
    else:
        reason = err.strerror or type(err).__name__
    return (
        f"The image could not be saved in {out_dir}: {reason}. Free space or set NANO_BANANA_OUTPUT_DIR to a "
        "writable folder; the task is kept and get_task will retry the download."
    )
