"""The task ledger: SQLite in the data dir, so no paid result is ever lost or charged twice.

This is the default :class:`~nano_banana_mcp.tasks.store.LedgerStore`; replicas of a team server share one
in PostgreSQL instead (:mod:`nano_banana_mcp.tasks.ledger_pg`).

A task's row (idempotency key, request, endpoint, phase) is written **before** its create request is
sent, and updated as the task moves on (see :mod:`nano_banana_mcp.tasks.records`). Several processes may
share one data dir (Claude Desktop and the CLI at once): a row is worked on only by its **owner**, a
process that is alive; each process holds an OS lock for its lifetime (:class:`OwnerLocks`), so a dead
owner's rows are taken over at once, and no clock is trusted. Uploads are cached by content hash.

All SQLite work runs in one worker thread at a time, never on the event loop, but one read: the look-up of a
call answered with an MCP task (:meth:`Ledger.find_call`), which a host repeats every second or so for every task
it carries. It reads a few rows by key on a connection of its own that never waits for a lock (a WAL reader is
not blocked by writers; should it be busy, the worker thread reads instead): ~20 us, where a round trip to the
worker costs ~100 us of CPU and, on a busy event loop, queues behind the GIL (bench/tasks_poll.py). Any failure
to open, migrate, read or write the file is a :class:`ConfigError` that names the file and
``NANO_BANANA_DATA_DIR``.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar, cast

import anyio
import anyio.to_thread

from nano_banana_mcp.errors import ConfigError
from nano_banana_mcp.memo import Memo
from nano_banana_mcp.tasks.ledger_sql import UNFINISHED, Dialect, SqlLedger, Statements, call_from_head, call_from_rows
from nano_banana_mcp.tasks.owners import OwnerLocks
from nano_banana_mcp.tasks.records import DEFAULT_TENANT, Call, TaskRecord

__all__ = ["LEDGER_FILE", "SCHEMA_VERSION", "Ledger"]

_T = TypeVar("_T")
LEDGER_FILE = "ledger.sqlite3"
OWNERS_DIR = "owners"
KEPT_HEADS = 4096
"""Parsed calls kept by :meth:`Ledger.find_call_now` (more than a host carries at once; past that they are dropped)."""

# Each entry migrates the schema from version i to i + 1. Append; never edit a released entry.
MIGRATIONS: Sequence[str] = (
    """
    CREATE TABLE tasks (
        key         TEXT PRIMARY KEY,
        task_id     TEXT UNIQUE,
        request     TEXT NOT NULL,
        phase       TEXT NOT NULL,
        api_status  TEXT,
        progress    REAL,
        images      TEXT NOT NULL DEFAULT '[]',
        error       TEXT,
        offline     INTEGER NOT NULL DEFAULT 0,
        base_url    TEXT NOT NULL,
        owner       TEXT,
        lease_until REAL NOT NULL DEFAULT 0,
        created_at  TEXT NOT NULL,
        updated_at  TEXT NOT NULL
    );
    CREATE INDEX tasks_created ON tasks (created_at DESC);
    CREATE INDEX tasks_phase ON tasks (phase);
    CREATE TABLE uploads (
        sha256     TEXT NOT NULL,
        base_url   TEXT NOT NULL,
        url        TEXT NOT NULL,
        expires_at TEXT NOT NULL,
        PRIMARY KEY (sha256, base_url)
    );
    """,
    # 2: each key's endpoint (version 1 created every task through /tasks/async); the public status as a
    # column, so lists filter in SQL; owners are live processes (OS locks), not leases on a clock.
    """
    ALTER TABLE tasks ADD COLUMN endpoint TEXT;
    UPDATE tasks SET endpoint = 'async';
    ALTER TABLE tasks ADD COLUMN status TEXT NOT NULL DEFAULT 'pending';
    UPDATE tasks SET status = CASE
        WHEN phase = 'downloaded' THEN 'success'
        WHEN phase = 'failed' THEN 'failed'
        WHEN phase = 'succeeded' THEN 'running'
        WHEN phase = 'created' AND api_status IS NOT NULL AND api_status != 'pending' THEN 'running'
        ELSE 'pending' END;
    ALTER TABLE tasks RENAME COLUMN base_url TO api_scope;
    ALTER TABLE tasks DROP COLUMN lease_until;
    CREATE INDEX tasks_status ON tasks (status, created_at DESC);
    ALTER TABLE uploads RENAME COLUMN base_url TO scope;
    """,
    # 3: tenants. Each row and each cached upload belongs to one tenant (the HTTP token's, or 'default'); an
    # upload's key gains the tenant, so the table is made anew (SQLite cannot change a primary key).
    """
    ALTER TABLE tasks ADD COLUMN tenant TEXT NOT NULL DEFAULT 'default';
    CREATE INDEX tasks_tenant ON tasks (tenant, created_at DESC);
    CREATE INDEX tasks_tenant_status ON tasks (tenant, status, created_at DESC);
    CREATE TABLE uploads_by_tenant (
        sha256     TEXT NOT NULL,
        scope      TEXT NOT NULL,
        tenant     TEXT NOT NULL DEFAULT 'default',
        url        TEXT NOT NULL,
        expires_at TEXT NOT NULL,
        PRIMARY KEY (sha256, scope, tenant)
    );
    INSERT INTO uploads_by_tenant (sha256, scope, url, expires_at) SELECT sha256, scope, url, expires_at FROM uploads;
    DROP TABLE uploads;
    ALTER TABLE uploads_by_tenant RENAME TO uploads;
    """,
    # 4: what a row's creates learned before the API named its task (tasks/records.py CreateLog), as JSON.
    """
    ALTER TABLE tasks ADD COLUMN create_log TEXT NOT NULL DEFAULT '{}';
    """,
    # 5: calls answered with an MCP task (tasks/records.py Call): the task's id, its tenant, its rows' keys (JSON).
    """
    CREATE TABLE calls (
        id           TEXT PRIMARY KEY,
        tenant       TEXT NOT NULL,
        keys         TEXT NOT NULL,
        created_at   TEXT NOT NULL,
        cancelled_at TEXT
    );
    """,
    # 6: named reference sets (tasks/sets.py): each of a tenant's sets, its images in order, kept in the image store.
    """
    CREATE TABLE reference_sets (
        tenant     TEXT NOT NULL,
        name       TEXT NOT NULL,
        position   INTEGER NOT NULL,
        sha256     TEXT NOT NULL,
        mime_type  TEXT NOT NULL,
        size_bytes INTEGER NOT NULL,
        location   TEXT NOT NULL,
        added_at   TEXT NOT NULL,
        PRIMARY KEY (tenant, name, position),
        UNIQUE (tenant, name, sha256)
    );
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


