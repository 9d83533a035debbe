"""The task ledger in PostgreSQL (``NANO_BANANA_DATABASE_URL``): one database for every replica of a team server.

It keeps the promises of :class:`~nano_banana_mcp.tasks.store.LedgerStore` with the database's own means:

- **Owners are sessions.** Each process holds a session-level advisory lock keyed by its owner id
  (``pg_advisory_lock(hashtextextended(owner, 0))``) on a connection of its own, for as long as it runs. A
  process that dies loses that connection, and PostgreSQL ends the session and drops the lock: at once for a
  killed process (its socket closes), after the TCP keepalives set here (about 25 s) for a vanished host. An
  owner is dead when its lock can be taken: ``pg_try_advisory_lock`` of its key, unlocked again in the same
  statement. A claim is one ``UPDATE`` whose condition is "no owner, or me, or a dead owner": of two processes
  racing for a dead owner's row, one takes the row lock and wins; the other re-reads the row, finds a live
  owner, and loses. No clock is trusted.
- **A process that loses its own lock** (a network cut, a database restart) is dead to the others, so it takes
  a new owner id on a new connection; its rows are claimed again by whoever comes first, and a write on a row
  that changed hands meanwhile is refused (:class:`RowTaken`), so two processes never work one row.
- **Finishes are announced.** The write that finishes a row also sends ``pg_notify`` on :data:`FINISHED_CHANNEL`
  (the writer's owner id and the row's key, tab-separated), in the same statement: sent when it commits, never
  for a write refused. Each process listens on a connection of its own (:meth:`PostgresLedger.watch_finished`) and
  tells its own subscribers of the rows the others finished.
- **Migrations** are versioned in a ``schema_version`` table and applied inside one transaction that holds a
  transaction-level advisory lock: of replicas starting together one migrates, the others wait, then find
  nothing to do. PostgreSQL's DDL is transactional: a failed migration leaves nothing half done.

Queries go through a small pool (psycopg 3, async); the owner connection is apart from it, so no pooled session
ever holds an owner lock, and so is the one that listens. This module needs the ``team`` extra (``pip install
'nano-banana-mcp[team]'``); :func:`nano_banana_mcp.runtime.ledger_for` imports it only when a database URL is set.
A failure at start is a :class:`ConfigError` naming the database (``user@host:port/dbname``, never the password)
and the setting, for the operator who starts the server. A failure while serving is :class:`DatabaseUnavailable`,
whose text (a tenant may read it) names no database: the log has the same detail for the operator.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any, LiteralString

import anyio
import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool
from pydantic import SecretStr

from nano_banana_mcp.errors import ConfigError, DatabaseUnavailable, NanoBananaError
from nano_banana_mcp.tasks.records import (
    DEFAULT_TENANT,
    FINISHED_PHASES,
    UNFINISHED_PHASES,
    Call,
    Status,
    TaskRecord,
    now,
)
from nano_banana_mcp.tasks.store import RowTaken, call_from_rows, record_from_row

__all__ = ["FINISHED_CHANNEL", "MIGRATIONS", "POOL_SIZE", "SCHEMA_VERSION", "DatabaseUnavailable", "PostgresLedger"]

log = logging.getLogger(__name__)

_Connection = psycopg.AsyncConnection[TupleRow]

# Each entry migrates the schema from version i to i + 1. Append; never edit a released entry. JSON is kept as
# text, as in SQLite: jsonb refuses the \u0000 a prompt may hold.
MIGRATIONS: Sequence[LiteralString] = (
    """
    CREATE TABLE tasks (
        seq        bigint GENERATED ALWAYS AS IDENTITY,
        key        text PRIMARY KEY,
        task_id    text UNIQUE,
        request    text NOT NULL,
        phase      text NOT NULL,
        status     text NOT NULL,
        endpoint   text,
        api_status text,
        progress   double precision,
        images     text NOT NULL DEFAULT '[]',
        error      text,
        offline    boolean NOT NULL DEFAULT false,
        api_scope  text NOT NULL,
        owner      text,
        created_at timestamptz NOT NULL,
        updated_at timestamptz NOT NULL
    );
    CREATE INDEX tasks_created ON tasks (created_at DESC, seq DESC);
    CREATE INDEX tasks_status ON tasks (status, created_at DESC, seq DESC);
    CREATE INDEX tasks_unfinished ON tasks (api_scope, created_at)
        WHERE phase IN ('submitting', 'created', 'succeeded');
    CREATE TABLE uploads (
        sha256     text NOT NULL,
        scope      text NOT NULL,
        url        text NOT NULL,
        expires_at timestamptz NOT NULL,
        PRIMARY KEY (sha256, scope)
    );
    """,
    # 2: tenants. Each row and each cached upload belongs to one tenant (the HTTP token's, or 'default').
    """
    ALTER TABLE tasks ADD COLUMN tenant text NOT NULL DEFAULT 'default';
    CREATE INDEX tasks_tenant_created ON tasks (tenant, created_at DESC, seq DESC);
    CREATE INDEX tasks_tenant_status ON tasks (tenant, status, created_at DESC, seq DESC);
    ALTER TABLE uploads ADD COLUMN tenant text NOT NULL DEFAULT 'default';
    ALTER TABLE uploads DROP CONSTRAINT uploads_pkey;
    ALTER TABLE uploads ADD PRIMARY KEY (sha256, scope, tenant);
    """,
    # 3: what a row's creates learned before the API named its task (tasks/records.py CreateLog), as JSON text.
    """
    ALTER TABLE tasks ADD COLUMN create_log text NOT NULL DEFAULT '{}';
    """,
    # 4: calls answered with an MCP task (tasks/records.py Call): the task's id, its tenant, its rows' keys (JSON).
    """
    CREATE TABLE calls (
        id           text PRIMARY KEY,
        tenant       text NOT NULL,
        keys         text NOT NULL,
        created_at   timestamptz NOT NULL,
        cancelled_at timestamptz
    );
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)
POOL_SIZE = 4
"""Pooled connections per process (each query holds one for a fraction of a millisecond); plus the owner's own, and
the one that listens (:meth:`PostgresLedger.watch_finished`)."""
FINISHED_CHANNEL = "nano_banana_finished"
"""Where a write that finishes a row is announced to every process on the database: its owner and key, tab-separated."""
LISTEN_RETRY_SECONDS = (0.1, 10.0)
"""The first and the longest wait before listening again on a new connection, the wait doubling in between."""
CONNECT_SECONDS = 3
"""How long opening a connection may take (libpq's connect_timeout, unless the URL sets its own; libpq advises
against less than 2 s): a database that does not answer stops a start-up within seconds, naming the setting."""
POOL_OPEN_SECONDS = 10
"""How long the pool may take to open its first connection, once the owner connection has been made."""
WAIT_SECONDS = 3.0
"""How long a query waits for a pooled connection. Queries take a millisecond: a wait this long means the database
is down, and the call says so now rather than after psycopg_pool's default 30 s."""
_KEEPALIVE = {"idle": 10, "interval": 5, "count": 3}
"""TCP keepalives on every connection, on both ends: a host that vanishes loses its owner lock in ~25 s."""

