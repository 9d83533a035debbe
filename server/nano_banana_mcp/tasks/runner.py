"""The task runner: the one place a create is sent, and what carries every task to its saved images.

A row is worked on by exactly one live process (see :meth:`LedgerStore.claim`); should another process take it
over (this one lost its owner lock), this one's next write is refused (``RowTaken``) and it stops. Working a row
means, until it is finished, one step after another, each retried by the package's one retry policy:

1. **create**: the row's endpoint is fixed before the first send. ``/tasks/sync`` (the default) creates
   the task and streams its progress; if the stream breaks before the task is named, the same request
   is sent again with the same key (the documented retry). When every stream slot is busy the row goes
   to ``/tasks/async`` instead, and is polled. A key is never sent to a second endpoint. Only a
   definitive refusal (a 4xx other than 408/409/425/429) ends a row here: nothing was made.
2. **follow**: polling ``GET /tasks/{id}`` with a growing interval, once the stream is gone.
3. **save**: download every output, check it is a whole image, and record the files.

A sweep at start and every ``sweep_interval`` follows every unfinished row with no live owner (a crashed
or stopped process's, or this one's after a cancelled call): that is how work resumes after a restart.
Everything runs in the task group of :func:`nano_banana_mcp.runtime.open_service`.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path

import anyio
from anyio.abc import TaskGroup

from nano_banana_mcp.config import Settings
from nano_banana_mcp.errors import ConfigError, MonetError, NanoBananaError, NotFound, UnsavableImage
from nano_banana_mcp.images import ImageMeta, image_meta, output_path
from nano_banana_mcp.monet import MonetClient, MonetClients, Task, is_transient
from nano_banana_mcp.provenance import Provenance, finish_image
from nano_banana_mcp.storage import ImageStore
from nano_banana_mcp.tasks.records import SavedImage, TaskRecord
from nano_banana_mcp.tasks.store import LedgerStore, RowTaken

__all__ = ["Listener", "Runner"]

log = logging.getLogger(__name__)

Listener = Callable[[TaskRecord], Awaitable[None]]


class Runner:
    """Follows this process's tasks in the background and wakes whoever waits on them."""

    def __init__(
        self,
        clients: MonetClients,
        ledger: LedgerStore,
        settings: Settings,
        task_group: TaskGroup,
        store: ImageStore,
        *,
        on_finished: Listener | None = None,
    ) -> None:
        self._clients = clients  # each row's calls go through its tenant's client (its own key, else the server's)
        self._ledger = ledger
        self._settings = settings
        self._tg = task_group
        self._on_finished = on_finished
        self._store = store
        self._active: set[str] = set()
        self._live: dict[str, TaskRecord] = {}
        self._events: dict[str, anyio.Event] = {}
        # Images downloaded and finished whose store took them not yet (a bucket down): kept for the next try.
        self._staged: dict[tuple[str, int], tuple[Path, ImageMeta]] = {}
        self._streams = anyio.CapacityLimiter(max(settings.max_streams, 1))  # each open stream holds a connection
        # A row is worked until it is finished: every failure is tried again, with the policy's backoff, unless the
        # row is no longer this process's to work.
        self._persist = clients.retry.with_(attempts=None, retry_on=lambda err: not isinstance(err, RowTaken))

    def start(self) -> None:
        """Resume what the ledger holds now, and keep sweeping while the server runs; with a listener, also tell it of
        the rows other processes finish (replicas on PostgreSQL: one of them finishes a task another's client is
        subscribed to)."""
        self._tg.start_soon(self._sweep_forever, name="ledger sweep")
        if self._on_finished is not None:
            self._tg.start_soon(self._ledger.watch_finished, self._on_finished, name="ledger watch")

    def follow(self, key: str) -> None:
        """Work the row with this key in the background, unless this process already does."""
        if key in self._active:
            return
        self._active.add(key)
        self._tg.start_soon(self._run, key, name=f"task {key}")

    def is_following(self, key: str) -> bool:
        return key in self._active

    def live(self, key: str) -> TaskRecord | None:
        """A copy of the freshest state of a row this process works on (progress included), else None."""
        record = self._live.get(key)
        return record.model_copy(deep=True) if record is not None else None

    def changed(self, key: str) -> anyio.Event:
        """An event set at the next change of this row. Take it before reading the row."""
        event = self._events.get(key)
        if event is None:
            event = self._events[key] = anyio.Event()
        return event

    async def sweep(self) -> None:
        """Follow every unfinished row that no live process (other than this one) works on."""
        for key in await self._ledger.claimable():
            self.follow(key)

    # -- background ----------------------------------------------------------------------------

    async def _sweep_forever(self) -> None:
        while True:
            try:
                await self.sweep()
            except NanoBananaError as err:  # a locked or damaged ledger: say so, try again next time
                log.error("ledger sweep failed: %s", err)
            await anyio.sleep(self._settings.sweep_interval)

    async def _run(self, key: str) -> None:
        claimed = False
        record: TaskRecord | None = None
        try:
            claimed = await self._ledger.claim(key)
            record = await self._ledger.get(key) if claimed else None
            if record is not None and not record.finished:
                self._live[key] = record
                log.info("task %s: working (%s)", record.handle, record.phase)
                await self._persist.run(self._advance, record)
                log.info("task %s: %s", record.handle, record.status if not record.error else record.error)
        except RowTaken:
            log.warning("task %s: another process took the row over; it carries it on, this one stops", key)
            record = None
        except NanoBananaError as err:  # the ledger itself failed; the next sweep tries again
            log.error("task %s: %s", key, err)
        finally:
            self._active.discard(key)
            self._live.pop(key, None)
            for staged in [s for s in self._staged if s[0] == key]:
                del self._staged[staged]
            if claimed:
                with anyio.CancelScope(shield=True):
                    try:
                        await self._ledger.release(key)
                    except NanoBananaError as err:
                        log.error("task %s: could not release the row: %s", key, err)
            self._notify(key)
        if record is not None and record.finished and self._on_finished is not None:
            await self._on_finished(record)

    async def _advance(self, record: TaskRecord) -> None:
        """One try at moving the row to its end; any failure is recorded on it, then raised for a retry."""
        try:
            with anyio.fail_after(self._settings.task_timeout):
                if record.phase == "submitting":
                    await self._create(record)
                if record.phase == "created":
                    await self._poll(record)
                if record.phase == "succeeded":
                    await self._download(record)
        except UnsavableImage as err:  # trying again cannot help: the task ends, its URLs kept
            record.unsavable(f"The task finished at the API, but its image could not be saved: {err}")
            await self._save(record)
        except RowTaken:
            raise  # not ours any more: nothing to record
        except Exception as err:  # the one broad catch: a row is retried whatever went wrong
            reason = self._describe(err)
            log.warning("task %s: %s; trying again", record.handle, reason)
            record.trouble(reason)
            await self._save(record)
            raise

    async def _create(self, record: TaskRecord) -> None:
        """Send the create (again), with the row's own key, to the row's own endpoint."""
        streaming = False  # holding one of the stream slots
        try:
            if record.endpoint is None:
                streaming = self._take_stream_slot()
                record.send_to("sync" if streaming else "async")
                await self._save(record)  # fixed before the first send: every resend goes to the same endpoint
            if record.endpoint == "async":
                await self._observe(record, await self._client(record).create_async(record.request, record.key))
                return
            if not streaming:
                await self._streams.acquire()  # a resend of a streamed create must stream again
                streaming = True
            async with self._client(record).create_stream(record.request, record.key) as events:
                async for task in events:
                    await self._observe(record, task)
        except MonetError as err:
            if record.task_id is not None:
                log.info("task %s: stream ended (%s); polling", record.task_id, err)
                return
            if is_transient(err):
                raise  # not confirmed: sent again, same key, same endpoint
            record.refused(str(err))
            await self._save(record)
        finally:
            if streaming:
                self._streams.release()

    def _take_stream_slot(self) -> bool:
        if self._settings.max_streams == 0:
            return False
        try:
            self._streams.acquire_nowait()
        except anyio.WouldBlock:
            return False
        return True

    async def _poll(self, record: TaskRecord) -> None:
        assert record.task_id is not None
        interval = self._settings.poll_interval
        while True:
            try:
                task = await self._client(record).get_task(record.task_id)
            except NotFound:
                record.lost(
                    f"The API no longer knows task {record.task_id} (expired, or the offline emulator that ran it "
                    "has stopped). Generate the image again."
                )
                await self._save(record)
                return
            await self._observe(record, task)
            if task.is_terminal:
                return
            await anyio.sleep(interval)
            interval = min(interval * 1.5, self._settings.poll_max_interval)

    async def _download(self, record: TaskRecord) -> None:
        out_dir = self._store.staging  # the output folder, or where a bucket's images are made before the upload
        await anyio.Path(out_dir).mkdir(parents=True, exist_ok=True)
        for index, image in enumerate(record.images):
            if image.path is not None and await self._store.has(image.path):
                continue
            staged = self._staged.get((record.key, index))
            if staged is not None and await anyio.Path(staged[0]).is_file():
                final, meta = staged  # made on an earlier try whose upload failed: the API's URL is not needed again
            else:
                final, meta = await self._fetch(record, index, image.url, out_dir)
                self._staged[record.key, index] = (final, meta)
            size = (await anyio.Path(final).stat()).st_size
            location = await self._store.put(final, meta.mime_type)
            del self._staged[record.key, index]
            record.saved(
                index,
                SavedImage(
                    path=location,
                    url=image.url,
                    mime_type=meta.mime_type,
                    width=meta.width,
                    height=meta.height,
                    size_bytes=size,
                ),
            )
            await self._save(record)

    async def _fetch(self, record: TaskRecord, index: int, url: str, out_dir: Path) -> tuple[Path, ImageMeta]:
        """Download output ``index``, check it is a whole image, and finish it (format, provenance) in ``out_dir``."""
        dest = output_path(out_dir, record.key, index, "image/png", record.created_at)
        checked: list[ImageMeta] = []  # filled by the check of the part file: the image is read once

        def check(path: Path, checked: list[ImageMeta] = checked) -> None:
            checked.append(_verified_meta(path))

        got = await self._client(record).download(url, dest, max_bytes=self._settings.max_download_bytes, check=check)
        [meta] = checked
        final = output_path(out_dir, record.key, index, meta.mime_type, record.created_at)
        if final != got.path:
            await anyio.Path(got.path).replace(final)
        provenance = Provenance(
            prompt=record.request.prompt,
            model=record.request.model,
            task_id=record.handle,
            created_at=record.created_at,
            offline=record.offline,
        )
        try:  # the request's output format, and what made the image written into the file
            final, meta = await anyio.to_thread.run_sync(
                partial(finish_image, final, output_format=record.request.output_format, provenance=provenance)
            )
        except ValueError as err:
            raise UnsavableImage(f"The image could not be finished ({err}).") from err
        return final, meta

    def _client(self, record: TaskRecord) -> MonetClient:
        """The client of the row's tenant; a ConfigError (recorded on the row, retried) when it has no key here."""
        client = self._clients.for_tenant(record.tenant)
        if client is None:
            raise ConfigError(
                f"No Monet API key for tenant {record.tenant!r}: it has none of its own in the tokens file, and "
                "MONET_API_KEY is not set. Set one of them and restart the server: the task is carried on then."
            )
        return client

    # -- record keeping ------------------------------------------------------------------------

    async def _observe(self, record: TaskRecord, task: Task) -> None:
        """Take in what the API said; a change of phase or status is written, progress only kept here."""
        if record.observe(task):
            await self._save(record)
        else:
            self._notify(record.key)

    async def _save(self, record: TaskRecord) -> None:
        await self._ledger.save(record)
        self._notify(record.key)

    def _notify(self, key: str) -> None:
        event = self._events.pop(key, None)
        if event is not None:
            event.set()

    def _describe(self, err: Exception) -> str:
        if isinstance(err, TimeoutError):
            return f"Stopped following after {self._settings.task_timeout:g}s"
        if isinstance(err, OSError):
            return _disk_error(self._store.staging, err)
        if isinstance(err, NanoBananaError):
            return str(err)
        return f"Unexpected {type(err).__name__}: {err}"[:500]


def _verified_meta(path: Path) -> ImageMeta:
    """The image's type and size (run on the part file, before the rename).

    Raises UnsavableImage unless it is a whole image of an allowed format that decodes within the pixel cap
    (``images.image_meta``): the same bytes would fail again, so the task ends instead of downloading them forever.
    """
    try:
        return image_meta(path, verify=True)
    except ValueError as err:
        raise UnsavableImage(f"The API sent a file that is not an image this server accepts: {err}.") from err


def _disk_error(out_dir: Path, err: OSError) -> str:
    if err.errno == errno.ENOSPC:
        reason = "the disk is full"
    elif err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        reason = "the folder is not writable"
    else:
        reason = err.strerror or type(err).__name__
    return (
        f"The image could not be saved in {out_dir}: {reason}. Free space or set NANO_BANANA_OUTPUT_DIR to a "
        "writable folder; the task is kept, and the download is retried automatically."
    )