SQL = Statements.of(
    Dialect(
        param="?",
        tiebreak="rowid",
        call_keys="JOIN json_each(c.keys) k",
        arrays=False,
        read_time=datetime.fromisoformat,
        time=_iso,
    )
)
"""The shared statements (:mod:`nano_banana_mcp.tasks.ledger_sql`) as SQLite spells them."""


def _known_version(version: int) -> int:
    if version > SCHEMA_VERSION:
        raise ConfigError(
            f"The task ledger was written by a newer nano-banana-mcp (schema {version}, this one knows "
            f"{SCHEMA_VERSION}). Upgrade, or point NANO_BANANA_DATA_DIR elsewhere."
        )
    return version


def _check_intact(db: sqlite3.Connection) -> None:
    """Refuse a damaged file at start (garbage written over it, a disk fault), before any task is paid for: its
    header may read well while the pages behind it do not. SQLite's quick check reads every page once (about 20 ms
    for 50,000 tasks, warm)."""
    [(verdict,)] = db.execute("PRAGMA quick_check(1)").fetchall()
    if verdict != "ok":
        raise sqlite3.DatabaseError(f"the file is damaged: {' '.join(str(verdict).split())[:160]}")


class Ledger(SqlLedger):
    """Task records on SQLite, their owners, and the upload cache. One instance per process."""

    sql = SQL

    def __init__(self, path: Path, *, api_scope: str, upload_scope: str | None = None) -> None:
        """``api_scope`` names the API the tasks belong to (its base URL, or "offline"): only its rows are
        resumed here. ``upload_scope`` keys the upload cache (the URL actually called: an offline
        emulator's uploads vanish with it)."""
        self.path = path
        self.api_scope = api_scope
        self.upload_scope = upload_scope or api_scope
        self.owners = OwnerLocks(path.parent / OWNERS_DIR)
        self._db: sqlite3.Connection | None = None
        self._reader: sqlite3.Connection | None = None  # find_call's, on the event loop (see the module docstring)
        self._heads: Memo[str, Call] = Memo(KEPT_HEADS)
        """Calls parsed by :meth:`find_call_now`, each with its row: read again at every poll, parsed once."""
        self._limiter = anyio.CapacityLimiter(1)

    @property
    def owner(self) -> str:
        return self.owners.owner

    # -- life ----------------------------------------------------------------------------------

    async def open(self) -> Ledger:
        await anyio.to_thread.run_sync(self._open_sync)
        return self

    async def close(self) -> None:
        if self._reader is not None:
            reader, self._reader = self._reader, None
            reader.close()
        if self._db is not None:
            db, self._db = self._db, None
            await anyio.to_thread.run_sync(db.close, limiter=self._limiter)
        await anyio.to_thread.run_sync(self.owners.release)

    async def ping(self) -> None:
        """The file answers a read (a health check)."""
        await self._run(lambda db: db.execute("SELECT 1 FROM tasks LIMIT 1").fetchall())

    def _problem(self, err: BaseException) -> ConfigError:
        return ConfigError(
            f"The task ledger at {self.path} cannot be used ({err}). Set NANO_BANANA_DATA_DIR (or --data-dir) "
            "to a writable folder, or move the damaged file aside."
        )

    def _open_sync(self) -> None:
        db: sqlite3.Connection | None = None
        reader: sqlite3.Connection | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=10.0, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA busy_timeout=10000")
            db.execute("PRAGMA synchronous=NORMAL")
            _check_intact(db)
            self._migrate(db)
            self.owners.acquire()
            reader = sqlite3.connect(self.path, timeout=0, isolation_level=None, check_same_thread=False)
            reader.execute("PRAGMA busy_timeout=0")
            reader.execute("PRAGMA query_only=ON")
        except (OSError, sqlite3.Error) as err:
            for connection in (db, reader):
                if connection is not None:
                    connection.close()
            raise self._problem(err) from err
        self._db, self._reader = db, reader

    @staticmethod
    def _migrate(db: sqlite3.Connection) -> None:
        # A write transaction even when there is nothing to migrate: a read-only or full ledger fails here,
        # at start, rather than on the first task. One process migrates; the others wait, then see it done.
        db.execute("BEGIN IMMEDIATE")
        try:
            version = _known_version(db.execute("PRAGMA user_version").fetchone()[0])
            for step in range(version, SCHEMA_VERSION):
                for statement in MIGRATIONS[step].split(";"):
                    if statement.strip():
                        db.execute(statement)
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    async def _run(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        db = self._db
        if db is None:
            raise RuntimeError("the ledger is closed")

        def guarded(db: sqlite3.Connection) -> _T:
            try:
                return fn(db)
            except sqlite3.Error as err:
                raise self._problem(err) from err

        return await anyio.to_thread.run_sync(guarded, db, limiter=self._limiter)

    async def _rows(self, query: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        rows: list[tuple[Any, ...]] = await self._run(lambda db: db.execute(query, params).fetchall())
        return rows

    async def _write(self, query: str, params: Sequence[Any]) -> int:
        changed: int = await self._run(lambda db: db.execute(query, params).rowcount)
        return changed

    async def _call_rows(self, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        try:  # on the event loop: a few rows by key, and no lock is ever waited for (see the module docstring)
            return self._call_rows_now(params)
        except BlockingIOError:  # busy (a checkpoint or a recovery holds the file), or worse: the worker reads,
            return await super()._call_rows(params)  # waiting as every ledger call does, and says what is wrong

    def _call_rows_now(self, params: Sequence[Any], statement: str | None = None) -> list[tuple[Any, ...]]:
        if self._reader is None:
            raise BlockingIOError("the ledger is not open")
        try:
            rows: list[tuple[Any, ...]] = self._reader.execute(statement or self.sql.find_call, params).fetchall()
        except sqlite3.Error as err:
            raise BlockingIOError(str(err)) from err
        return rows

    def find_call_now(
        self, call_id: str, *, tenant: str = DEFAULT_TENANT, known: Callable[[str], TaskRecord | None] | None = None
    ) -> tuple[Call, list[TaskRecord]] | None:
        """:meth:`find_call` read on the calling thread (the event loop), waiting for no lock; ``BlockingIOError`` when
        it cannot be read so (the ledger busy, or closed). ``known``: a fresher record of a row, by key, taken instead
        of the row's (the runner's working copy)."""
        params = (self.sql.dialect.text(call_id), tenant)
        if known is not None:  # the rows this process works on need only the call's own row (a host polls each second)
            heads = self._call_rows_now(params, self.sql.find_call_head)
            if not heads:
                return None
            call = self._call_of_head(call_id, tenant, heads[0])
            records = [known(key) for key in call.keys]
            if all(record is not None and record.tenant == tenant for record in records):
                return call, cast("list[TaskRecord]", records)
        rows = self._call_rows_now(params)
        return call_from_rows(call_id, tenant, rows, self.sql.dialect.read_time, known) if rows else None

    def _call_of_head(self, call_id: str, tenant: str, head: tuple[Any, ...]) -> Call:
        """The call of this head (as read just now), parsed once while the row stays as it is."""
        return self._heads.get(
            call_id, (tenant, head), lambda: call_from_head(call_id, tenant, head, self.sql.dialect.read_time)
        )

    # -- owners --------------------------------------------------------------------------------

    async def claim(self, key: str) -> bool:
        """Own an unfinished row of this API: if nobody does, this process already does, or its owner is dead."""

        def take(db: sqlite3.Connection) -> bool:
            row = db.execute(
                f"SELECT owner FROM tasks WHERE key=? AND api_scope=? AND {UNFINISHED}", (key, self.api_scope)
            ).fetchone()
            if row is None:
                return False
            holder = row[0]
            if holder not in (None, self.owner) and self.owners.is_alive(holder):
                return False
            # Compare-and-set: of two processes that both saw a dead owner, one wins.
            return (
                db.execute("UPDATE tasks SET owner=? WHERE key=? AND owner IS ?", (self.owner, key, holder)).rowcount
                == 1
            )

        return await self._run(take)

    async def claimable(self) -> list[str]:
        """Unfinished rows of this API with no live owner but this process, oldest first."""

        def select(db: sqlite3.Connection) -> list[str]:
            rows = db.execute(
                f"SELECT key, owner FROM tasks WHERE {UNFINISHED} AND api_scope=? ORDER BY created_at",
                (self.api_scope,),
            ).fetchall()
            alive: dict[str, bool] = {}
            keys = []
            for key, owner in rows:
                if owner is not None and owner != self.owner and owner not in alive:
                    alive[owner] = self.owners.is_alive(owner)
                if owner is None or owner == self.owner or not alive[owner]:
                    keys.append(key)
            return keys

        return await self._run(select)

    # -- other processes -------------------------------------------------------------------------

    async def watch_finished(self, on_finished: Callable[[TaskRecord], Awaitable[None]]) -> None:
        """Return at once: SQLite has no way to tell one process of another's writes (short of polling).

        None is needed today: the processes sharing an SQLite file are one machine's (a desktop host, the CLI), each
        with its own clients; a client is told of a task its own process finished, and ``get_task`` reads the row
        whoever finished it. Replicas that serve one team's clients share PostgreSQL, which tells them.
        """
        del on_finished