_COLUMNS = (
    "key, task_id, request, phase, endpoint, api_status, progress, images, error, offline, created_at, updated_at, "
    "create_log, tenant"
)
_CALL_ROW = "c.created_at, c.cancelled_at, c.keys, " + ", ".join(f"t.{c.strip()}" for c in _COLUMNS.split(","))
"""A call and one of its rows, as :meth:`PostgresLedger.find_call` selects them."""
_UNFINISHED = f"phase IN ({', '.join(repr(p) for p in UNFINISHED_PHASES)})"
_FINISHED = f"phase IN ({', '.join(repr(p) for p in FINISHED_PHASES)})"
_SCHEMA_LOCK = "pg_advisory_xact_lock(hashtextextended('nano-banana-mcp ledger schema', 0))"
# True when the row's owner holds no lock: it is dead. Taken and let go in one statement: nothing is left held.
_OWNER_DEAD = (
    "CASE WHEN pg_try_advisory_lock(hashtextextended(owner, 0)) "
    "THEN pg_advisory_unlock(hashtextextended(owner, 0)) ELSE false END"
)
_FREE = f"(owner IS NULL OR owner = %(me)s OR {_OWNER_DEAD})"
# The server's keepalives too (a session's own settings): it ends the session of a host that vanished.
_SERVER_KEEPALIVES = ", ".join(f"set_config('tcp_keepalives_{k}', '{v}', false)" for k, v in _KEEPALIVE.items())


