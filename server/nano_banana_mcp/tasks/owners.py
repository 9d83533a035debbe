"""Which processes sharing a data dir are alive: each holds an OS lock on a file of its own while it runs.

A process that dies (killed, crashed, power cut) loses its lock at once, so another process can tell a dead
owner from a live one by trying to take that lock, without waiting for a lease to run out and without trusting
any clock. POSIX uses ``flock`` and Windows ``msvcrt.locking``, both released by the OS when the process ends.

A checker that finds a lock free removes the dead owner's file. So that it can never remove the file of an
owner that is just starting, an owner checks after locking that its file is still the one at its path (same
inode), and starts over if not. (``filelock`` is not used here: it does not tell its caller which file it
locked, and that is the whole question.)
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import time
import uuid
from pathlib import Path

__all__ = ["OwnerLocks"]

_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
_ACQUIRE_SECONDS = 5.0
"""How long a starting process waits for its own lock (a checker may hold it for an instant)."""


if sys.platform == "win32":
    import msvcrt

    def _try_lock(fd: int) -> bool:
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True

    def _unlock(fd: int) -> None:
        with contextlib.suppress(OSError):
            os.lseek(fd, 0, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)

else:
    import fcntl

    def _try_lock(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def _unlock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)


def _same_file(fd: int, path: Path) -> bool:
    try:
        held, there = os.fstat(fd), path.stat()
    except OSError:
        return False
    return (held.st_dev, held.st_ino) == (there.st_dev, there.st_ino)


class OwnerLocks:
    """This process's own lock in ``folder``, and a liveness test for the others'."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.owner = f"{os.getpid()}-{uuid.uuid4().hex[:12]}"
        self._fd: int | None = None

    def _path(self, owner: str) -> Path:
        return self.folder / f"{_UNSAFE.sub('', owner)[:80] or 'owner'}.lock"

    def acquire(self) -> None:
        """Take this process's lock (blocking calls; run off the event loop). OSError if it cannot."""
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self._path(self.owner)
        deadline = time.monotonic() + _ACQUIRE_SECONDS
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            if _try_lock(fd) and _same_file(fd, path):
                self._fd = fd
                break
            os.close(fd)  # a checker holds it for an instant, or removed it under us: start over
            if time.monotonic() > deadline:
                raise OSError(f"could not lock {path}")
            time.sleep(0.01)
        self._forget_dead()

    def release(self) -> None:
        if self._fd is not None:
            self._path(self.owner).unlink(missing_ok=True)
            _unlock(self._fd)
            os.close(self._fd)
            self._fd = None

    def is_alive(self, owner: str) -> bool:
        """True while the process ``owner`` runs (this one included)."""
        if owner == self.owner:
            return True
        path = self._path(owner)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError:  # the folder vanished or is unwritable: assume alive, never take a live row
            return True
        try:
            if not _try_lock(fd):
                return True
            with contextlib.suppress(OSError):
                path.unlink()  # dead: its file goes, while we hold the lock on it
            _unlock(fd)
            return False
        finally:
            os.close(fd)

    def _forget_dead(self) -> None:
        """Remove the lock files of processes that are gone (one file per start would pile up)."""
        for path in self.folder.glob("*.lock"):
            if path != self._path(self.owner):
                self.is_alive(path.stem)
