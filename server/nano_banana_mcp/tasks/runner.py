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

import logging
import math
from collections.abc import Awaitable, Callable
from functools import partial

import anyio
from anyio.abc import TaskGroup

from nano_banana_mcp import observability
from nano_banana_mcp.config import Settings
from nano_banana_mcp.errors import (
    AuthError,
    ConfigError,
    HostNotAllowed,
    MalformedResponse,
    MonetError,
    NanoBananaError,
    NotFound,
    UnsavableImage,
)
from nano_banana_mcp.monet import MonetClient, MonetClients, Task, is_transient, worth_a_few_tries
from nano_banana_mcp.storage import ImageStore
from nano_banana_mcp.tasks.create_path import CreatePath
from nano_banana_mcp.tasks.failures import (
    FEW_TRIES,
    NotListedYet,
    Work,
    describe,
    disk_error,
    gave_up,
    plainly_transient,
)
from nano_banana_mcp.tasks.finding import candidates, local_window
from nano_banana_mcp.tasks.records import MAX_STREAMS_PER_KEY, TaskRecord, now
from nano_banana_mcp.tasks.saving import Saver
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
        self._saver = Saver(store, settings.max_download_bytes)
        self._streams = anyio.CapacityLimiter(max(settings.max_streams, 1))  # each open stream holds a connection
        self.create_path = create_path or CreatePath(None, clients.base_url or "")
        self._parked: dict[str, str] = {}  # rows waiting for a setting (key -> why): not worked again here
        self._work: dict[str, Work] = {}  # what this process counts of each row it works
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

    def live_now(self, key: str) -> TaskRecord | None:
        """:meth:`live` itself, not a copy: for a reader done with it before anything awaits (it changes in place)."""
        return self._live.get(key)

    def load(self) -> tuple[int, int, list[TaskRecord]]:  # stream slots in use, allowed; rows worked now (/metrics)
        return self._streams.borrowed_tokens, self._settings.max_streams, list(self._live.values())

    def changed(self, key: str) -> anyio.Event:
        """An event set at the next change of this row. Take it before reading the row."""
        return self._events.get(key) or self._events.setdefault(key, anyio.Event())

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
                with observability.task(record):  # its trace, and its count once finished (/metrics)
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
            self._work.pop(key, None)
            self._saver.forget(key)
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
                await self._saver.save(record, partial(self._client, record), self._save)
        except RowTaken:
            raise  # not ours any more: nothing to record
        except UnsavableImage as err:  # trying again cannot help: the task ends, its URLs kept
            record.unsavable(f"The task finished at the API, but its image could not be saved: {err}")
            await self._save(record)
        except TimeoutError:
            if self._following_left(record) > 0:  # not the bound of task_timeout: a step that timed out
                raise
            record.gave_up(gave_up(record, self._settings.task_timeout))
            log.warning("task %s: %s", record.handle, record.error)
            await self._save(record)
        except Exception as err:  # the one broad catch: whatever went wrong is recorded on the row
            if await self._again(record, err):
                reason = describe(err, self._store.staging)
                log.warning("task %s: %s; trying again", record.handle, reason)
                record.trouble(reason)
                await self._save(record)
                raise

    async def _again(self, record: TaskRecord, err: Exception) -> bool:
        """Whether the failed step is tried again; if not, the row is ended or parked here."""
        if plainly_transient(err):
            return True  # plainly transient: no count (a paid task's images wait for the disk or the bucket)
        if record.phase == "submitting" and isinstance(err, MonetError) and not worth_a_few_tries(err):
            record.refused(str(err), err)  # a refusal of the create: nothing was made, nothing charged
            await self._save(record)
            return False
        if isinstance(err, ConfigError | AuthError | HostNotAllowed | OSError):  # only a setting mends these: park
            why = disk_error(self._store.staging, err) if isinstance(err, OSError) else str(err)
            self._parked[record.key] = why
            log.warning("task %s: waits for a setting: %s", record.handle, why)
            record.trouble(why)
            await self._save(record)
            return False
        work = self._work_on(record)
        work.strikes += 1
        strikes = work.strikes
        if not isinstance(err, NanoBananaError) and strikes == 1:
            log.exception("task %s: unexpected failure (a bug: please report it)", record.handle)
        if strikes < FEW_TRIES:
            return True
        if record.phase == "submitting" and isinstance(err, MalformedResponse):
            record.create_log.streams = MAX_STREAMS_PER_KEY  # its answers were unreadable: look for the task instead
            work.strikes = 0
            await self._save(record)
            return True
        record.refused(f"{describe(err, self._store.staging)} (tried {strikes} times; the task was given up)", err)
        log.warning("task %s: %s", record.handle, record.error)
        await self._save(record)
        return False

    def _work_on(self, record: TaskRecord) -> Work:
        work = self._work.get(record.key)
        if work is None:
            work = self._work[record.key] = Work(began=anyio.current_time())
        return work

    def _following_left(self, record: TaskRecord) -> float:
        """Seconds left to follow the task at the API (``task_timeout`` from when this process began to); inf once
        finished there (saving its images is never given up). A row resumed after a restart gets a whole
        ``task_timeout`` again: one that waited while no server ran is still looked at."""
        if record.phase not in ("submitting", "created"):
            return math.inf
        return self._settings.task_timeout - (anyio.current_time() - self._work_on(record).began)

    async def _create(self, record: TaskRecord) -> None:
        """Send the create (again), with the row's own key, to the row's own endpoint; or, when its answers never
        named the task, find it in the task list."""
        streaming = False  # holding one of the stream slots
        try:
            if record.endpoint is None:
                streaming = self.create_path.endpoint == "sync" and self._take_stream_slot()
                record.send_to("sync" if streaming else "async")
                record.create_log.first_sent = now()
                await self._save(record)  # fixed before the first send: every resend goes to the same endpoint
            if record.create_log.streams >= MAX_STREAMS_PER_KEY:
                await self._find(record)
            elif record.endpoint == "async":
                window = local_window()
                task = await self._client(record).create_async(record.request, record.key)
                record.create_log.took(window.earliest, window.latest, stream=False)
                await self._observe(record, task, partial=True)  # a create's answer need not list the outputs
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
            sent = now()
            async with self._client(record).create_stream(record.request, record.key) as stream:
                # The task was made by the first send of this key, which may be earlier than this one (its answer
                # lost): the window reaches back that far, on the API's clock.
                back = sent - (record.create_log.first_sent or sent)
                record.create_log.took(stream.window.earliest - back, stream.window.latest, stream=True)
                await self._save(record)
                async for event in stream.events:
                    if event.task is not None:
                        await self._observe(record, event.task, partial=True)
                        continue
                    unnamed = True
                    if event.progress is not None and record.task_id is None:
                        record.progress, record.updated_at = event.progress, now()
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
        model, never one another row has; then follow it. ``NotListedYet`` when it is not there (yet)."""
        work = self._work_on(record)
        work.searches += 1
        found = await candidates(self._client(record), record, wide=work.searches > 1)
        async with self._finding:
            for task in found:  # the nearest to when the create was answered first
                if await self._ledger.bind_task(record.key, task.id):
                    log.info("task %s: found in the task list as %s", record.key, task.id)
                    await self._observe(record, task)
                    return
        raise NotListedYet(
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
            self._work_on(record).strikes = 0
            if task.is_terminal:
                return
            await anyio.sleep(interval)
            interval = min(interval * 1.5, self._settings.poll_max_interval)  # fast at first, then the page's 5 s

    def _client(self, record: TaskRecord) -> MonetClient:
        """The client of the row's tenant; a ConfigError (recorded on the row, retried) when it has no key here."""
        return self._clients.require(record.tenant)

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
