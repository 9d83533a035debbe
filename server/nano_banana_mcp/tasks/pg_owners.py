"""Owners on PostgreSQL: each process holds a session-level advisory lock keyed by its owner id, on a connection of
its own, for as long as it runs (what :class:`~nano_banana_mcp.tasks.owners.OwnerLocks` is on one machine).

A process that dies loses that connection, and PostgreSQL ends the session and drops the lock: at once for a killed
process (its socket closes), after the TCP keepalives (about 25 s) for a vanished host. An owner is dead when its lock
can be taken (:data:`OWNER_DEAD`). A process that loses its own lock (a network cut, a database restart) is dead to
the others, so it takes a new owner id on a new connection (:meth:`OwnerSession.live`). Needs the ``team`` extra.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import uuid

import anyio
import psycopg

from nano_banana_mcp.tasks.pg_database import SERVER_KEEPALIVES, Connection, Database

__all__ = ["FREE", "OWNER_DEAD", "OwnerSession"]

log = logging.getLogger("nano_banana_mcp.tasks.ledger_pg")  # the ledger's: an operator follows one logger

OWNER_DEAD = (
    "CASE WHEN pg_try_advisory_lock(hashtextextended(owner, 0)) "
    "THEN pg_advisory_unlock(hashtextextended(owner, 0)) ELSE false END"
)
"""True when the row's owner holds no lock: it is dead. Taken and let go in one statement: nothing is left held."""
FREE = f"(owner IS NULL OR owner = %(me)s OR {OWNER_DEAD})"
"""A row this process (``%(me)s``) may claim: nobody owns it, this process does, or its owner is dead."""


def _new_owner() -> str:
    """Unique for all time: an id whose lock was lost is never taken again."""
    return f"{socket.gethostname()[:40]}-{os.getpid()}-{uuid.uuid4().hex[:12]}"


class OwnerSession:
    """This process's owner id and the connection that holds its lock (apart from any pool: no pooled session ever
    holds an owner lock)."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self.id = _new_owner()
        self.ids: set[str] = set()  # every id this process has held: a row it finished under any is its own
        self.conn: Connection | None = None
        self.closed = True
        self._guard = anyio.Lock()

    async def lock(self, conn: Connection, owner: str) -> None:
        """Hold an owner lock on ``conn``, for ``owner`` or, should its 64-bit hash be held already, a new id."""
        for _ in range(3):
            cursor = await conn.execute(
                f"SELECT pg_try_advisory_lock(hashtextextended(%s, 0)), {SERVER_KEEPALIVES}", (owner,)
            )
            row = await cursor.fetchone()
            if row is not None and row[0]:
                self.id = owner
                self.ids.add(owner)
                return
            owner = _new_owner()
        raise psycopg.OperationalError("no owner lock could be taken (three ids in a row were held)")

    async def live(self) -> str:
        """This process's owner id, its lock checked on the owner connection.

        If that connection is gone, the old id is dead to the others (its rows are theirs to claim): a new id is
        locked on a new connection.
        """
        async with self._guard:
            conn = self.conn
            if self.closed:
                raise RuntimeError("the ledger is closed")
            where = self.database.where
            if conn is not None:
                try:
                    await conn.execute("SELECT 1")
                except psycopg.Error as err:
                    log.warning(
                        "ledger: the owner connection to %s was lost (%s); its rows are free for any replica to resume",
                        where,
                        self.database.reason(err),
                    )
                    self.conn = None
                    with anyio.CancelScope(shield=True):
                        await conn.close()
                else:
                    return self.id
            try:
                conn = await self.database.connect()
            except psycopg.Error as err:
                raise self.database.unavailable(err) from err
            try:
                await self.lock(conn, _new_owner())  # the old id stays dead
            except BaseException as err:
                with anyio.CancelScope(shield=True):
                    await conn.close()
                if isinstance(err, psycopg.Error):
                    raise self.database.unavailable(err) from err
                raise
            self.conn = conn
            log.info("ledger: owner connection to %s restored; this process is now %s", where, self.id)
            return self.id

    async def end(self) -> None:
        """Let go of the lock and close its connection: this process's rows are free for the others at once."""
        conn, self.conn = self.conn, None
        if conn is not None:
            with contextlib.suppress(psycopg.Error):  # now, rather than when the server process has ended
                await conn.execute("SELECT pg_advisory_unlock_all()")
            await conn.close()
