"""The PostgreSQL database of the task ledger, as this package reaches it and speaks of it.

Its URL (``NANO_BANANA_DATABASE_URL``, libpq's, so ``?sslmode=require`` and the ``PG*`` variables work) gains this
package's defaults for what it leaves unsaid: a connect timeout, TCP keepalives (on both ends, with
:data:`SERVER_KEEPALIVES`), an application name. Messages name the database as ``user@host:port/dbname``
(:attr:`Database.where`), never with its password. A failure at start is a :class:`ConfigError` naming it and the
setting (:meth:`Database.problem`); a failure while serving is :class:`DatabaseUnavailable`, whose text (a tenant may
read it) names no database, while the log has the detail for the operator (:meth:`Database.unavailable`).

Needs the ``team`` extra, as :mod:`nano_banana_mcp.tasks.ledger_pg` does.
"""

from __future__ import annotations

import logging
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import TupleRow
from pydantic import SecretStr

from nano_banana_mcp.errors import ConfigError, DatabaseUnavailable

__all__ = ["CONNECT_SECONDS", "SERVER_KEEPALIVES", "Connection", "Database"]

log = logging.getLogger("nano_banana_mcp.tasks.ledger_pg")  # the ledger's: an operator follows one logger

Connection = psycopg.AsyncConnection[TupleRow]

CONNECT_SECONDS = 3
"""How long opening a connection may take (libpq's connect_timeout, unless the URL sets its own; libpq advises
against less than 2 s): a database that does not answer stops a start-up within seconds, naming the setting."""
_KEEPALIVE = {"idle": 10, "interval": 5, "count": 3}
"""TCP keepalives on every connection, on both ends: a host that vanishes loses its owner lock in ~25 s."""
SERVER_KEEPALIVES = ", ".join(f"set_config('tcp_keepalives_{k}', '{v}', false)" for k, v in _KEEPALIVE.items())
"""The server's keepalives too (a session's own settings, selected on a long-lived connection): it ends the session
of a host that vanished."""
_SETTINGS = "NANO_BANANA_DATABASE_URL (or the file NANO_BANANA_DATABASE_URL_FILE names)"


class Database:
    """One PostgreSQL database: how to connect to it, and how to speak of it and of its failures."""

    def __init__(self, url: SecretStr) -> None:
        self._url = url
        self.where = _where(url)
        """The database as messages name it: ``user@host:port/dbname``, without the password."""

    def conninfo(self) -> str:
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

    async def connect(self) -> Connection:
        return await psycopg.AsyncConnection.connect(self.conninfo(), autocommit=True)

    def problem(self, err: BaseException) -> ConfigError:
        """A failure at start, for the operator who starts the server: the database, the reason, the setting."""
        reason = self.reason(err)
        if reason is None:
            return ConfigError(
                f"The PostgreSQL URL of the task ledger in {_SETTINGS} cannot be read: write it as "
                "postgresql://user:password@host:port/dbname, with any special character in the password "
                "percent-encoded."
            )
        return ConfigError(
            f"The task ledger in PostgreSQL at {self.where} cannot be used ({reason}). Check {_SETTINGS}: the "
            "server must be reachable, the database must exist, and its user must be allowed to create tables in it."
        )

    def unavailable(self, err: BaseException) -> DatabaseUnavailable:
        """A failure while serving: logged for the operator (the database and the reason, never the password); the
        error says only that the database is unavailable."""
        log.error("ledger: %s", self.problem(err))
        return DatabaseUnavailable()

    def reason(self, err: BaseException) -> str | None:
        """What went wrong, on one line and without the URL's password; None if the URL itself cannot be read."""
        try:
            password = conninfo_to_dict(self._url.get_secret_value()).get("password")
        except psycopg.Error:  # libpq's reason would quote the URL, password and all
            return None
        reason = " ".join(str(err).split()) or type(err).__name__
        return reason.replace(str(password), "***") if password else reason


def _where(url: SecretStr) -> str:
    """``user@host:port/dbname`` of a URL, for messages: never its password, nor its other parameters."""
    try:
        parts = conninfo_to_dict(url.get_secret_value())
    except psycopg.Error:
        return "(a URL that cannot be read)"  # and that Database.problem says
    user = f"{parts['user']}@" if parts.get("user") else ""
    host = str(parts.get("host") or "localhost")
    port = f":{parts['port']}" if parts.get("port") else ""
    return f"{user}{host}{port}/{parts.get('dbname') or ''}"
