"""The task ledger in PostgreSQL (``NANO_BANANA_DATABASE_URL``): one database for every replica of a team server.

It keeps the promises of :class:`~nano_banana_mcp.tasks.store.LedgerStore` with the database's own means:

- **Owners are sessions** (:mod:`nano_banana_mcp.tasks.pg_owners`): each process holds a session-level advisory
  lock keyed by its owner id on a connection of its own; a process that dies loses it, and an owner is dead when
  its lock can be taken. A claim is one ``UPDATE`` whose condition is "no owner, or me, or a dead owner": of two
  processes racing for a dead owner's row, one takes the row lock and wins; the other re-reads the row, finds a
  live owner, and loses. No clock is trusted. A process that loses its own lock takes a new id; its rows are
  claimed again by whoever comes first, and a write on a row that changed hands meanwhile is refused
  (:class:`RowTaken`), so two processes never work one row.
- **Finishes are announced.** The write that finishes a row also sends ``pg_notify`` on :data:`FINISHED_CHANNEL`
  (the writer's owner id and the row's key, tab-separated), in the same statement: sent when it commits, never
  for a write refused. Each process listens on a connection of its own (:meth:`PostgresLedger.watch_finished`) and
  tells its own subscribers of the rows the others finished.
- **Migrations** are versioned in a ``schema_version`` table and applied inside one transaction that holds a
  transaction-level advisory lock: of replicas starting together one migrates, the others wait, then find
  nothing to do. PostgreSQL's DDL is transactional: a failed migration leaves nothing half done.

Queries go through a small pool (psycopg 3, async); the owner connection is apart from it, so no pooled session
ever holds an owner lock, and so is the one that listens. The statements both ledgers agree on are written once in
:mod:`nano_banana_mcp.tasks.ledger_sql`. This module needs the ``team`` extra (``pip install
'nano-banana-mcp[team]'``); :func:`nano_banana_mcp.runtime.ledger_for` imports it only when a database URL is set.
A failure at start is a :class:`ConfigError` naming the database (``user@host:port/dbname``, never the password)
and the setting, for the operator who starts the server. A failure while serving is :class:`DatabaseUnavailable`,
whose text (a tenant may read it) names no database: the log has the same detail for the operator
(:mod:`nano_banana_mcp.tasks.pg_database`).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, LiteralString

import anyio
import psycopg
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool
from pydantic import SecretStr

from nano_banana_mcp.errors import ConfigError, DatabaseUnavailable, NanoBananaError
from nano_banana_mcp.tasks.ledger_sql import FINISHED, UNFINISHED, Dialect, SqlLedger, Statements
from nano_banana_mcp.tasks.pg_database import SERVER_KEEPALIVES, Database
from nano_banana_mcp.tasks.pg_database import Connection as _Connection
from nano_banana_mcp.tasks.pg_owners import FREE, OwnerSession
from nano_banana_mcp.tasks.records import TaskRecord

__all__ = ["FINISHED_CHANNEL", "MIGRATIONS", "POOL_SIZE", "SCHEMA_VERSION", "DatabaseUnavailable", "PostgresLedger"]

log = logging.getLogger(__name__)

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
    # 5: named reference sets (tasks/sets.py): each of a tenant's sets, its images in order, kept in the image store.
    """
    CREATE TABLE reference_sets (
        tenant     text NOT NULL,
        name       text NOT NULL,
        position   integer NOT NULL,
        sha256     text NOT NULL,
        mime_type  text NOT NULL,
        size_bytes bigint NOT NULL,
        location   text NOT NULL,
        added_at   timestamptz NOT NULL,
        PRIMARY KEY (tenant, name, position),
        UNIQUE (tenant, name, sha256)
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
POOL_OPEN_SECONDS = 10
"""How long the pool may take to open its first connection, once the owner connection has been made."""
WAIT_SECONDS = 3.0
"""How long a query waits for a pooled connection. Queries take a millisecond: a wait this long means the database
is down, and the call says so now rather than after psycopg_pool's default 30 s."""
_SCHEMA_LOCK = "pg_advisory_xact_lock(hashtextextended('nano-banana-mcp ledger schema', 0))"


def _text(value: str | None) -> str | None:
    """PostgreSQL text holds no NUL character (an API may send one); SQLite does, so it is replaced only here."""
    return value.replace("\x00", "\ufffd") if value else value


def _utc(moment: datetime) -> datetime:
    return moment.astimezone(UTC)


_SHARED = Statements.of(
    Dialect(
        param="%s",
        tiebreak="seq",
        call_keys="CROSS JOIN LATERAL json_array_elements_text(c.keys::json) WITH ORDINALITY AS k(value, key)",
        arrays=True,
        read_time=_utc,
        text=_text,
    )
)
SQL = replace(
    _SHARED,
    # A write that finishes the row announces it on FINISHED_CHANNEL in the same statement (one transaction): the
    # others hear of it once it is committed, and never of a write that was refused.
    save=f"WITH written AS ({_SHARED.save} RETURNING key, owner, phase) "
    f"SELECT CASE WHEN {FINISHED} THEN pg_notify('{FINISHED_CHANNEL}', owner || chr(9) || key) END FROM written",
)
"""The shared statements (:mod:`nano_banana_mcp.tasks.ledger_sql`) as PostgreSQL spells them, and its save."""


class PostgresLedger(SqlLedger):
    """Task records in PostgreSQL, their owners, and the upload cache. One instance per process."""

    sql = SQL

    def __init__(self, url: SecretStr, *, api_scope: str, upload_scope: str | None = None) -> None:
        """``url`` is a ``postgresql://`` URL (libpq's, so ``?sslmode=require`` and the ``PG*`` variables work);
        ``api_scope`` and ``upload_scope`` as for :class:`~nano_banana_mcp.tasks.ledger.Ledger`."""
        self.api_scope = api_scope
        self.upload_scope = upload_scope or api_scope
        self._database = Database(url)
        self.where = self._database.where
        """The database as messages name it: ``user@host:port/dbname``, without the password."""
        self._session = OwnerSession(self._database)
        self._pool: AsyncConnectionPool[_Connection] | None = None

    @property
    def owner(self) -> str:
        return self._session.id

    # -- life ----------------------------------------------------------------------------------

    async def open(self) -> PostgresLedger:
        """Connect, migrate, take this process's owner lock, and open the pool."""
        self._session.closed = False
        try:
            conn = await self._database.connect()
            self._session.conn = conn
            await _migrate(conn, self.where)
            await self._session.lock(conn, self._session.id)
            pool: AsyncConnectionPool[_Connection] = AsyncConnectionPool(
                self._database.conninfo(),
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
                raise self._database.problem(err) from err
            raise
        return self

    async def close(self) -> None:
        """Close the pool and the owner connection: the rows this process owned are free for the others at once."""
        self._session.closed = True
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()
        await self._session.end()

    async def ping(self) -> None:
        """The database answers, and this process holds its owner lock (taken anew if it was lost)."""
        await self._session.live()
        await self._rows("SELECT 1")

    async def _rows(self, query: str, params: Sequence[Any] | Mapping[str, Any] = ()) -> list[TupleRow]:
        pool = self._require_pool()
        try:
            async with pool.connection() as conn:
                cursor = await conn.execute(query, params)
                return await cursor.fetchall() if cursor.description is not None else []
        except psycopg.Error as err:
            raise self._database.unavailable(err) from err

    async def _write(self, query: str, params: Sequence[Any] | Mapping[str, Any]) -> int:
        """Run a statement; the number of rows it changed."""
        pool = self._require_pool()
        try:
            async with pool.connection() as conn:
                return (await conn.execute(query, params)).rowcount
        except psycopg.Error as err:
            raise self._database.unavailable(err) from err

    def _require_pool(self) -> AsyncConnectionPool[_Connection]:
        if self._pool is None:
            raise RuntimeError("the ledger is closed")
        return self._pool

    # -- task records ----------------------------------------------------------------------------

    async def bind_task(self, key: str, task_id: str) -> bool:
        """As :meth:`SqlLedger.bind_task`; of two replicas binding the same task at once, the unique index lets one
        through, and the other is told False."""
        try:
            return await super().bind_task(key, task_id)
        except DatabaseUnavailable as err:
            if isinstance(err.__cause__, psycopg.errors.UniqueViolation):
                return False
            raise

    # -- owners --------------------------------------------------------------------------------

    async def claim(self, key: str) -> bool:
        """Own an unfinished row of this API: if nobody does, this process already does, or its owner is dead.

        One statement, a compare-and-set under the row's lock: of two processes that both see a dead owner, one wins.
        """
        me = await self._session.live()
        return (
            await self._write(
                f"UPDATE tasks SET owner=%(me)s WHERE key=%(key)s AND api_scope=%(scope)s AND {UNFINISHED} AND {FREE}",
                {"me": me, "key": _text(key), "scope": self.api_scope},
            )
            == 1
        )

    async def claimable(self) -> list[str]:
        """Unfinished rows of this API with no live owner but this process, oldest first."""
        me = await self._session.live()
        rows = await self._rows(
            f"SELECT key FROM tasks WHERE api_scope=%(scope)s AND {UNFINISHED} AND {FREE} ORDER BY created_at, seq",
            {"me": me, "scope": self.api_scope},
        )
        return [row[0] for row in rows]

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
        while not self._session.closed:
            conn: _Connection | None = None
            try:
                conn = await self._database.connect()
                await conn.execute(f"SELECT {SERVER_KEEPALIVES}")
                await conn.execute(f"LISTEN {FINISHED_CHANNEL}")
                if lost:
                    log.info("ledger: listening again on %s for the tasks other replicas finish", self.where)
                lost, wait = False, LISTEN_RETRY_SECONDS[0]
                async for note in conn.notifies():
                    await self._finished_elsewhere(note.payload, on_finished)
                reason = "the connection ended"
            except psycopg.Error as err:
                reason = self._database.reason(err) or type(err).__name__
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
        if not key or owner in self._session.ids:
            return
        try:
            record = await self.get(key)
            if record is not None and record.finished:
                await on_finished(record)
        except NanoBananaError as err:  # a read that failed (the database, for a moment): said, and the watch goes on
            log.error("ledger: task %s, finished by another replica, could not be read: %s", key, err)
        except Exception:  # a listener's failure must not end the watch
            log.exception("ledger: task %s, finished by another replica, could not be told", key)


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
