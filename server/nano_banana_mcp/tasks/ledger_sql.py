"""The SQL both task ledgers share, written once: where SQLite and PostgreSQL agree, it is here.

- :data:`COLUMNS`, the task columns both select and write, in one order, and the row <-> :class:`TaskRecord`
  mapping (:func:`record_from_row`, :func:`call_from_rows`);
- :class:`Statements`, every statement that is the same on both databases, written with ``?`` for a parameter and
  spelled for one database by its :class:`Dialect` (its parameter marker, and the few words it says its own way);
- :class:`SqlLedger`, the ledger operations that are one such statement, over two primitives each ledger provides
  (``_rows``, ``_write``: a worker thread for SQLite, a pool for PostgreSQL).

What genuinely differs stays with each database: connecting, threads or pools, owners (OS locks or advisory locks)
and claims, the announcement of finished rows, and migrations (:mod:`nano_banana_mcp.tasks.ledger`,
:mod:`nano_banana_mcp.tasks.ledger_pg`).
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ClassVar

from nano_banana_mcp.catalog import GenerateRequest
from nano_banana_mcp.tasks.records import (
    DEFAULT_TENANT,
    FINISHED_PHASES,
    UNFINISHED_PHASES,
    Call,
    CreateLog,
    SavedImage,
    Status,
    TaskRecord,
    now,
)
from nano_banana_mcp.tasks.store import RowTaken

__all__ = [
    "COLUMNS",
    "FINISHED",
    "PAID",
    "UNFINISHED",
    "Dialect",
    "SqlLedger",
    "Statements",
    "call_from_rows",
    "record_from_row",
]

COLUMNS = (
    "key",
    "task_id",
    "request",
    "phase",
    "endpoint",
    "api_status",
    "progress",
    "images",
    "error",
    "offline",
    "created_at",
    "updated_at",
    "create_log",
    "tenant",
)
"""A task row's columns as both ledgers select and insert them (:func:`record_from_row` reads them in this order)."""
UNFINISHED = f"phase IN ({', '.join(repr(p) for p in UNFINISHED_PHASES)})"
FINISHED = f"phase IN ({', '.join(repr(p) for p in FINISHED_PHASES)})"
PAID = "NOT (phase = 'failed' AND task_id IS NULL)"
"""The rows that may be paid for (nano_banana_mcp.spend): all but a create the API refused, which made nothing."""

_SELECT = ", ".join(COLUMNS)
_CALL_ROW = "c.created_at, c.cancelled_at, c.keys, " + ", ".join(f"t.{c}" for c in COLUMNS)
"""A call and one of its rows, as :meth:`SqlLedger.find_call` selects them (:func:`call_from_rows` reads them)."""
_SAVED = ", ".join(f"{c}=?" for c in (*COLUMNS[1:-1], "status"))
"""What a save writes: every column but the key and the tenant (a row's tenant never changes), and the status."""


def _same(value: Any) -> Any:
    return value


@dataclass(frozen=True)
class Dialect:
    """What one database says its own way in the statements written once here, and how it holds a value."""

    param: str
    """A positional parameter: sqlite3's ``?``, psycopg's ``%s``."""
    tiebreak: str
    """What orders rows created at the same instant, in the order they were added: SQLite's ``rowid``, a sequence."""
    call_keys: str
    """The join that lists a call's keys (a JSON array in ``c.keys``) in their order, as ``k(value, key)``."""
    arrays: bool
    """A list binds to one parameter (PostgreSQL's ``= ANY(%s)``); else each value to its own (``IN (?, ?)``)."""
    read_time: Callable[[Any], datetime]
    """A time as the database hands it back (SQLite keeps ISO text, PostgreSQL timestamps)."""
    time: Callable[[datetime], Any] = _same
    """A time as the database keeps it."""
    text: Callable[[str | None], str | None] = _same
    """Text from outside (an API, an agent) as the database can hold it."""

    def one_of(self, column: str, values: Sequence[str]) -> tuple[str, tuple[Any, ...]]:
        """A condition that ``column`` is one of ``values`` (at least one), and its parameters."""
        held = [self.text(v) for v in values]
        if self.arrays:
            return f"{column} = ANY({self.param})", (held,)
        return f"{column} IN ({', '.join([self.param] * len(held))})", tuple(held)