def _new_owner() -> str:
    """Unique for all time: an id whose lock was lost is never taken again."""
    return f"{socket.gethostname()[:40]}-{os.getpid()}-{uuid.uuid4().hex[:12]}"


def _text(value: str | None) -> str | None:
    """PostgreSQL text holds no NUL character (an API may send one); SQLite does, so it is replaced only here."""
    return value.replace("\x00", "\ufffd") if value else value


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC)


class PostgresLedger:
    """Task records in PostgreSQL, their owners, and the upload cache. One instance per process."""

    def __init__(self, url: SecretStr, *, api_scope: str, upload_scope: str | None = None) -> None:
        """``url`` is a ``postgresql://`` URL (libpq's, so ``?sslmode=require`` and the ``PG*`` variables work);
        ``api_scope`` and ``upload_scope`` as for :class:`~nano_banana_mcp.tasks.ledger.Ledger`."""
        self.api_scope = api_scope
        self.upload_scope = upload_scope or api_scope
        self._url = url
        self.where = _where(url)
        """The database as messages name it: ``user@host:port/dbname``, without the password."""
        self._owner = _new_owner()
        self._owners: set[str] = set()  # every id this process has held: a row it finished under any is its own
        self._owner_conn: _Connection | None = None
        self._owner_guard = anyio.Lock()
        self._pool: AsyncConnectionPool[_Connection] | None = None
        self._closed = True

    @property
    def owner(self) -> str:
        return self._owner

    # -- life ----------------------------------------------------------------------------------

    async def open(self) -> PostgresLedger:
        """Connect, migrate, take this process's owner lock, and open the pool."""
        self._closed = False
        try:
            conn = await self._connect()
            self._owner_conn = conn
            await _migrate(conn, self.where)
            await self._lock_owner(conn, self._owner)
            pool: AsyncConnectionPool[_Connection] = AsyncConnectionPool(
                self._conninfo(),
                kwargs={"autocommit": True},
                min_size=1,
                max_size=POOL_SIZE,
                timeout=WAIT_SECONDS,
                open=False,
                check=AsyncConnectionPool.check_connection,  # a connection the database dropped is not handed out
                name="nano-banana-mcp ledger",
            )
            self._pool = pool
            await pool.open(wait=True, timeout=POOL_OPEN_SECONDS)
        except BaseException as err:
            with anyio.CancelScope(shield=True):
                await self.close()
            if isinstance(err, psycopg.Error):
                raise self._problem(err) from err
            raise
        return self

    async def close(self) -> None:
        """Close the pool and the owner connection: the rows this process owned are free for the others at once."""
        self._closed = True
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()
        conn, self._owner_conn = self._owner_conn, None
        if conn is not None:
            with contextlib.suppress(psycopg.Error):  # now, rather than when the server process has ended
                await conn.execute("SELECT pg_advisory_unlock_all()")
            await conn.close()

    async def ping(self) -> None:
        """The database answers, and this process holds its owner lock (taken anew if it was lost)."""
        await self._live_owner()
        await self._rows("SELECT 1")

    def _conninfo(self) -> str:
        """The URL with this package's defaults for what it leaves unsaid (a timeout, keepalives, a name)."""
        url = self._url.get_secret_value()
        given = conninfo_to_dict(url)
        defaults: dict[str, Any] = {
            "connect_timeout": CONNECT_SECONDS,
            "application_name": "nano-banana-mcp",
            "keepalives": 1,
            **{f"keepalives_{name}": value for name, value in _KEEPALIVE.items()},
        }
        return make_conninfo(url, **{k: v for k, v in defaults.items() if k not in given})

    async def _connect(self) -> _Connection:
        return await psycopg.AsyncConnection.connect(self._conninfo(), autocommit=True)

    async def _lock_owner(self, conn: _Connection, owner: str) -> None:
        """Hold an owner lock on ``conn``, for ``owner`` or, should its 64-bit hash be held already, a new id."""
        for _ in range(3):
            cursor = await conn.execute(
                f"SELECT pg_try_advisory_lock(hashtextextended(%s, 0)), {_SERVER_KEEPALIVES}", (owner,)
            )
            row = await cursor.fetchone()
            if row is not None and row[0]:
                self._owner = owner
                self._owners.add(owner)
                return
            owner = _new_owner()
        raise psycopg.OperationalError("no owner lock could be taken (three ids in a row were held)")

    async def _live_owner(self) -> str:
        """This process's owner id, its lock checked on the owner connection.

        If that connection is gone, the old id is dead to the others (its rows are theirs to claim): a new id is
        locked on a new connection.
        """
        async with self._owner_guard:
            conn = self._owner_conn
            if self._closed:
                raise RuntimeError("the ledger is closed")
            if conn is not None:
                try:
                    await conn.execute("SELECT 1")
                except psycopg.Error as err:
                    log.warning(
                        "ledger: the owner connection to %s was lost (%s); its rows are free for any replica to resume",
                        self.where,
                        self._reason(err),
                    )
                    self._owner_conn = None
                    with anyio.CancelScope(shield=True):
                        await conn.close()
                else:
                    return self._owner
            try:
                conn = await self._connect()
            except psycopg.Error as err:
                raise self._unavailable(err) from err
            try:
                await self._lock_owner(conn, _new_owner())  # the old id stays dead
            except BaseException as err:
                with anyio.CancelScope(shield=True):
                    await conn.close()
                if isinstance(err, psycopg.Error):
                    raise self._unavailable(err) from err
                raise
            self._owner_conn = conn
            log.info("ledger: owner connection to %s restored; this process is now %s", self.where, self._owner)
            return self._owner

    def _problem(self, err: BaseException) -> ConfigError:
        settings = "NANO_BANANA_DATABASE_URL (or the file NANO_BANANA_DATABASE_URL_FILE names)"
        reason = self._reason(err)
        if reason is None:
            return ConfigError(
                f"The PostgreSQL URL of the task ledger in {settings} cannot be read: write it as "
                "postgresql://user:password@host:port/dbname, with any special character in the password "
                "percent-encoded."
            )
        return ConfigError(
            f"The task ledger in PostgreSQL at {self.where} cannot be used ({reason}). Check {settings}: the "
            "server must be reachable, the database must exist, and its user must be allowed to create tables in it."
        )

    def _unavailable(self, err: BaseException) -> DatabaseUnavailable:
        """A failure while serving: logged for the operator (the database and the reason, never the password); the
        error says only that the database is unavailable."""
        log.error("ledger: %s", self._problem(err))
        return DatabaseUnavailable()

    def _reason(self, err: BaseException) -> str | None:
        """What went wrong, on one line and without the URL's password; None if the URL itself cannot be read."""
        try:
            password = conninfo_to_dict(self._url.get_secret_value()).get("password")
        except psycopg.Error:  # libpq's reason would quote the URL, password and all
            return None
        reason = " ".join(str(err).split()) or type(err).__name__
        return reason.replace(str(password), "***") if password else reason

    async def _rows(self, query: LiteralString, params: Sequence[Any] | dict[str, Any] = ()) -> list[TupleRow]:
        pool = self._require_pool()
        try:
            async with pool.connection() as conn:
                cursor = await conn.execute(query, params)
                return await cursor.fetchall() if cursor.description is not None else []
        except psycopg.Error as err:
            raise self._unavailable(err) from err

    async def _write(self, query: LiteralString, params: Sequence[Any] | dict[str, Any]) -> int:
        """Run a statement; the number of rows it changed."""
        pool = self._require_pool()
        try:
            async with pool.connection() as conn:
                return (await conn.execute(query, params)).rowcount
        except psycopg.Error as err:
            raise self._unavailable(err) from err

    def _require_pool(self) -> AsyncConnectionPool[_Connection]:
        if self._pool is None:
            raise RuntimeError("the ledger is closed")
        return self._pool

    # -- task records ----------------------------------------------------------------------------

    async def add(self, record: TaskRecord) -> bool:
        """Insert a new row, owned by this process: it is about to send the create. False (nothing written) when a
        row with this key exists already."""
        added = await self._write(
            f"INSERT INTO tasks ({_COLUMNS}, status, api_scope, owner) VALUES ({', '.join(['%s'] * 17)}) "
            "ON CONFLICT (key) DO NOTHING",
            (*self._row(record), record.status, self.api_scope, self.owner),
        )
        return added == 1

    async def save(self, record: TaskRecord) -> None:
        """Write the row's new state, only while this process owns it (else :class:`RowTaken`).

        A write that finishes the row announces it on :data:`FINISHED_CHANNEL`, in the same statement (one
        transaction): the others hear of it once it is committed, and never of a write that was refused.
        """
        record.updated_at = now()
        key, *rest, _tenant = self._row(record)  # a row's tenant never changes
        written = await self._write(
            "WITH written AS (UPDATE tasks SET task_id=%s, request=%s, phase=%s, endpoint=%s, api_status=%s, "
            "progress=%s, images=%s, error=%s, offline=%s, created_at=%s, updated_at=%s, create_log=%s, status=%s "
            "WHERE key=%s AND owner=%s RETURNING key, owner, phase) "
            f"SELECT CASE WHEN {_FINISHED} THEN pg_notify('{FINISHED_CHANNEL}', owner || chr(9) || key) END "
            "FROM written",
            (*rest, record.status, key, self.owner),
        )
        if written != 1:
            raise RowTaken(f"task {record.handle}: this process no longer owns the row; it was not written")

    async def bind_task(self, key: str, task_id: str) -> bool:
        """Give this process's row, still unnamed, the API's task ``task_id``, unless another row has it already (two
        replicas binding the same task at once: the unique index lets one through)."""
        try:
            bound = await self._write(
                "UPDATE tasks SET task_id=%(t)s WHERE key=%(k)s AND owner=%(me)s AND task_id IS NULL "
                "AND NOT EXISTS (SELECT 1 FROM tasks WHERE task_id=%(t)s)",
                {"t": _text(task_id), "k": _text(key), "me": self.owner},
            )
        except DatabaseUnavailable as err:
            if isinstance(err.__cause__, psycopg.errors.UniqueViolation):
                return False
            raise
        return bound == 1

    async def get(self, key: str) -> TaskRecord | None:
        rows = await self._rows(f"SELECT {_COLUMNS} FROM tasks WHERE key=%s", (_text(key),))
        return self._record(rows[0]) if rows else None

    async def find(self, handle: str, *, tenant: str = DEFAULT_TENANT) -> TaskRecord | None:
        """The row an agent means: by the API's task id, or by our own key before the API named it."""
        rows = await self._rows(
            f"SELECT {_COLUMNS} FROM tasks WHERE (task_id=%(h)s OR key=%(h)s) AND tenant=%(t)s "
            "ORDER BY task_id IS NOT DISTINCT FROM %(h)s DESC LIMIT 1",
            {"h": _text(handle), "t": tenant},
        )
        return self._record(rows[0]) if rows else None

    async def known_task_ids(self, task_ids: Sequence[str], *, tenant: str = DEFAULT_TENANT) -> set[str]:
        """Which of these API task ids have a row of this tenant here (one query, however many)."""
        wanted = list(dict.fromkeys(task_ids))[:1000]
        if not wanted:
            return set()
        rows = await self._rows(
            "SELECT task_id FROM tasks WHERE tenant=%s AND task_id = ANY(%s)", (tenant, [_text(t) for t in wanted])
        )
        return {row[0] for row in rows}

    async def recent(
        self, limit: int, offset: int = 0, status: Status | None = None, *, tenant: str = DEFAULT_TENANT
    ) -> list[TaskRecord]:
        """This tenant's rows newest first, optionally only those with this public status."""
        where, args = ("WHERE tenant=%s AND status=%s", (tenant, status)) if status else ("WHERE tenant=%s", (tenant,))
        rows = await self._rows(
            f"SELECT {_COLUMNS} FROM tasks {where} ORDER BY created_at DESC, seq DESC LIMIT %s OFFSET %s",
            (*args, limit, offset),
        )
        return [self._record(r) for r in rows]

    async def count(self, status: Status | None = None, *, tenant: str = DEFAULT_TENANT) -> int:
        where, args = ("WHERE tenant=%s AND status=%s", (tenant, status)) if status else ("WHERE tenant=%s", (tenant,))
        [(count,)] = await self._rows(f"SELECT count(*) FROM tasks {where}", args)
        return int(count)

    # -- calls answered with a task ----------------------------------------------------------------

    async def add_call(self, call: Call) -> None:
        """Write a call's id, tenant and rows (committed when this returns: every replica finds it)."""
        await self._write(
            "INSERT INTO calls (id, tenant, keys, created_at, cancelled_at) VALUES (%s, %s, %s, %s, %s)",
            (call.id, call.tenant, json.dumps([_text(k) for k in call.keys]), call.created_at, call.cancelled_at),
        )

    async def find_call(self, call_id: str, *, tenant: str = DEFAULT_TENANT) -> tuple[Call, list[TaskRecord]] | None:
        """This tenant's call and its rows in the call's order, in one query; None if unknown or another tenant's."""
        rows = await self._rows(
            f"SELECT {_CALL_ROW} FROM calls c "
            "CROSS JOIN LATERAL json_array_elements_text(c.keys::json) WITH ORDINALITY AS k(key, n) "
            "JOIN tasks t ON t.key = k.key AND t.tenant = c.tenant WHERE c.id = %s AND c.tenant = %s ORDER BY k.n",
            (_text(call_id), tenant),
        )
        if not rows:
            return None
        return call_from_rows(call_id, tenant, rows, _utc, self._record)

    async def cancel_call(self, call_id: str, at: datetime, *, tenant: str = DEFAULT_TENANT) -> bool:
        """Mark this tenant's call cancelled at ``at``, unless it was already; False for an unknown id."""
        rows = await self._rows(
            "UPDATE calls SET cancelled_at = coalesce(cancelled_at, %s) WHERE id = %s AND tenant = %s RETURNING id",
            (at, _text(call_id), tenant),
        )
        return bool(rows)

    # -- owners --------------------------------------------------------------------------------

    async def claim(self, key: str) -> bool:
        """Own an unfinished row of this API: if nobody does, this process already does, or its owner is dead.

        One statement, a compare-and-set under the row's lock: of two processes that both see a dead owner, one wins.
        """
        me = await self._live_owner()
        return (
            await self._write(
                "UPDATE tasks SET owner=%(me)s "
                f"WHERE key=%(key)s AND api_scope=%(scope)s AND {_UNFINISHED} AND {_FREE}",
                {"me": me, "key": _text(key), "scope": self.api_scope},
            )
            == 1
        )

    async def release(self, key: str) -> None:
        await self._write("UPDATE tasks SET owner=NULL WHERE key=%s AND owner=%s", (_text(key), self.owner))

    async def claimable(self) -> list[str]:
        """Unfinished rows of this API with no live owner but this process, oldest first."""
        me = await self._live_owner()
        rows = await self._rows(
            f"SELECT key FROM tasks WHERE api_scope=%(scope)s AND {_UNFINISHED} AND {_FREE} ORDER BY created_at, seq",
            {"me": me, "scope": self.api_scope},
        )
        return [row[0] for row in rows]

    # -- uploads -------------------------------------------------------------------------------

    async def cached_upload(self, sha256: str, *, tenant: str = DEFAULT_TENANT) -> tuple[str, datetime] | None:
        rows = await self._rows(
            "SELECT url, expires_at FROM uploads WHERE sha256=%s AND scope=%s AND tenant=%s",
            (_text(sha256), self.upload_scope, tenant),
        )
        return (rows[0][0], _utc(rows[0][1])) if rows else None

    async def remember_upload(
        self, sha256: str, url: str, expires_at: datetime, *, tenant: str = DEFAULT_TENANT
    ) -> None:
        await self._write(
            "INSERT INTO uploads (sha256, scope, tenant, url, expires_at) VALUES (%s, %s, %s, %s, %s) "
            "ON CONFLICT (sha256, scope, tenant) DO UPDATE SET url=excluded.url, expires_at=excluded.expires_at",
            (_text(sha256), self.upload_scope, tenant, _text(url), expires_at),
        )

    # -- other processes -------------------------------------------------------------------------

    async def watch_finished(self, on_finished: Callable[[TaskRecord], Awaitable[None]]) -> None:
        """Call ``on_finished`` for each row another process finishes, until cancelled.

        A connection of its own (a pooled one cannot: a LISTEN belongs to its session) listens on
        :data:`FINISHED_CHANNEL`; each announcement of another owner's write is read back (:meth:`get`) and told.
        A lost connection is made again, with a growing wait, and one warning per outage: a finish announced while
        none is open is not heard (a client reads the task again; it misses only the notification).
        """
        wait = LISTEN_RETRY_SECONDS[0]
        lost = False
        while not self._closed:
            conn: _Connection | None = None
            try:
                conn = await self._connect()
                await conn.execute(f"SELECT {_SERVER_KEEPALIVES}")
                await conn.execute(f"LISTEN {FINISHED_CHANNEL}")
                if lost:
                    log.info("ledger: listening again on %s for the tasks other replicas finish", self.where)
                lost, wait = False, LISTEN_RETRY_SECONDS[0]
                async for note in conn.notifies():
                    await self._finished_elsewhere(note.payload, on_finished)
                reason = "the connection ended"
            except psycopg.Error as err:
                reason = self._reason(err) or type(err).__name__
            finally:
                if conn is not None:
                    with anyio.CancelScope(shield=True):
                        await conn.close()
            if not lost:
                log.warning(
                    "ledger: cannot listen on %s for the tasks other replicas finish (%s); trying again, and their "
                    "subscribers here are not told meanwhile",
                    self.where,
                    reason,
                )
                lost = True
            await anyio.sleep(wait)
            wait = min(wait * 2, LISTEN_RETRY_SECONDS[1])

    async def _finished_elsewhere(self, payload: str, on_finished: Callable[[TaskRecord], Awaitable[None]]) -> None:
        """Tell ``on_finished`` of the row an announcement names, unless this process wrote it (its runner tells)."""
        owner, _, key = payload.partition("\t")
        if not key or owner in self._owners:
            return
        try:
            record = await self.get(key)
            if record is not None and record.finished:
                await on_finished(record)
        except NanoBananaError as err:  # a read that failed (the database, for a moment): said, and the watch goes on
            log.error("ledger: task %s, finished by another replica, could not be read: %s", key, err)
        except Exception:  # a listener's failure must not end the watch
            log.exception("ledger: task %s, finished by another replica, could not be told", key)

    # -- rows ----------------------------------------------------------------------------------

    @staticmethod
    def _row(r: TaskRecord) -> tuple[Any, ...]:
        images = "[" + ",".join(i.model_dump_json() for i in r.images) + "]"
        return (
            _text(r.key),
            _text(r.task_id),
            r.request.model_dump_json(),
            r.phase,
            r.endpoint,
            _text(r.api_status),
            r.progress,
            images,
            _text(r.error),
            r.offline,
            r.created_at,
            r.updated_at,
            r.create_log.model_dump_json(exclude_defaults=True),
            r.tenant,
        )

    @staticmethod
    def _record(row: TupleRow) -> TaskRecord:
        return record_from_row(row, _utc(row[10]), _utc(row[11]))


