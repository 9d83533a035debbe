"""Structured logs: ``NANO_BANANA_LOG_FORMAT=json`` writes one JSON object per line on stderr, with the task and the
tenant of the work the line is about, and never a secret.

Each line: ``time`` (UTC, ISO 8601), ``level``, ``logger``, ``message``, and, while a task is being worked on (the
runner binds it, :func:`bound`), ``task_id`` (the API's id once known, else the row's key) and ``tenant``; an
exception's traceback in ``exception``. The default, ``text``, is the one-line human format.

Secrets: messages are written never to hold one (the API key, bearer tokens, the database password); as a second
guard, every secret the process knows (:func:`redact`, told at start) is replaced by ``***`` in each line, whatever
the format.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from nano_banana_mcp.terminal import PrintableFormatter

if TYPE_CHECKING:
    from pydantic import SecretStr

    from nano_banana_mcp.config import Settings
    from nano_banana_mcp.tasks.records import TaskRecord

__all__ = ["FORMAT_SETTING", "JsonFormatter", "bound", "formatter", "is_json", "redact", "secrets_of"]

FORMAT_SETTING = "NANO_BANANA_LOG_FORMAT"
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_TASK: ContextVar[TaskRecord | None] = ContextVar("nano_banana_log_task", default=None)
_SECRETS: set[str] = set()
_MIN_SECRET = 8  # shorter values would blank out ordinary words
_json = False


def redact(*secrets: str | None) -> None:
    """Never write these in a log line (the API key, tokens, passwords): told once they are read."""
    _SECRETS.update(s for s in secrets if s and len(s) >= _MIN_SECRET)


def secrets_of(settings: Settings) -> list[SecretStr]:
    """The secrets a process's settings hold: the API key, the HTTP and metrics tokens, the database URL."""
    held = (settings.api_key, settings.http_token, settings.metrics_token, settings.database())
    return [secret for secret in held if secret is not None]


def _scrub(text: str) -> str:
    for secret in _SECRETS:
        if secret in text:
            text = text.replace(secret, "***")
    return text


@contextmanager
def bound(record: TaskRecord) -> Iterator[None]:
    """Lines logged in here (this asyncio task and those it starts) name the row's task and tenant."""
    token = _TASK.set(record)
    try:
        yield
    finally:
        _TASK.reset(token)


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        task = _TASK.get()
        if task is not None:
            line["task_id"] = task.handle
            line["tenant"] = task.tenant
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return _scrub(json.dumps(line, ensure_ascii=False, default=str))


class _TextFormatter(PrintableFormatter):
    def format(self, record: logging.LogRecord) -> str:
        return _scrub(super().format(record))


def formatter(value: str | None) -> tuple[logging.Formatter, str | None]:
    """The formatter ``NANO_BANANA_LOG_FORMAT`` names, and a one-line warning when it names neither format."""
    global _json  # noqa: PLW0603 - one logging set-up per process
    chosen = (value or "text").strip().lower()
    _json = chosen == "json"
    if _json:
        return JsonFormatter(), None
    warning = None
    if chosen != "text":
        warning = f"{FORMAT_SETTING}={value!r} is neither text nor json; logging as text. Set it to json or text."
    return _TextFormatter(TEXT_FORMAT), warning


def is_json() -> bool:
    """Whether the process logs JSON (uvicorn's own lines then go through the same handler)."""
    return _json
