"""The task runner: the one place a create is sent, and what carries every task to its saved images.

A row is worked on by exactly one live process (see :meth:`LedgerStore.claim`); should another process take it
over (this one lost its owner lock), this one's next write is refused (``RowTaken``) and it stops. Working a row
means, until it is finished, one step after another, each retried by the package's one retry policy:

1. **create**: the row's endpoint is fixed before the first send (:class:`CreatePath`: ``/tasks/sync`` until a
   stream has proved unreadable, then the documented ``/tasks/async``; ``/tasks/async`` too when every stream slot
   is busy). A key is never sent to a second endpoint. A stream's events are read leniently; if the stream breaks
   before saying anything, the same request is sent again with the same key (the documented retry), at most
   ``MAX_STREAMS_PER_KEY`` streams in all. A stream (or a create answer) that never names its task does not make the
   runner post again: it finds the task through ``GET /tasks/list`` (by creation window and model, never a task
   another row has). Only a refusal (a 4xx the page does not describe as passing) ends a row here: nothing was made.
2. **follow**: polling ``GET /tasks/{id}``, fast at first, then at the page's 5 s, once the stream is gone.
3. **save**: download every output, check it is a whole image, and record the files.

Failures: plainly transient ones (unreachable, 429, 5xx, a full disk, a bucket down) are tried again without a
count, with backoff; others the page does not describe, and errors of this program, a few times (``FEW_TRIES``),
then the row ends with what was said. A failure only a setting can mend (an output host not allowed, an output
folder that cannot be written, a refused key) **parks** the row: its state and the error naming the setting are
kept, this process stops working it, and the next start carries it on. ``task_timeout`` bounds how long a task is
followed at the API (created and not finished, or not yet named); saving a finished task's images is never given up.

A sweep at start and every ``sweep_interval`` follows every unfinished row with no live owner (a crashed
or stopped process's, or this one's after a cancelled call): that is how work resumes after a restart.
Everything runs in the task group of :func:`nano_banana_mcp.runtime.open_service`.
"""

from __future__ import annotations

import errno
import logging
import math
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

import anyio
from anyio.abc import TaskGroup

from nano_banana_mcp.config import Settings
from nano_banana_mcp.errors import (
    AuthError,
    ConfigError,
    DownloadError,
    HostNotAllowed,
    MalformedResponse,
    MonetError,
    NanoBananaError,
    NotFound,
    UnsavableImage,
)
from nano_banana_mcp.images import ImageMeta, image_meta, output_path
from nano_banana_mcp.monet import CreateWindow, MonetClient, MonetClients, Task, is_transient, worth_a_few_tries
from nano_banana_mcp.monet.client import UNKNOWN_CLOCK_SLACK
from nano_banana_mcp.provenance import Provenance, finish_image
from nano_banana_mcp.storage import ImageStore, StorageError
from nano_banana_mcp.tasks.create_path import CreatePath
from nano_banana_mcp.tasks.records import MAX_STREAMS_PER_KEY, SavedImage, TaskRecord, now
from nano_banana_mcp.tasks.store import LedgerStore, RowTaken

__all__ = ["Listener", "Runner"]

log = logging.getLogger(__name__)

Listener = Callable[[TaskRecord], Awaitable[None]]

FEW_TRIES = 3
"""Tries of a row's step that failed in a way the page does not describe (or by a bug here) before the row ends."""
LIST_PAGES = 5
"""``GET /tasks/list`` pages read (newest first) when looking for a task no answer named."""
LIST_PAGE_SIZE = 20
"""The page's own example size."""


