"""The background engine: carries every unfinished task in the ledger to the end, then saves its images.

A task is followed by the API's event stream first (``POST /tasks/sync`` with the task's own
idempotency key attaches to the existing task) and, when the stream fails or ends early, by polling
``GET /tasks/{id}`` with a growing interval. A row whose create may not have reached the API is sent
again with the same key. A sweep at start and every few seconds picks up rows no live process holds
(left by a crash, or by a process that stopped): that is how work resumes after a restart. Everything
runs in one task group owned by the server.
"""

from __future__ import annotations

import errno
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
import anyio.to_thread
from anyio.abc import TaskGroup

from nano_banana_mcp.config import Settings
from nano_banana_mcp.errors import TRANSIENT_ERRORS, DownloadError, MonetError, NotFound
from nano_banana_mcp.images import ImageMeta, image_meta, output_path
from nano_banana_mcp.ledger import Ledger
from nano_banana_mcp.monet import MonetClient, Task
from nano_banana_mcp.store import SavedImage, TaskRecord

__all__ = ["Watcher"]

log = logging.getLogger(__name__)

Listener = Callable[[TaskRecord], Awaitable[None]]
_MAX_RETRY_BACKOFF = 300.0


class Watcher:
    """Follows tasks in the background and wakes whoever waits on them."""

    def __init__(
        self,
        client: MonetClient,
        ledger: Ledger,
        settings: Settings,
        task_group: TaskGroup,
        *,
        on_finished: Listener | None = None,
    ) -> None:
        self._client = client
        self._ledger = ledger
        self._settings = settings
        self._tg = task_group
        self._on_finished = on_finished
        self._active: set[str] = set()
        self._events: dict[str, anyio.Event] = {}
        self._not_before: dict[str, tuple[float, int]] = {}  # key -> (monotonic time, failures)
        self._progress: dict[str, float] = {}
        self._streams = anyio.CapacityLimiter(settings.max_streams)  # each open stream holds a connection

    def start(self) -> None:
        """Resume what the ledger holds, and keep sweeping and renewing leases while the server runs."""
        self._tg.start_soon(self._sweep_forever, name="ledger sweep")
        self._tg.start_soon(self._renew_forever, name="lease renewal")

    def follow(self, key: str) -> None:
        """Start following the task with this key, unless this process already does."""
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

    # -- background loops ----------------------------------------------------------------------

    async def _sweep_forever(self) -> None:
        while True:
            try:
                await self.sweep()
            except Exception:  # the sweep must outlive a locked or damaged ledger; it retries
                log.exception("ledger sweep failed")
            await anyio.sleep(self._settings.sweep_interval)

    async def sweep(self) -> None:
        """Follow every unfinished row no live process holds."""
        moment = time.monotonic()
        for key in await self._ledger.claimable():
            not_before = self._not_before.get(key)
            if key not in self._active and (not_before is None or not_before[0] <= moment):
                self.follow(key)

    async def _renew_forever(self) -> None:
        while True:
            await anyio.sleep(self._ledger.lease_seconds / 3)
            try:
                await self._ledger.renew(sorted(self._active))
            except Exception:
                log.exception("lease renewal failed")

    # -- the life of one task ------------------------------------------------------------------

    async def _run(self, key: str) -> None:
        claimed = False
        try:
            claimed = await self._ledger.claim(key)
            if claimed:
                with anyio.fail_after(self._settings.task_timeout):
                    await self._follow(key)
        except TimeoutError:
            await self._note(key, f"Stopped following after {self._settings.task_timeout:g}s; it is retried later.")
        except Exception as err:  # the one broad catch: one task's trouble must not stop the others
            log.exception("following task %s failed", key)
            await self._note(key, f"Following the task failed ({type(err).__name__}: {err}); it is retried later.")
        finally:
            self._active.discard(key)
            self._progress.pop(key, None)
            if claimed:
                with anyio.CancelScope(shield=True):
                    await self._ledger.release(key)
            self._notify(key)
        record = await self._ledger.get(key)
        if record is None or not claimed:
            return
        if record.finished:
            self._not_before.pop(key, None)
            if self._on_finished is not None:
                await self._on_finished(record)
        else:
            _, failures = self._not_before.get(key, (0.0, 0))
            delay = min(self._settings.sweep_interval * 2**failures, _MAX_RETRY_BACKOFF)
            self._not_before[key] = (time.monotonic() + delay, failures + 1)

    async def _follow(self, key: str) -> None:
        record = await self._ledger.get(key)
        if record is None:
            return
        if record.phase == "submitting":
            record = await self._create(record)
        if record.phase == "created":
            task = await self._until_terminal(record)
            record = await self._apply(record, task)
        if record.phase == "succeeded":
            await self._download(record)

    async def _create(self, record: TaskRecord) -> TaskRecord:
        """Send the create (again) with the row's own key: the API makes the task at most once."""
        delay = self._settings.poll_interval
        while True:
            try:
                task = await self._client.create_task(record.request, record.key)
            except TRANSIENT_ERRORS as err:
                log.warning("task %s: create not confirmed (%s); sending again", record.key, err)
                await anyio.sleep(delay)
                delay = min(delay * 2, self._settings.poll_max_interval)
                continue
            except MonetError as err:
                record.phase, record.error = "failed", str(err)
                await self._ledger.save(record)
                self._notify(record.key)
                return record
            record.task_id, record.api_status, record.phase, record.error = task.id, task.status, "created", None
            await self._ledger.save(record)
            self._notify(record.key)
            return record

    async def _until_terminal(self, record: TaskRecord) -> Task:
        async def on_update(task: Task) -> None:
            await self._apply(record, task)

        try:
            self._streams.acquire_nowait()
        except anyio.WouldBlock:
            return await self._poll(record)  # every stream slot is busy: poll this one
        try:
            return await self._client.follow_stream(record.request, record.key, on_update)
        except MonetError as err:
            log.info("task %s: stream unavailable (%s); polling instead", record.task_id, err)
        finally:
            self._streams.release()
        return await self._poll(record)

    async def _poll(self, record: TaskRecord) -> Task:
        assert record.task_id is not None
        interval = self._settings.poll_interval
        while True:
            try:
                task = await self._client.get_task(record.task_id)
            except NotFound:
                return Task(
                    id=record.task_id,
                    status="failed",
                    error=f"The API no longer knows task {record.task_id} (expired, or the offline emulator that "
                    "ran it has stopped). Generate the image again.",
                )
            except TRANSIENT_ERRORS as err:
                # Already retried inside the client; the task is still ours to finish, so keep going.
                log.warning("task %s: polling failed (%s); trying again", record.task_id, err)
                await anyio.sleep(self._settings.poll_max_interval)
                continue
            await self._apply(record, task)
            if task.is_terminal:
                return task
            await anyio.sleep(interval)
            interval = min(interval * 1.5, self._settings.poll_max_interval)

    async def _apply(self, record: TaskRecord, task: Task) -> TaskRecord:
        """Take in what the API said about the task (``record`` is this process's working copy), wake waiters.

        A change of status is written to the ledger; progress alone is kept in memory (it changes many
        times a second and matters only while someone waits), and written with the next status change.
        """
        before = (record.phase, record.api_status)
        if task.progress is not None and task.progress != record.progress:
            record.progress = self._progress[record.key] = task.progress
            self._notify(record.key)
        record.api_status = task.status
        if task.status == "success" and record.phase == "created":
            record.phase = "succeeded"
            record.images = [SavedImage(path=None, url=url) for url in task.urls]
            if not record.images:
                record.phase = "failed"
                record.error = "The task succeeded but the API returned no image URL."
        elif task.status == "failed" and record.phase == "created":
            record.phase = "failed"
            record.error = task.error_message() or "The task failed at Monet; no reason was given."
        if (record.phase, record.api_status) != before:
            await self._ledger.save(record)
            self._notify(record.key)
        return record

    def progress(self, key: str) -> float | None:
        """The latest progress of a task this process follows (fresher than the ledger's)."""
        return self._progress.get(key)

    async def _download(self, record: TaskRecord) -> None:
        out_dir = self._settings.output_dir
        try:
            await anyio.Path(out_dir).mkdir(parents=True, exist_ok=True)
            for index, image in enumerate(record.images):
                if image.path is not None and await anyio.Path(image.path).is_file():
                    continue
                dest = output_path(out_dir, record.key, index, "image/png", record.created_at)
                checked: list[ImageMeta] = []  # filled by the check on the part file: the image is read once

                def check(path: Path, checked: list[ImageMeta] = checked) -> None:
                    checked.append(_verified_meta(path))

                got = await self._client.download(
                    image.url, dest, max_bytes=self._settings.max_download_bytes, check=check
                )
                [meta] = checked
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
                await self._ledger.save(record)
        except OSError as err:
            await self._note(record.key, _disk_error(out_dir, err))
            return
        except DownloadError as err:
            await self._note(record.key, str(err))
            return
        record.phase, record.error = "downloaded", None
        await self._ledger.save(record)
        self._notify(record.key)

    async def _note(self, key: str, message: str) -> None:
        """Keep a problem on the record (the task stays recoverable) and tell the log once."""
        log.error("task %s: %s", key, message)
        record = await self._ledger.get(key)
        if record is not None:
            record.error = message
            await self._ledger.save(record)
            self._notify(key)

    def _notify(self, key: str) -> None:
        event = self._events.pop(key, None)
        if event is not None:
            event.set()


def _verified_meta(path: Path) -> ImageMeta:
    """The image's type and size, or DownloadError unless it is a whole, readable image (run before the rename)."""
    try:
        return image_meta(path, verify=True)
    except ValueError as err:
        raise DownloadError(f"The API sent a file that is not an image ({err}).") from err


def _disk_error(out_dir: Path, err: OSError) -> str:
    if err.errno == errno.ENOSPC:
        reason = "the disk is full"
    elif err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        reason = "the folder is not writable"
    else:
        reason = err.strerror or type(err).__name__
    return (
        f"The image could not be saved in {out_dir}: {reason}. Free space or set NANO_BANANA_OUTPUT_DIR to a "
        "writable folder; the task is kept, and the download is retried automatically and on get_task."
    )
