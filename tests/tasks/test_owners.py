"""Owner liveness through OS file locks: a live process is seen alive, a killed one dead at once."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from nano_banana_mcp.tasks.owners import OwnerLocks

HOLDER = """
import sys
from pathlib import Path
from nano_banana_mcp.tasks.owners import OwnerLocks

locks = OwnerLocks(Path(sys.argv[1]))
locks.acquire()
print(locks.owner, flush=True)
sys.stdin.read()
"""


class Holder:
    """Another process holding an OwnerLocks in ``folder`` until it is killed."""

    def __init__(self, folder: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", HOLDER, str(folder)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self.process.stdout is not None
        self.owner = self.process.stdout.readline().strip()
        assert self.owner, "the holder process failed to start"

    def kill(self) -> None:
        self.process.kill()  # SIGKILL: no clean-up code runs
        self.process.wait(timeout=10)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return tmp_path / "owners"


@pytest.fixture
def holder(folder: Path) -> Iterator[Holder]:
    holder = Holder(folder)
    yield holder
    if holder.process.poll() is None:
        holder.kill()
    for pipe in (holder.process.stdin, holder.process.stdout):
        if pipe is not None:
            pipe.close()


@pytest.fixture
def locks(folder: Path) -> Iterator[OwnerLocks]:
    locks = OwnerLocks(folder)
    locks.acquire()
    yield locks
    locks.release()


def test_a_live_process_is_alive(locks: OwnerLocks, holder: Holder) -> None:
    """Another running process that holds its lock is alive, however often asked."""
    assert locks.is_alive(holder.owner)
    assert locks.is_alive(holder.owner)


def test_a_killed_process_is_dead_at_once(locks: OwnerLocks, holder: Holder) -> None:
    """The moment a process is SIGKILLed its owner is dead: no lease to run out, no clock."""
    assert locks.is_alive(holder.owner)
    holder.kill()
    assert not locks.is_alive(holder.owner)


def test_two_owners_in_one_process_see_each_other_alive(folder: Path) -> None:
    """Two OwnerLocks in one process (two ledgers) each see the other alive."""
    first, second = OwnerLocks(folder), OwnerLocks(folder)
    first.acquire()
    second.acquire()
    assert first.owner != second.owner
    assert first.is_alive(second.owner)
    assert second.is_alive(first.owner)
    first.release()
    second.release()


def test_this_process_is_alive_to_itself(locks: OwnerLocks) -> None:
    """A process never takes itself for dead."""
    assert locks.is_alive(locks.owner)


def test_a_released_owner_is_dead(folder: Path, locks: OwnerLocks) -> None:
    """A process that shut down cleanly (released its lock) is no longer an owner."""
    other = OwnerLocks(folder)
    other.acquire()
    other.release()
    assert not locks.is_alive(other.owner)


def test_an_unknown_owner_is_dead(locks: OwnerLocks) -> None:
    """An owner no process ever announced (an old ledger's) is dead."""
    assert not locks.is_alive("12345-notaprocess")


def test_dead_owners_lock_files_are_cleared_at_start(folder: Path, holder: Holder) -> None:
    """A starting process removes the lock files of processes that died; one file per start never piles up."""
    holder.kill()
    assert len(list(folder.glob("*.lock"))) == 1
    locks = OwnerLocks(folder)
    locks.acquire()
    assert [p.name for p in folder.glob("*.lock")] == [f"{locks.owner}.lock"]
    locks.release()


def test_an_owner_name_cannot_reach_outside_the_folder(tmp_path: Path, locks: OwnerLocks) -> None:
    """Owner names from the ledger are sanitised: asking about '../victim' never touches files outside."""
    victim = tmp_path / "victim.lock"
    victim.write_text("keep me")
    assert not locks.is_alive("../victim")
    assert victim.read_text() == "keep me"


def test_owners_starting_while_others_check_are_never_taken_for_dead(tmp_path: Path) -> None:
    """Processes that start while others sweep the lock folder all get their lock, and are all seen alive
    afterwards (a checker never removes the file of an owner that is just starting)."""
    stop = threading.Event()

    def sweep() -> None:
        checker = OwnerLocks(tmp_path)
        while not stop.is_set():
            for path in list(tmp_path.glob("*.lock")):
                checker.is_alive(path.stem)

    sweepers = [threading.Thread(target=sweep) for _ in range(2)]
    for thread in sweepers:
        thread.start()
    try:
        owners = []
        for _ in range(40):
            owner = OwnerLocks(tmp_path)
            owner.acquire()
            owners.append(owner)
    finally:
        stop.set()
        for thread in sweepers:
            thread.join()
    judge = OwnerLocks(tmp_path)
    assert all(judge.is_alive(owner.owner) for owner in owners)
    for owner in owners:
        owner.release()
