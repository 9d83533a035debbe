"""Calls answered with an MCP task (``mcp_server.tasks_extension``): the part of :class:`~.service.Service` that
gives a call's rows an id of their own, finds it again on any process sharing the ledger, cancels it, and tells
its result and its changes."""

from __future__ import annotations

import secrets
from collections.abc import Sequence

import anyio

from nano_banana_mcp.spend import Spend, with_made
from nano_banana_mcp.tasks.records import CALL_ID_BYTES, DEFAULT_TENANT, Call, TaskRecord, now
from nano_banana_mcp.tasks.results import CallState, TaskResult, outcome
from nano_banana_mcp.tasks.runner import Runner
from nano_banana_mcp.tasks.store import LedgerStore

__all__ = ["CallsMixin"]


class CallsMixin:
    """Mixed into :class:`~.service.Service`, whose fields and row helpers it uses."""

    ledger: LedgerStore
    runner: Runner | None
    spend: Spend

    async def _current(self, key: str) -> TaskRecord | None:
        raise NotImplementedError

    def _fresh(self, record: TaskRecord, *, deep: bool = True) -> TaskRecord:
        raise NotImplementedError

    def _resume(self, record: TaskRecord) -> None:
        raise NotImplementedError

    def result(self, record: TaskRecord, *, links: bool = True) -> TaskResult:
        raise NotImplementedError

    async def open_call(self, records: Sequence[TaskRecord], *, tenant: str = DEFAULT_TENANT) -> CallState:
        """Give the rows one call wrote an id of their own (an MCP task), bound to the tenant, and write it: once this
        returns, :meth:`call` finds it on any process that shares the ledger. The id is random (192 bits), never the
        API's nor a row's key."""
        call = Call(id=secrets.token_urlsafe(CALL_ID_BYTES), keys=[r.key for r in records], tenant=tenant)
        with anyio.CancelScope(shield=True):  # written whole or not at all before the id is handed out
            await self.ledger.add_call(call)
        return CallState(call, [await self._current(r.key) or r for r in records])

    async def call(self, call_id: str, *, tenant: str = DEFAULT_TENANT) -> CallState | None:
        """The tenant's call and its rows, fresh; None for an id that is unknown or another tenant's (alike).

        One ledger read. A row waiting here for a setting (parked: a folder not writable, a key refused) is tried
        again, as :meth:`get` does: being asked for is the cue that it may have been mended. No other resume: the
        sweep carries on rows nobody works (a call polled every second must not claim rows every second).
        """
        return self._call_state(await self.ledger.find_call(call_id, tenant=tenant))

    def call_now(self, call_id: str, *, tenant: str = DEFAULT_TENANT) -> CallState | None:
        """:meth:`call`, read on the calling thread (the event loop) without waiting; ``BlockingIOError`` when the
        ledger cannot answer so (PostgreSQL, or SQLite busy): then :meth:`call`. The rows this process works on are
        the runner's own records (neither read from the ledger's row nor copied, a host polls every second): the
        state is for a reader that is done with it before anything awaits."""
        find_now = getattr(self.ledger, "find_call_now", None)  # the SQLite ledger's
        if find_now is None:
            raise BlockingIOError("this ledger is read asynchronously")
        known = self.runner.live_now if self.runner is not None else None
        return self._call_state(find_now(call_id, tenant=tenant, known=known), fresh=False)

    def _call_state(self, found: tuple[Call, list[TaskRecord]] | None, *, fresh: bool = True) -> CallState | None:
        if found is None:
            return None
        for record in found[1]:
            if self.runner is not None and self.runner.parked(record.key) is not None:
                self._resume(record)
        return CallState(found[0], [self._fresh(r, deep=False) for r in found[1]] if fresh else found[1])

    async def cancel_call(self, call_id: str, *, tenant: str = DEFAULT_TENANT) -> CallState | None:
        """Cancel the tenant's call, as far as anything can be: the API has no cancel, so its rows go on, and their
        images (paid for) are saved and listed as any others. A call already finished stays as it was. None for an
        unknown id."""
        state = await self.call(call_id, tenant=tenant)
        if state is None or state.finished or state.call.cancelled_at is not None:
            return state
        await self.ledger.cancel_call(call_id, now(), tenant=tenant)
        return await self.call(call_id, tenant=tenant)

    def call_result(self, state: CallState) -> TaskResult:
        """What ``generate`` would have returned for the call's rows as they stand (``MonetError`` if every create was
        refused)."""
        return with_made(outcome, state.records, [self.result(r) for r in state.records], self.spend.prices)

    async def next_change(self, keys: Sequence[str]) -> None:
        """Return at the next change (progress included) of one of these rows that this process works on; never, if it
        works on none of them (a row another process works on is not seen to change here: bound the wait)."""
        runner = self.runner
        events = [runner.changed(k) for k in keys if runner is not None and runner.is_following(k)]
        if not events:
            await anyio.sleep_forever()
        async with anyio.create_task_group() as tg:

            async def first(event: anyio.Event) -> None:
                await event.wait()
                tg.cancel_scope.cancel()

            for event in events:
                tg.start_soon(first, event)