class _NotListedYet(MonetError):
    """The task a create made is not (yet) in ``GET /tasks/list``: looked for again, until ``task_timeout``."""


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
        create_path: CreatePath | None = None,
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
        self.create_path = create_path or CreatePath(None, clients.base_url or "")
        self._parked: dict[str, str] = {}  # rows waiting for a setting (key -> why): not worked again here
        self._strikes: dict[str, int] = {}  # failures of the FEW_TRIES kind, per row
        self._began: dict[str, float] = {}  # when this process began following each row at the API
        self._finding = anyio.Lock()  # one search of the task list at a time: two rows never pick the same task
        # A row is worked until it is finished: a failure _advance raises is tried again, with the policy's backoff
        # (and a 429's Retry-After); the failures that end or park a row are not raised.
        self._persist = clients.retry.with_(attempts=None, retry_on=lambda err: not isinstance(err, RowTaken))

    def start(self) -> None:
        """Resume what the ledger holds now, and keep sweeping while the server runs; with a listener, also tell it of
        the rows other processes finish (replicas on PostgreSQL: one of them finishes a task another's client is
        subscribed to)."""
        self._tg.start_soon(self._sweep_forever, name="ledger sweep")
        if self._on_finished is not None:
            self._tg.start_soon(self._ledger.watch_finished, self._on_finished, name="ledger watch")

    def follow(self, key: str, *, again: bool = False) -> None:
        """Work the row with this key in the background, unless this process already does. A parked row (waiting for
        a setting) is worked again only when ``again`` (someone asked for the task: it may have been mended)."""
        if again:
            self._parked.pop(key, None)
        if key in self._active or key in self._parked:
            return
        self._active.add(key)
        self._tg.start_soon(self._run, key, name=f"task {key}")

    def is_following(self, key: str) -> bool:
        return key in self._active

    def parked(self, key: str) -> str | None:
        """Why this process stopped working the row until a setting changes (then restart), else None."""
        return self._parked.get(key)

    def live(self, key: str, *, deep: bool = True) -> TaskRecord | None:
        """A copy of the freshest state of a row this process works on (progress included), else None; ``deep=False``:
        its fields copied, its lists shared (cheaper, for a reader that changes nothing)."""
        record = self._live.get(key)
        return record.model_copy(deep=deep) if record is not None else None

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
            self._strikes.pop(key, None)
            self._began.pop(key, None)
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
        """One try at moving the row to its end; a failure worth another try is recorded on it, then raised."""
        try:
            with anyio.fail_after(self._following_left(record)):
                if record.phase == "submitting":
                    await self._create(record)
                if record.phase == "created":
                    await self._poll(record)
            if record.phase == "succeeded":
                await self._download(record)
        except RowTaken:
            raise  # not ours any more: nothing to record
        except UnsavableImage as err:  # trying again cannot help: the task ends, its URLs kept
            record.unsavable(f"The task finished at the API, but its image could not be saved: {err}")
            await self._save(record)
        except TimeoutError:
            if self._following_left(record) > 0:  # not the bound of task_timeout: a step that timed out
                raise
            record.gave_up(self._gave_up(record))
            log.warning("task %s: %s", record.handle, record.error)
            await self._save(record)
        except Exception as err:  # the one broad catch: whatever went wrong is recorded on the row
            if await self._again(record, err):
                reason = self._describe(err)
                log.warning("task %s: %s; trying again", record.handle, reason)
                record.trouble(reason)
                await self._save(record)
                raise

    async def _again(self, record: TaskRecord, err: Exception) -> bool:
        """Whether the failed step is tried again; if not, the row is ended or parked here."""
        if _plainly_transient(err):
            return True  # plainly transient: no count (a paid task's images wait for the disk or the bucket)
        if record.phase == "submitting" and isinstance(err, MonetError) and not worth_a_few_tries(err):
            record.refused(str(err))  # a refusal of the create: nothing was made, nothing charged
            await self._save(record)
            return False
        if isinstance(err, ConfigError | AuthError | HostNotAllowed | OSError):  # only a setting mends these: park
            why = _disk_error(self._store.staging, err) if isinstance(err, OSError) else str(err)
            self._parked[record.key] = why
            log.warning("task %s: waits for a setting: %s", record.handle, why)
            record.trouble(why)
            await self._save(record)
            return False
        strikes = self._strikes[record.key] = self._strikes.get(record.key, 0) + 1
        if not isinstance(err, NanoBananaError) and strikes == 1:
            log.exception("task %s: unexpected failure (a bug: please report it)", record.handle)
        if strikes < FEW_TRIES:
            return True
        if record.phase == "submitting" and isinstance(err, MalformedResponse):
            record.create_log.streams = MAX_STREAMS_PER_KEY  # its answers were unreadable: look for the task instead
            self._strikes.pop(record.key, None)
            await self._save(record)
            return True
        record.refused(f"{self._describe(err)} (tried {strikes} times; the task was given up)")
        log.warning("task %s: %s", record.handle, record.error)
        await self._save(record)
        return False

    def _following_left(self, record: TaskRecord) -> float:
        """Seconds left to follow the task at the API (``task_timeout`` from when this process began to); inf once
        finished there (saving its images is never given up). A row resumed after a restart gets a whole
        ``task_timeout`` again: one that waited while no server ran is still looked at."""
        if record.phase not in ("submitting", "created"):
            return math.inf
        began = self._began.setdefault(record.key, anyio.current_time())
        return self._settings.task_timeout - (anyio.current_time() - began)

    def _gave_up(self, record: TaskRecord) -> str:
        minutes = f"{self._settings.task_timeout / 60:g} min"
        if record.task_id is None:
            return (
                f"Gave up after {minutes}: the API never confirmed this task, and none matching it appeared in its "
                "task list, so no image was received. Check the account's task list before generating again."
            )
        return (
            f"Gave up after {minutes}: the API had not finished task {record.task_id} (its status: "
            f"{record.api_status or 'unknown'}). If it finishes later, it is in the API's task list (list_tasks)."
        )

    async def _create(self, record: TaskRecord) -> None:
        """Send the create (again), with the row's own key, to the row's own endpoint; or, when its answers never
        named the task, find it in the task list."""
        streaming = False  # holding one of the stream slots
        try:
            if record.endpoint is None:
                streaming = self.create_path.endpoint == "sync" and self._take_stream_slot()
                record.send_to("sync" if streaming else "async")
                await self._save(record)  # fixed before the first send: every resend goes to the same endpoint
            if record.create_log.streams >= MAX_STREAMS_PER_KEY:
                await self._find(record)
            elif record.endpoint == "async":
                window = _local_window()
                task = await self._client(record).create_async(record.request, record.key)
                record.create_log.took(window.earliest, window.latest, stream=False)
                await self._observe(record, task)
            else:
                if not streaming:
                    await self._streams.acquire()  # a resend of a streamed create must stream again
                    streaming = True
                await self._stream(record)
        finally:
            if streaming:
                self._streams.release()

    async def _stream(self, record: TaskRecord) -> None:
        """One ``/tasks/sync`` create and its events; when they never name the task, find it in the task list."""
        unnamed = False  # the stream said things, never which task
        try:
            async with self._client(record).create_stream(record.request, record.key) as stream:
                record.create_log.took(stream.window.earliest, stream.window.latest, stream=True)
                await self._save(record)
                async for event in stream.events:
                    if event.task is not None:
                        await self._observe(record, event.task, partial=True)
                        continue
                    unnamed = True
                    if event.progress is not None and record.task_id is None:
                        record.progress = event.progress
                        self._notify(record.key)
        except MonetError as err:
            if record.task_id is not None:
                log.info("task %s: stream ended (%s); polling", record.task_id, err)
                return
            if not is_transient(err) or record.create_log.streams == 0:
                raise  # a refusal, or no stream yet: _again decides
            if not unnamed and record.create_log.streams < MAX_STREAMS_PER_KEY:
                raise  # it broke before saying anything: the documented retry, same key, same endpoint
        if record.task_id is None:  # the stream ended without naming its task: no more posts; find it
            if unnamed:  # it spoke, in a form that never names the task (streams that only broke say nothing of it)
                self.create_path.stream_unreadable("its events never named the task")
            record.create_log.streams = MAX_STREAMS_PER_KEY
            await self._save(record)
            await self._find(record)

    async def _find(self, record: TaskRecord) -> None:
        """Find the task the row's create made in ``GET /tasks/list`` (newest first), by the creation window and the
        model, never one another row has; then follow it. ``_NotListedYet`` when it is not there (yet)."""
        log_ = record.create_log
        if log_.earliest is None or log_.latest is None:  # rows from before the log: no window, look at the last hour
            window = _local_window(3600)
            log_.earliest, log_.latest = window.earliest, window.latest
        client = self._client(record)
        candidates: list[tuple[datetime, Task]] = []
        for page in range(1, LIST_PAGES + 1):
            listed = await client.list_tasks(page, LIST_PAGE_SIZE)
            older = False
            for task in listed.tasks[:LIST_PAGE_SIZE]:
                made = _when(task.created_at)
                if made is None or made > log_.latest:
                    continue
                if made < log_.earliest:
                    older = True
                    break
                if _may_be(task, record):
                    candidates.append((made, task))
            if older or len(listed.tasks) < LIST_PAGE_SIZE:
                break
        async with self._finding:
            for _, task in sorted(candidates, key=lambda c: c[0]):  # the oldest first: creates are answered in order
                if await self._ledger.bind_task(record.key, task.id):
                    log.info("task %s: found in the task list as %s", record.key, task.id)
                    await self._observe(record, task)
                    return
        raise _NotListedYet(
            "The API took the create, but its answer never named the task, and it is not in the task list yet; "
            "looking again."
        )

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
            self._strikes.pop(record.key, None)
            if task.is_terminal:
                return
            await anyio.sleep(interval)
            interval = min(interval * 1.5, self._settings.poll_max_interval)  # fast at first, then the page's 5 s

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

    async def _observe(self, record: TaskRecord, task: Task, *, partial: bool = False) -> None:
        """Take in what the API said; a change of phase or status is written, progress only kept here."""
        if record.observe(task, partial=partial):
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
            return "A step timed out"
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