async def _migrate(conn: _Connection, where: str) -> None:
    """Bring the schema to ``SCHEMA_VERSION``, once however many processes start together.

    A write even when there is nothing to migrate: a database this process cannot write (a read-only standby, a
    user without rights) fails here, at start, rather than on the first task.
    """
    async with conn.transaction():
        await conn.execute(f"SELECT {_SCHEMA_LOCK}")
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_version "
            "(version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        cursor = await conn.execute("SELECT coalesce(max(version), 0) FROM schema_version")
        row = await cursor.fetchone()
        version = int(row[0]) if row is not None else 0
        if version > SCHEMA_VERSION:
            raise ConfigError(
                f"The task ledger in PostgreSQL at {where} was written by a newer nano-banana-mcp (schema {version}, "
                f"this one knows {SCHEMA_VERSION}). Upgrade every replica, or point NANO_BANANA_DATABASE_URL elsewhere."
            )
        for step in range(version, SCHEMA_VERSION):
            await conn.execute(MIGRATIONS[step])
            await conn.execute("INSERT INTO schema_version (version) VALUES (%s)", (step + 1,))
            log.info("ledger: %s migrated to schema %d", where, step + 1)
        await conn.execute("UPDATE schema_version SET applied_at = applied_at WHERE version = %s", (SCHEMA_VERSION,))


def _where(url: SecretStr) -> str:
    """``user@host:port/dbname`` of a URL, for messages: never its password, nor its other parameters."""
    try:
        parts = conninfo_to_dict(url.get_secret_value())
    except psycopg.Error:
        return "(a URL that cannot be read)"  # and that _problem says
    user = f"{parts['user']}@" if parts.get("user") else ""
    host = str(parts.get("host") or "localhost")
    port = f":{parts['port']}" if parts.get("port") else ""
    return f"{user}{host}{port}/{parts.get('dbname') or ''}"
