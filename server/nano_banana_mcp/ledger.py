"""The task ledger: SQLite in the data dir, so no paid result is ever lost or charged twice.

A task's row (idempotency key, request, phase) is written **before** its create request is sent,
and updated as the task moves on: created (task id), succeeded (image URLs), downloaded (file
paths), failed (error). Several processes may share one data dir (Claude Desktop and the CLI at
once): a row is worked on only by the process holding its **lease**, which it renews while it
works; a lease that is not renewed (the process died) expires and another process takes over.

Uploads are cached by content hash and API base URL with their expiry.

All SQLite work runs in a worker thread, one statement batch at a time, never on the event loop.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.to_thread

from nano_banana_mcp.catalog import GenerateRequest
from nano_banana_mcp.errors import ConfigError
from nano_banana_mcp.store import Phase, SavedImage, TaskRecord, now

__all__ = ["SCHEMA_VERSION", "UNFINISHED_PHASES", "Ledger"]

_T = TypeVar("_T")

UNFINISHED_PHASES: tuple[Phase, ...] = ("submitting", "created", "succeeded")

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
)
SCHEMA_VERSION = len(MIGRATIONS)

_COLUMNS = (
    "key, task_id, request, phase, api_status, progress, images, error, offline, base_url, created_at, updated_at"
)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


class Ledger:
    """Task records on SQLite, plus leases and the upload cache. One instance per process."""

    def __init__(
        self, path: Path, *, owner: str, api: str, upload_scope: str | None = None, lease_seconds: float = 15.0
    ) -> None:
        """``api`` names the API the tasks belong to (its base URL, or "offline"); only its rows are resumed.

        ``upload_scope`` keys the upload cache (the URL actually called, since an offline emulator's uploads
        vanish with it).
        """
        self.path = path
        self.owner = owner
        self.base_url = api
        self.upload_scope = upload_scope or api
        self.lease_seconds = lease_seconds
        self._db: sqlite3.Connection | None = None
        self._limiter = anyio.CapacityLimiter(1)

    # -- life ----------------------------------------------------------------------------------

    async def open(self) -> Ledger:
        await anyio.to_thread.run_sync(self._open_sync)
        return self

    async def close(self) -> None:
        if self._db is not None:
            db, self._db = self._db, None
            await anyio.to_thread.run_sync(db.close, limiter=self._limiter)

    def _open_sync(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=10.0, isolation_level=None, check_same_thread=False)
        except (OSError, sqlite3.Error) as err:
            raise ConfigError(
                f"The task ledger at {self.path} cannot be opened ({err}). "
                "Set NANO_BANANA_DATA_DIR to a writable folder."
            ) from err
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA busy_timeout=10000")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA foreign_keys=ON")
        self._migrate(db)
        self._db = db

    @staticmethod
    def _migrate(db: sqlite3.Connection) -> None:
        db.execute("BEGIN IMMEDIATE")  # one process migrates; the others wait and then see it done
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            db.execute("ROLLBACK")
            raise ConfigError(
                f"The task ledger was written by a newer nano-banana-mcp (schema {version}, this one knows "
                f"{SCHEMA_VERSION}). Upgrade, or point NANO_BANANA_DATA_DIR elsewhere."
            )
        try:
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
        return await anyio.to_thread.run_sync(fn, db, limiter=self._limiter)

    # -- task records ----------------------------------------------------------------------------

    async def add(self, record: TaskRecord) -> None:
        """Insert a new row, leased to this process: it is about to send the create."""
        row = self._row(record)

        def insert(db: sqlite3.Connection) -> None:
            db.execute(
                f"INSERT INTO tasks ({_COLUMNS}, owner, lease_until) VALUES ({', '.join('?' * 14)})",
                (*row, self.owner, time.time() + self.lease_seconds),
            )

        await self._run(insert)

    async def save(self, record: TaskRecord) -> None:
        record.updated_at = now()
        row = self._row(record)

        def update(db: sqlite3.Connection) -> None:
            db.execute(
                "UPDATE tasks SET task_id=?, request=?, phase=?, api_status=?, progress=?, images=?, error=?, "
                "offline=?, base_url=?, created_at=?, updated_at=? WHERE key=?",
                (*row[1:], row[0]),
            )

        await self._run(update)

    async def get(self, key: str) -> TaskRecord | None:
        return await self._one("key", key)

    async def by_task_id(self, task_id: str) -> TaskRecord | None:
        return await self._one("task_id", task_id)

    async def recent(self, limit: int, offset: int = 0, status: Sequence[Phase] | None = None) -> list[TaskRecord]:
        where, args = self._phase_filter(status)

        def select(db: sqlite3.Connection) -> list[tuple[Any, ...]]:
            return db.execute(
                f"SELECT {_COLUMNS} FROM tasks {where} ORDER BY created_at DESC, rowid DESC LIMIT ? OFFSET ?",
                (*args, limit, offset),
            ).fetchall()

        return [self._record(r) for r in await self._run(select)]

    async def count(self, status: Sequence[Phase] | None = None) -> int:
        where, args = self._phase_filter(status)
        return await self._run(lambda db: db.execute(f"SELECT count(*) FROM tasks {where}", args).fetchone()[0])

    # -- leases --------------------------------------------------------------------------------

    async def claim(self, key: str) -> bool:
        """Take (or keep) the lease on an unfinished row; False when another live process holds it."""
        until = time.time() + self.lease_seconds

        def update(db: sqlite3.Connection) -> int:
            return db.execute(
                "UPDATE tasks SET owner=?, lease_until=? WHERE key=? AND phase IN (?, ?, ?) "
                "AND (owner IS NULL OR owner=? OR lease_until < ?)",
                (self.owner, until, key, *UNFINISHED_PHASES, self.owner, time.time()),
            ).rowcount

        return await self._run(update) == 1

    async def renew(self, keys: Sequence[str]) -> None:
        """Extend this process's leases on ``keys``."""
        if not keys:
            return
        until = time.time() + self.lease_seconds

        def update(db: sqlite3.Connection) -> None:
            db.executemany(
                "UPDATE tasks SET lease_until=? WHERE key=? AND owner=?", [(until, k, self.owner) for k in keys]
            )

        await self._run(update)

    async def release(self, key: str) -> None:
        await self._run(
            lambda db: db.execute(
                "UPDATE tasks SET owner=NULL, lease_until=0 WHERE key=? AND owner=?", (key, self.owner)
            )
        )

    async def claimable(self) -> list[str]:
        """Unfinished rows of this API that nobody holds (or whose holder stopped renewing), oldest first.

        Rows this process holds are left out: it is already working on them.
        """

        def select(db: sqlite3.Connection) -> list[str]:
            rows = db.execute(
                "SELECT key FROM tasks WHERE phase IN (?, ?, ?) AND base_url=? "
                "AND (owner IS NULL OR (owner != ? AND lease_until < ?)) ORDER BY created_at",
                (*UNFINISHED_PHASES, self.base_url, self.owner, time.time()),
            ).fetchall()
            return [r[0] for r in rows]

        return await self._run(select)

    # -- uploads -------------------------------------------------------------------------------

    async def cached_upload(self, sha256: str) -> tuple[str, datetime] | None:
        row = await self._run(
            lambda db: db.execute(
                "SELECT url, expires_at FROM uploads WHERE sha256=? AND base_url=?", (sha256, self.upload_scope)
            ).fetchone()
        )
        return (row[0], datetime.fromisoformat(row[1])) if row else None

    async def remember_upload(self, sha256: str, url: str, expires_at: datetime) -> None:
        await self._run(
            lambda db: db.execute(
                "INSERT OR REPLACE INTO uploads (sha256, base_url, url, expires_at) VALUES (?, ?, ?, ?)",
                (sha256, self.upload_scope, url, _iso(expires_at)),
            )
        )

    # -- rows ----------------------------------------------------------------------------------

    def _row(self, r: TaskRecord) -> tuple[Any, ...]:
        images = "[" + ",".join(i.model_dump_json() for i in r.images) + "]"
        return (
            r.key,
            r.task_id,
            r.request.model_dump_json(),
            r.phase,
            r.api_status,
            r.progress,
            images,
            r.error,
            int(r.offline),
            self.base_url,
            _iso(r.created_at),
            _iso(r.updated_at),
        )

    @staticmethod
    def _record(row: tuple[Any, ...]) -> TaskRecord:
        import json  # noqa: PLC0415

        key, task_id, request, phase, api_status, progress, images, error, offline, _, created, updated = row
        return TaskRecord(
            key=key,
            task_id=task_id,
            request=GenerateRequest.model_validate_json(request),
            phase=phase,
            api_status=api_status,
            progress=progress,
            images=[SavedImage.model_validate(i) for i in json.loads(images)],
            error=error,
            offline=bool(offline),
            created_at=datetime.fromisoformat(created),
            updated_at=datetime.fromisoformat(updated),
        )

    async def _one(self, column: str, value: str) -> TaskRecord | None:
        row = await self._run(
            lambda db: db.execute(f"SELECT {_COLUMNS} FROM tasks WHERE {column}=?", (value,)).fetchone()
        )
        return self._record(row) if row else None

    @staticmethod
    def _phase_filter(status: Sequence[Phase] | None) -> tuple[str, tuple[str, ...]]:
        if not status:
            return "", ()
        return f"WHERE phase IN ({', '.join('?' * len(status))})", tuple(status)
