"""What the runner and the service need from a ledger, whichever database holds it.

Two ledgers satisfy it: :class:`~nano_banana_mcp.tasks.ledger.Ledger` (SQLite in the data dir, the default)
and :class:`~nano_banana_mcp.tasks.ledger_pg.PostgresLedger` (``NANO_BANANA_DATABASE_URL``, for replicas of a
team server). Both keep the same promises:

- a task's row, with its idempotency key, is written before its create is sent (:meth:`LedgerStore.add`);
- a row is worked by one live process at a time, its **owner**: a process that dies loses its rows at once,
  a claim is a compare-and-set, and a process whose row was taken over is refused its next write
  (:class:`RowTaken`) and stops;
- the schema is versioned and migrated once, however many processes start together;
- uploads are cached by content hash, per API and tenant;
- a process hears of the rows the others finish (:meth:`LedgerStore.watch_finished`), where the database can tell;
- a call answered with an MCP task keeps its id, tenant and rows (:meth:`LedgerStore.add_call`), written before the
  id is handed out, so any process on the ledger answers for it;
- every look-up a caller makes (``find``, ``find_call``, ``known_task_ids``, ``recent``, ``count``, the upload
  cache) is of one tenant's rows; the runner's own work (``get`` by key, ``claim``, ``claimable``, ``save``) spans
  every tenant.

Every failure to reach, migrate, read or write the database is a ``ConfigError`` naming it and the setting.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Any, Protocol, Self

from nano_banana_mcp.errors import NanoBananaError
from nano_banana_mcp.tasks.records import DEFAULT_TENANT, Call, Status, TaskRecord

__all__ = ["LedgerStore", "RowTaken"]


class RowTaken(NanoBananaError):
    """This process no longer owns the row (it lost its owner lock and another process took the row over):
    the write is refused, and whoever was working the row stops; its new owner carries it on."""


class LedgerStore(Protocol):
    """Task records, their owners, and the upload cache. One instance per process."""

    @property
    def owner(self) -> str:
        """The identity this process writes on the rows it works (changes if its owner lock is ever lost)."""
        ...

    async def open(self) -> Self:
        """Reach the database, migrate its schema, and take this process's owner lock."""
        ...

    async def close(self) -> None:
        """Let go of the database; rows this process owned are taken over by the others at once."""
        ...

    async def ping(self) -> None:
        """Return if the ledger answers (a health check); ConfigError otherwise."""
        ...

    # -- task records ----------------------------------------------------------------------------

    async def add(self, record: TaskRecord) -> bool:
        """Insert a new row, owned by this process: it is about to send the create. False (nothing written) when a
        row with this key exists already (a request sent again with its ``request_id``)."""
        ...

    async def save(self, record: TaskRecord) -> None:
        """Write the row's new state; :class:`RowTaken` if another process owns it now."""
        ...

    async def bind_task(self, key: str, task_id: str) -> bool:
        """Give this process's row, not yet named by the API, the task ``task_id`` found for it, unless another row
        (of any tenant) has that task already: a compare-and-set, so two rows never share one task."""
        ...

    async def get(self, key: str) -> TaskRecord | None:
        """The row with this key, of any tenant: for the runner, and for keys read from a tenant's own rows."""
        ...

    async def find(self, handle: str, *, tenant: str = DEFAULT_TENANT) -> TaskRecord | None:
        """This tenant's row an agent means: by the API's task id, or by our own key before the API named it.

        Another tenant's row is not found: to a caller it does not exist.
        """
        ...

    async def known_task_ids(self, task_ids: Sequence[str], *, tenant: str = DEFAULT_TENANT) -> set[str]:
        """Which of these API task ids have a row of this tenant here (one query, however many)."""
        ...

    async def recent(
        self, limit: int, offset: int = 0, status: Status | None = None, *, tenant: str = DEFAULT_TENANT
    ) -> list[TaskRecord]:
        """This tenant's rows newest first, optionally only those with this public status."""
        ...

    async def count(self, status: Status | None = None, *, tenant: str = DEFAULT_TENANT) -> int: ...

    # -- spend (nano_banana_mcp.spend) -----------------------------------------------------------

    async def images_since(self, since: datetime, *, tenant: str) -> int:
        """The tenant's rows created at or after ``since`` that may be paid for: all but a create the API refused (a
        failed row it never named: nothing was made)."""
        ...

    async def spent_since(self, since: datetime, *, tenant: str | None = None) -> list[tuple[str, str, datetime]]:
        """``(tenant, request JSON, created_at)`` of the rows :meth:`images_since` counts, of one tenant or (None)
        of every tenant."""
        ...

    # -- calls answered with a task ----------------------------------------------------------------

    async def add_call(self, call: Call) -> None:
        """Write a call's id, tenant and rows (the rows exist already). Once this returns, a look-up by any process on
        the ledger finds it."""
        ...

    async def find_call(self, call_id: str, *, tenant: str = "default") -> tuple[Call, list[TaskRecord]] | None:
        """This tenant's call and its rows, in the call's order, in one read; None for an id that is unknown or another
        tenant's (the two cannot be told apart)."""
        ...

    async def cancel_call(self, call_id: str, at: datetime, *, tenant: str = "default") -> bool:
        """Mark this tenant's call cancelled at ``at`` (the first time only); False for an unknown id. Its rows go
        on."""
        ...

    # -- owners ----------------------------------------------------------------------------------

    async def claim(self, key: str) -> bool:
        """Own an unfinished row of this API: if nobody does, this process already does, or its owner is dead."""
        ...

    async def release(self, key: str) -> None: ...

    async def claimable(self) -> list[str]:
        """Unfinished rows of this API with no live owner but this process, oldest first."""
        ...

    # -- uploads ---------------------------------------------------------------------------------

    async def cached_upload(self, sha256: str, *, tenant: str = DEFAULT_TENANT) -> tuple[str, datetime] | None: ...

    async def remember_upload(
        self, sha256: str, url: str, expires_at: datetime, *, tenant: str = DEFAULT_TENANT
    ) -> None: ...

    # -- other modules' tables -------------------------------------------------------------------

    async def run_sql(self, query: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """One statement, written with ``?``, on a table another module keeps in the ledger's database (its migration
        is the ledger's): its rows. Failures as the ledger's own (``ConfigError`` / ``DatabaseUnavailable``)."""
        ...

    # -- other processes -------------------------------------------------------------------------

    async def watch_finished(self, on_finished: Callable[[TaskRecord], Awaitable[None]]) -> None:
        """Call ``on_finished`` for each row another process finishes, until cancelled (returns at once when the
        ledger cannot tell: SQLite).

        Each finish is told once, with the row as written (its tenant included); a row this process finished itself is
        not told (its runner does that). Losing the database is not an error: the watch goes on when it is back.
        """
        ...
