"""Which processes sharing a data dir are alive: each holds an OS file lock for as long as it runs.

A process that dies (killed, crashed, power cut) loses its lock at once, so another process can tell a
dead owner from a live one by trying to take that lock, without waiting for a lease to run out and
without trusting any clock. ``filelock`` gives the same lock on Windows (``msvcrt.locking``) as on
POSIX (``flock``); the soft, existence-based fallback is disabled because it cannot tell a dead owner.
"""

from __future__ import annotations

import os
import re
import uuid
from pathlib import Path

from filelock import FileLock, Timeout

__all__ = ["OwnerLocks"]

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


class OwnerLocks:
    """This process's own lock in ``folder``, and a liveness test for the others'."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.owner = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        self._lock: FileLock | None = None

    def _path(self, owner: str) -> Path:
        return self.folder / f"{_UNSAFE.sub('', owner)[:80] or 'owner'}.lock"

    def acquire(self) -> None:
        """Take this process's lock (blocking calls; run off the event loop)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        lock = FileLock(self._path(self.owner), timeout=0, fallback_to_soft=False)
        lock.acquire()
        self._lock = lock
        self._forget_dead()

    def release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._path(self.owner).unlink(missing_ok=True)
            self._lock = None

    def is_alive(self, owner: str) -> bool:
        """True while the process ``owner`` runs (this one included)."""
        if owner == self.owner:
            return True
        lock = FileLock(self._path(owner), timeout=0, fallback_to_soft=False)
        try:
            lock.acquire()
        except Timeout:
            return True
        except OSError:  # the folder vanished or is unwritable: assume alive, never steal a live row
            return True
        lock.release()
        self._path(owner).unlink(missing_ok=True)
        return False

    def _forget_dead(self) -> None:
        """Remove the lock files of processes that are gone (one file per start would pile up)."""
        for path in self.folder.glob("*.lock"):
            if path != self._path(self.owner):
                self.is_alive(path.stem)