@dataclass(frozen=True)
class Statements:
    """The statements that are the same on both databases, spelled for one (:meth:`of`)."""

    dialect: Dialect
    add: str
    save: str
    bind_task: str
    get: str
    find: str
    recent: str
    recent_of_status: str
    count: str
    count_of_status: str
    add_call: str
    find_call: str
    find_call_head: str
    cancel_call: str
    release: str
    cached_upload: str
    remember_upload: str
    images_since: str
    spent_since: str
    spent_since_of_tenant: str

    @classmethod
    def of(cls, dialect: Dialect) -> Statements:
        def spelled(statement: str) -> str:  # no statement here holds a literal ? (nor a %, which psycopg reads)
            return statement.replace("?", dialect.param)

        newest = f"ORDER BY created_at DESC, {dialect.tiebreak} DESC LIMIT ? OFFSET ?"
        statements = {
            "add": f"INSERT INTO tasks ({_SELECT}, status, api_scope, owner) VALUES ({', '.join('?' * 17)}) "
            "ON CONFLICT (key) DO NOTHING",
            "save": f"UPDATE tasks SET {_SAVED} WHERE key=? AND owner=?",
            # Compare-and-set: the row is still this process's and unnamed, and no row has this task yet.
            "bind_task": "UPDATE tasks SET task_id=? WHERE key=? AND owner=? AND task_id IS NULL "
            "AND NOT EXISTS (SELECT 1 FROM tasks WHERE task_id=?)",
            "get": f"SELECT {_SELECT} FROM tasks WHERE key=?",
            "find": f"SELECT {_SELECT} FROM tasks WHERE (task_id=? OR key=?) AND tenant=? "
            "ORDER BY CASE WHEN task_id=? THEN 0 ELSE 1 END LIMIT 1",
            "recent": f"SELECT {_SELECT} FROM tasks WHERE tenant=? {newest}",
            "recent_of_status": f"SELECT {_SELECT} FROM tasks WHERE tenant=? AND status=? {newest}",
            "count": "SELECT count(*) FROM tasks WHERE tenant=?",
            "count_of_status": "SELECT count(*) FROM tasks WHERE tenant=? AND status=?",
            "add_call": "INSERT INTO calls (id, tenant, keys, created_at, cancelled_at) VALUES (?, ?, ?, ?, ?)",
            "find_call": f"SELECT {_CALL_ROW} FROM calls c {dialect.call_keys} JOIN tasks t ON t.key = k.value "
            "AND t.tenant = c.tenant WHERE c.id = ? AND c.tenant = ? ORDER BY k.key",
            "find_call_head": "SELECT created_at, cancelled_at, keys FROM calls WHERE id = ? AND tenant = ?",
            "cancel_call": "UPDATE calls SET cancelled_at = coalesce(cancelled_at, ?) WHERE id = ? AND tenant = ? "
            "RETURNING id",
            "release": "UPDATE tasks SET owner=NULL WHERE key=? AND owner=?",
            "cached_upload": "SELECT url, expires_at FROM uploads WHERE sha256=? AND scope=? AND tenant=?",
            "images_since": f"SELECT count(*) FROM tasks WHERE tenant=? AND created_at >= ? AND {PAID}",
            "spent_since": f"SELECT tenant, request, created_at FROM tasks WHERE created_at >= ? AND {PAID}",
            "spent_since_of_tenant": "SELECT tenant, request, created_at FROM tasks WHERE tenant=? AND created_at >= ? "
            f"AND {PAID}",
            "remember_upload": "INSERT INTO uploads (sha256, scope, tenant, url, expires_at) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (sha256, scope, tenant) DO UPDATE SET url=excluded.url, expires_at=excluded.expires_at",
        }
        return cls(dialect=dialect, **{name: spelled(s) for name, s in statements.items()})


