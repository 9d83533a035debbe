"""Which create endpoint new tasks use, learned from the API and remembered in the data dir.

The page documents two ways to create a task: ``POST /tasks/sync`` ("waits for completion and streams progress", no
event format given) and ``POST /tasks/async`` followed by ``GET /tasks/{id}`` (documented in full). The stream is
tried first: where its events name the task, one request carries a task to its end. Once a stream has proved
unreadable (it never named its task, so the task had to be found through ``GET /tasks/list``), later creates use the
documented ``/tasks/async`` path. That is written to ``create-path.json`` in the data dir, per API URL, so the next
process starts on the documented path too (``nano-banana-mcp doctor`` shows it). A row's own endpoint is fixed before
its first send and never changes: this decides only where new rows go.
"""

from __future__ import annotations

import json
import logging
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

__all__ = ["CREATE_PATH_FILE", "CreatePath"]

log = logging.getLogger(__name__)

CREATE_PATH_FILE = "create-path.json"
_MAX_APIS = 16  # entries kept in the file (one per API URL ever used from this data dir)

Endpoint = Literal["sync", "async"]


class CreatePath:
    """The create endpoint for new rows: ``sync`` until a stream proves unreadable, then ``async`` for good."""

    def __init__(self, file: Path | None, api: str, *, endpoint: Endpoint = "sync", reason: str | None = None) -> None:
        self._file = file
        self._api = api
        self.endpoint: Endpoint = endpoint
        self.reason = reason or "the default: /tasks/sync streams each task's progress in one request"

    @classmethod
    def load(cls, data_dir: Path | None, api: str) -> CreatePath:
        """What the data dir remembers of ``api`` (None: remember nothing, e.g. the offline emulator)."""
        if data_dir is None:
            return cls(None, api)
        file = data_dir / CREATE_PATH_FILE
        entry = _read(file).get(api)
        if isinstance(entry, dict) and entry.get("endpoint") == "async":
            reason = entry.get("reason")
            return cls(file, api, endpoint="async", reason=str(reason) if reason else None)
        return cls(file, api)

    def stream_unreadable(self, why: str) -> None:
        """Send later creates to ``/tasks/async``, here and in later processes; ``why`` says what was seen."""
        if self.endpoint == "async":
            return
        since = datetime.now(UTC).isoformat(timespec="seconds")
        self.endpoint = "async"
        self.reason = f"/tasks/sync proved unreadable on {since} ({why}); the documented /tasks/async + GET is used"
        log.warning("create path: %s", self.reason)
        if self._file is not None:
            try:
                _write(self._file, self._api, {"endpoint": "async", "reason": self.reason})
            except OSError as err:  # this process still switches; the next one learns it again (one more search)
                log.warning("create path: could not remember it in %s (%s)", self._file, err.strerror or err)


def _read(file: Path) -> dict[str, object]:
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write(file: Path, api: str, entry: dict[str, str]) -> None:
    data = {k: v for k, v in _read(file).items() if k != api}
    data[api] = entry
    data = dict(list(data.items())[-_MAX_APIS:])
    file.parent.mkdir(parents=True, exist_ok=True)
    tmp = file.with_name(f".{file.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    tmp.replace(file)