def _plainly_transient(err: Exception) -> bool:
    """Failures tried again without a count: the API or a file host unreachable (429, 5xx, cut), a task not listed
    yet, a bucket down, a full disk: a paid task's images wait for them to pass."""
    if isinstance(err, DownloadError) and isinstance(err.__cause__, Exception):
        return _plainly_transient(err.__cause__)
    if isinstance(err, OSError):
        return err.errno == errno.ENOSPC
    return is_transient(err) or isinstance(err, _NotListedYet | StorageError)


def _local_window(seconds: float = UNKNOWN_CLOCK_SLACK.total_seconds()) -> CreateWindow:
    """A create window on this machine's clock, wide enough for the API's clock to differ."""
    moment = now()
    return CreateWindow(moment - timedelta(seconds=seconds), moment + timedelta(seconds=seconds))


def _when(value: str | None) -> datetime | None:
    """An API time (ISO 8601, ``Z`` or an offset) as an aware datetime; None if absent or unreadable."""
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _may_be(task: Task, record: TaskRecord) -> bool:
    """Whether a listed task may be the row's: the same model, and the same prompt where the API lists one."""
    models = {o.model for o in task.outputs if o.model}
    listed_input = (task.model_extra or {}).get("input")
    if isinstance(listed_input, dict):
        if isinstance(listed_input.get("model"), str):
            models.add(listed_input["model"])
        prompt = listed_input.get("prompt")
        if isinstance(prompt, str) and prompt != record.request.prompt:
            return False
    return not models or record.request.model in models