class SqlLedger(ABC):
    """The operations of a :class:`~nano_banana_mcp.tasks.store.LedgerStore` that are one statement on either
    database. A ledger sets :attr:`sql`, ``api_scope`` and ``upload_scope``, and provides ``owner``, ``_rows`` and
    ``_write``; it adds what its database does its own way (opening, claims, the watch of other processes)."""

    sql: ClassVar[Statements]
    api_scope: str
    upload_scope: str

    @property
    @abstractmethod
    def owner(self) -> str: ...

    @abstractmethod
    async def _rows(self, query: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        """Run a query; its rows."""

    @abstractmethod
    async def _write(self, query: str, params: Sequence[Any]) -> int:
        """Run a statement; the number of rows it changed."""

    async def _call_rows(self, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        """The rows of :meth:`find_call` (SQLite reads them on a connection of its own)."""
        return await self._rows(self.sql.find_call, params)

    # -- task records ----------------------------------------------------------------------------

    async def add(self, record: TaskRecord) -> bool:
        """Insert a new row, owned by this process: it is about to send the create. False (nothing written) when a
        row with this key exists already."""
        added = await self._write(self.sql.add, (*self._row(record), record.status, self.api_scope, self.owner))
        return added == 1

    async def save(self, record: TaskRecord) -> None:
        """Write the row's new state, only while this process owns it (else :class:`RowTaken`)."""
        record.updated_at = now()
        key, *rest, _tenant = self._row(record)  # a row's tenant never changes
        written = await self._write(self.sql.save, (*rest, record.status, key, self.owner))
        if written != 1:
            raise RowTaken(f"task {record.handle}: this process no longer owns the row; it was not written")

    async def bind_task(self, key: str, task_id: str) -> bool:
        """Give this process's row, still unnamed, the API's task ``task_id``, unless another row has it already."""
        text = self.sql.dialect.text
        bound = await self._write(self.sql.bind_task, (text(task_id), text(key), self.owner, text(task_id)))
        return bound == 1

    async def get(self, key: str) -> TaskRecord | None:
        rows = await self._rows(self.sql.get, (self.sql.dialect.text(key),))
        return self._record(rows[0]) if rows else None

    async def find(self, handle: str, *, tenant: str = DEFAULT_TENANT) -> TaskRecord | None:
        """The row an agent means: by the API's task id, or by our own key before the API named it."""
        held = self.sql.dialect.text(handle)
        rows = await self._rows(self.sql.find, (held, held, tenant, held))
        return self._record(rows[0]) if rows else None

    async def known_task_ids(self, task_ids: Sequence[str], *, tenant: str = DEFAULT_TENANT) -> set[str]:
        """Which of these API task ids have a row of this tenant here (one query, however many)."""
        wanted = list(dict.fromkeys(task_ids))[:1000]
        if not wanted:
            return set()
        one_of, args = self.sql.dialect.one_of("task_id", wanted)
        rows = await self._rows(
            f"SELECT task_id FROM tasks WHERE tenant={self.sql.dialect.param} AND {one_of}", (tenant, *args)
        )
        return {row[0] for row in rows}

    async def recent(
        self, limit: int, offset: int = 0, status: Status | None = None, *, tenant: str = DEFAULT_TENANT
    ) -> list[TaskRecord]:
        """This tenant's rows newest first, optionally only those with this public status."""
        if status:
            rows = await self._rows(self.sql.recent_of_status, (tenant, status, limit, offset))
        else:
            rows = await self._rows(self.sql.recent, (tenant, limit, offset))
        return [self._record(r) for r in rows]

    async def count(self, status: Status | None = None, *, tenant: str = DEFAULT_TENANT) -> int:
        if status:
            [(count,)] = await self._rows(self.sql.count_of_status, (tenant, status))
        else:
            [(count,)] = await self._rows(self.sql.count, (tenant,))
        return int(count)

    # -- spend -----------------------------------------------------------------------------------

    async def images_since(self, since: datetime, *, tenant: str) -> int:
        [(count,)] = await self._rows(self.sql.images_since, (tenant, self.sql.dialect.time(since)))
        return int(count)

    async def spent_since(self, since: datetime, *, tenant: str | None = None) -> list[tuple[str, str, datetime]]:
        when = self.sql.dialect.time(since)
        if tenant is None:
            rows = await self._rows(self.sql.spent_since, (when,))
        else:
            rows = await self._rows(self.sql.spent_since_of_tenant, (tenant, when))
        return [(t, request, self.sql.dialect.read_time(created)) for t, request, created in rows]

    # -- calls answered with a task ----------------------------------------------------------------

    async def add_call(self, call: Call) -> None:
        """Write a call's id, tenant and rows (committed when this returns: any process on the ledger finds it)."""
        d = self.sql.dialect
        await self._write(
            self.sql.add_call,
            (
                call.id,
                call.tenant,
                json.dumps([d.text(k) for k in call.keys]),
                d.time(call.created_at),
                d.time(call.cancelled_at) if call.cancelled_at else None,
            ),
        )

    async def find_call(self, call_id: str, *, tenant: str = DEFAULT_TENANT) -> tuple[Call, list[TaskRecord]] | None:
        """This tenant's call and its rows in the call's order, in one query; None if unknown or another tenant's."""
        rows = await self._call_rows((self.sql.dialect.text(call_id), tenant))
        if not rows:
            return None
        return call_from_rows(call_id, tenant, rows, self.sql.dialect.read_time)

    async def cancel_call(self, call_id: str, at: datetime, *, tenant: str = DEFAULT_TENANT) -> bool:
        """Mark this tenant's call cancelled at ``at``, unless it was already; False for an unknown id."""
        d = self.sql.dialect
        return bool(await self._rows(self.sql.cancel_call, (d.time(at), d.text(call_id), tenant)))

    # -- owners --------------------------------------------------------------------------------

    async def release(self, key: str) -> None:
        await self._write(self.sql.release, (self.sql.dialect.text(key), self.owner))

    # -- uploads -------------------------------------------------------------------------------

    async def cached_upload(self, sha256: str, *, tenant: str = DEFAULT_TENANT) -> tuple[str, datetime] | None:
        rows = await self._rows(self.sql.cached_upload, (self.sql.dialect.text(sha256), self.upload_scope, tenant))
        return (rows[0][0], self.sql.dialect.read_time(rows[0][1])) if rows else None

    async def remember_upload(
        self, sha256: str, url: str, expires_at: datetime, *, tenant: str = DEFAULT_TENANT
    ) -> None:
        d = self.sql.dialect
        await self._write(
            self.sql.remember_upload, (d.text(sha256), self.upload_scope, tenant, d.text(url), d.time(expires_at))
        )

    # -- other modules' tables -------------------------------------------------------------------

    async def run_sql(self, query: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """One statement, written with ``?``, on a table another module keeps in this database (tasks/sets.py; its
        migration is each ledger's): its rows. A time is bound as the database keeps it (and read back as it does:
        ISO text from SQLite, a timestamp from PostgreSQL). No such statement holds a literal ``?`` (nor a ``%``)."""
        d = self.sql.dialect
        held = [d.time(p) if isinstance(p, datetime) else p for p in params]
        return await self._rows(query.replace("?", d.param), held)

    # -- rows ----------------------------------------------------------------------------------

    def _row(self, r: TaskRecord) -> tuple[Any, ...]:
        """A record as its row's :data:`COLUMNS`."""
        d = self.sql.dialect
        images = "[" + ",".join(i.model_dump_json() for i in r.images) + "]"
        return (
            d.text(r.key),
            d.text(r.task_id),
            r.request.model_dump_json(),
            r.phase,
            r.endpoint,
            d.text(r.api_status),
            r.progress,
            images,
            d.text(r.error),
            r.offline,
            d.time(r.created_at),
            d.time(r.updated_at),
            r.create_log.model_dump_json(exclude_defaults=True),
            r.tenant,
        )

    def _record(self, row: Sequence[Any]) -> TaskRecord:
        return record_from_row(row, self.sql.dialect.read_time)


def record_from_row(row: Sequence[Any], read_time: Callable[[Any], datetime]) -> TaskRecord:
    """A task row as both ledgers select it (:data:`COLUMNS`), its times read by the database's ``read_time``."""
    key, task_id, request, phase, endpoint, api_status, progress, images, error, offline = row[:10]
    return TaskRecord(
        tenant=row[13],
        create_log=CreateLog.model_validate_json(row[12]),
        key=key,
        task_id=task_id,
        request=GenerateRequest.model_validate_json(request),
        phase=phase,
        endpoint=endpoint,
        api_status=api_status,
        progress=progress,
        images=[SavedImage.model_validate(i) for i in json.loads(images)],
        error=error,
        offline=bool(offline),
        created_at=read_time(row[10]),
        updated_at=read_time(row[11]),
    )


def call_from_head(call_id: str, tenant: str, head: Sequence[Any], read_time: Callable[[Any], datetime]) -> Call:
    """A call from its created_at, cancelled_at and keys, as both ledgers select them."""
    created, cancelled, keys = head
    when = read_time(cancelled) if cancelled else None
    return Call(id=call_id, tenant=tenant, keys=json.loads(keys), created_at=read_time(created), cancelled_at=when)


def call_from_rows(
    call_id: str,
    tenant: str,
    rows: Sequence[Sequence[Any]],
    read_time: Callable[[Any], datetime],
    known: Callable[[str], TaskRecord | None] | None = None,
) -> tuple[Call, list[TaskRecord]]:
    """A call and its rows as both ledgers select them (the call's created_at, cancelled_at and keys, then the row's
    :data:`COLUMNS`), its times read by the database's ``read_time``; a row ``known`` gives (by key) is not read."""
    call = call_from_head(call_id, tenant, rows[0][:3], read_time)
    if known is None:
        return call, [record_from_row(row[3:], read_time) for row in rows]
    return call, [known(row[3]) or record_from_row(row[3:], read_time) for row in rows]
