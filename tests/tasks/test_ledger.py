"""The SQLite ledger: rows survive, live owners keep others off, dead owners lose rows at once, the schema migrates."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import anyio
import pytest

from nano_banana_mcp.catalog import GenerateRequest
from nano_banana_mcp.errors import ConfigError
from nano_banana_mcp.tasks import (
    LEDGER_FILE,
    SCHEMA_VERSION,
    STATUSES,
    Ledger,
    Phase,
    SavedImage,
    Status,
    TaskRecord,
    status_of,
)
from nano_banana_mcp.tasks.ledger import MIGRATIONS
from nano_banana_mcp.tasks.records import now

pytestmark = pytest.mark.anyio

API = "https://monet.example"

ORPHAN = """
import sys
from pathlib import Path

import anyio

from nano_banana_mcp.catalog import GenerateRequest
from nano_banana_mcp.tasks import Ledger, TaskRecord


async def main() -> None:
    ledger = await Ledger(Path(sys.argv[1]), api_scope=sys.argv[2]).open()
    await ledger.add(TaskRecord(key=sys.argv[3], request=GenerateRequest(prompt="orphan")))
    print(ledger.owner, flush=True)
    sys.stdin.read()


anyio.run(main)
"""


def record(key: str, **changes: Any) -> TaskRecord:
    return TaskRecord(key=key, request=GenerateRequest(prompt=f"prompt {key}"), **changes)


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "data" / LEDGER_FILE


@asynccontextmanager
async def opened(path: Path, api_scope: str = API, **kwargs: str) -> AsyncIterator[Ledger]:
    """A ledger as another process would open it on the same file."""
    ledger = await Ledger(path, api_scope=api_scope, **kwargs).open()
    try:
        yield ledger
    finally:
        await ledger.close()


@pytest.fixture
async def ledger(path: Path) -> AsyncIterator[Ledger]:
    async with opened(path) as ledger:
        yield ledger


@pytest.fixture
async def other(path: Path, ledger: Ledger) -> AsyncIterator[Ledger]:
    """A second, live process on the same file."""
    async with opened(path) as other:
        yield other


class Orphaner:
    """Another process that opened the ledger and added a row it owns, until it is killed."""

    def __init__(self, path: Path, key: str, api_scope: str = API) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [sys.executable, "-c", ORPHAN, str(path), api_scope, key],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        self.owner = self.process.stdout.readline().strip()
        assert self.owner, "the other process failed to add its row"

    def kill(self) -> None:
        self.process.kill()  # SIGKILL: it never releases anything
        self.process.wait(timeout=10)

    def close(self) -> None:
        if self.process.poll() is None:
            self.kill()
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe is not None:
                pipe.close()


@pytest.fixture
def orphaner(path: Path, ledger: Ledger) -> Iterator[Orphaner]:
    """A live other process owning the row "orphan"."""
    process = Orphaner(path, "orphan")
    yield process
    process.close()


# -- the file ------------------------------------------------------------------------------------


async def test_a_row_survives_reopening(ledger: Ledger, path: Path) -> None:
    """What one process wrote, a new process reads back whole."""
    rec = record("k1", task_id="task_1", phase="downloaded", endpoint="sync", api_status="success", progress=100.0)
    rec.images = [SavedImage(path="/x/a.png", url="https://f/a.png", mime_type="image/png", width=2, height=3)]
    await ledger.add(rec)
    await ledger.save(rec)
    await ledger.close()
    async with opened(path) as reopened:
        got = await reopened.find("task_1")
    assert got is not None
    assert got.model_dump(exclude={"updated_at"}) == rec.model_dump(exclude={"updated_at"})


async def test_wal_and_schema_version(ledger: Ledger) -> None:
    """The database runs in WAL mode (readers never block the writer) and records its schema version."""
    db = sqlite3.connect(ledger.path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    db.close()


async def test_a_write_waits_for_another_writer(ledger: Ledger) -> None:
    """While another process holds the write lock, a write waits for it instead of failing."""
    blocker = sqlite3.connect(ledger.path, isolation_level=None, check_same_thread=False)
    blocker.execute("BEGIN IMMEDIATE")

    async def unblock_soon() -> None:
        await anyio.sleep(0.2)
        blocker.execute("COMMIT")

    async with anyio.create_task_group() as tg:
        tg.start_soon(unblock_soon)
        await ledger.add(record("k1"))
    blocker.close()
    assert await ledger.get("k1") is not None


async def test_newer_schema_is_refused_with_advice(path: Path) -> None:
    """A ledger from a newer version is not touched; the error says what to do."""
    path.parent.mkdir()
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(ConfigError, match="NANO_BANANA_DATA_DIR"):
        await Ledger(path, api_scope=API).open()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1
    db.close()


def assert_names_the_fix(err: ConfigError, path: Path) -> None:
    assert str(path) in str(err)
    assert "NANO_BANANA_DATA_DIR" in str(err)


async def test_unwritable_data_dir_is_a_clear_error(tmp_path: Path) -> None:
    """A data dir that cannot hold the ledger is named, with the setting to change."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    path = blocker / "sub" / LEDGER_FILE
    with pytest.raises(ConfigError) as info:
        await Ledger(path, api_scope=API).open()
    assert_names_the_fix(info.value, path)


async def test_a_corrupt_file_is_a_clear_error(path: Path) -> None:
    """A ledger file that is not a database is named, with the setting to change; it is left as it was."""
    path.parent.mkdir()
    garbage = b"\x00\xffthis is not a database\n" * 512
    path.write_bytes(garbage)
    with pytest.raises(ConfigError) as info:
        await Ledger(path, api_scope=API).open()
    assert_names_the_fix(info.value, path)
    assert path.read_bytes() == garbage


@pytest.fixture
async def read_only(path: Path) -> AsyncIterator[Path]:
    """An existing ledger file that cannot be written (immutable as well when the tests run as root)."""
    async with opened(path):
        pass
    path.chmod(0o444)
    immutable = os.geteuid() == 0
    if immutable:  # root writes through file modes; only the immutable attribute stops it
        chattr = shutil.which("chattr")
        if chattr is None or subprocess.run([chattr, "+i", str(path)], check=False).returncode:
            pytest.skip("running as root on a filesystem without the immutable attribute")
    yield path
    if immutable:
        subprocess.run([str(shutil.which("chattr")), "-i", str(path)], check=True)
    path.chmod(0o644)


async def test_a_read_only_file_is_a_clear_error(read_only: Path) -> None:
    """A ledger that cannot be written is refused at open, not on the first task, and named with the fix."""
    with pytest.raises(ConfigError) as info:
        await Ledger(read_only, api_scope=API).open()
    assert_names_the_fix(info.value, read_only)


# -- owners --------------------------------------------------------------------------------------


async def test_a_live_owner_keeps_another_process_off(ledger: Ledger, other: Ledger) -> None:
    """The creator owns its new row; another live process can neither claim it nor see it as claimable."""
    await ledger.add(record("k1"))
    assert await other.claimable() == []
    assert not await other.claim("k1")
    assert await ledger.claim("k1")


async def test_a_dead_owners_row_is_taken_at_once(ledger: Ledger, orphaner: Orphaner) -> None:
    """The moment the owning process is killed, its unfinished row is claimable and claimed; no lease to wait out."""
    assert await ledger.claimable() == []
    assert not await ledger.claim("orphan")
    orphaner.kill()
    assert await ledger.claimable() == ["orphan"]
    assert await ledger.claim("orphan")


async def test_of_two_claims_on_a_dead_owners_row_one_wins(ledger: Ledger, other: Ledger, orphaner: Orphaner) -> None:
    """Two processes that both find the owner dead race for the row: exactly one gets it, and keeps it."""
    orphaner.kill()
    won: dict[str, bool] = {}

    async def claim(name: str, ledger: Ledger) -> None:
        won[name] = await ledger.claim("orphan")

    async with anyio.create_task_group() as tg:
        tg.start_soon(claim, "ledger", ledger)
        tg.start_soon(claim, "other", other)
    assert sorted(won.values()) == [False, True]
    winner, loser = (ledger, other) if won["ledger"] else (other, ledger)
    assert await winner.claim("orphan")
    assert not await loser.claim("orphan")


async def test_a_row_this_process_owns_but_is_not_working_is_claimable_by_itself(ledger: Ledger) -> None:
    """A row this process added (its worker since gone) is offered back to it for resuming."""
    await ledger.add(record("k1"))
    assert await ledger.claimable() == ["k1"]
    assert await ledger.claim("k1")


async def test_a_released_row_is_free_and_a_finished_one_never_claimable(ledger: Ledger, other: Ledger) -> None:
    """A released unfinished row is free for others; a finished row is never claimable."""
    await ledger.add(record("open"))
    await ledger.add(record("done", phase="downloaded"))
    await ledger.release("open")
    await ledger.release("done")
    assert await other.claimable() == ["open"]
    assert not await other.claim("done")
    assert await other.claim("open")


async def test_rows_of_a_closed_ledger_are_taken_over(path: Path, ledger: Ledger) -> None:
    """A process that shut down without releasing its rows leaves them to the others at once."""
    async with opened(path) as gone:
        await gone.add(record("k1"))
    assert await ledger.claimable() == ["k1"]


async def test_rows_of_another_api_are_not_resumed(ledger: Ledger, path: Path) -> None:
    """Tasks made at one API (or offline) are not offered to a process talking to another."""
    await ledger.add(record("k1"))
    await ledger.release("k1")
    async with opened(path, api_scope="offline") as offline:
        assert await offline.claimable() == []


async def test_rows_of_another_api_cannot_be_claimed(ledger: Ledger, path: Path) -> None:
    """Claiming a row of another API by its key fails too: its create or task id means nothing here."""
    await ledger.add(record("k1"))
    await ledger.release("k1")
    async with opened(path, api_scope="offline") as offline:
        assert not await offline.claim("k1")


# -- reading -------------------------------------------------------------------------------------


async def found_key(ledger: Ledger, handle: str) -> str | None:
    found = await ledger.find(handle)
    return found.key if found is not None else None


async def test_find_by_task_id_or_by_key(ledger: Ledger) -> None:
    """A row is found by our key before the API names it, then by the API's task id or the key."""
    await ledger.add(record("k1"))
    await ledger.add(record("k2", phase="created", task_id="task_2"))
    assert await found_key(ledger, "k1") == "k1"
    assert await found_key(ledger, "task_2") == "k2"
    assert await found_key(ledger, "k2") == "k2"
    assert await found_key(ledger, "task_unknown") is None


ROWS = [
    record("submitting", phase="submitting"),
    record("created", phase="created", task_id="t1", api_status="pending"),
    record("processing", phase="created", task_id="t2", api_status="processing"),
    record("succeeded", phase="succeeded", task_id="t3", api_status="success"),
    record("downloaded", phase="downloaded", task_id="t4", api_status="success"),
    record("failed", phase="failed", task_id="t5", api_status="failed"),
    record("refused", phase="failed"),
]


@pytest.fixture
async def filled(ledger: Ledger) -> list[TaskRecord]:
    """One row in each phase, a second apart, oldest first."""
    start = now()
    rows = []
    for i, row in enumerate(ROWS):
        rec = row.model_copy(update={"created_at": start + timedelta(seconds=i)})
        await ledger.add(rec)
        rows.append(rec)
    return rows


async def test_recent_is_newest_first_and_pages(ledger: Ledger, filled: list[TaskRecord]) -> None:
    """Listing pages newest first; an offset skips the newest."""
    newest_first = [r.key for r in reversed(filled)]
    assert [r.key for r in await ledger.recent(100)] == newest_first
    assert [r.key for r in await ledger.recent(2, offset=1)] == newest_first[1:3]
    assert await ledger.count() == len(filled)


@pytest.mark.parametrize("status", STATUSES)
async def test_recent_and_count_filter_by_public_status(
    ledger: Ledger, filled: list[TaskRecord], status: Status
) -> None:
    """A status filter returns exactly the rows with that public status, newest first, and counts them."""
    expected = [r.key for r in reversed(filled) if r.status == status]
    assert expected
    assert [r.key for r in await ledger.recent(100, status=status)] == expected
    assert await ledger.count(status) == len(expected)


async def test_a_filtered_page_agrees_with_its_total(ledger: Ledger) -> None:
    """Paging through one status, page by page, gives every row once and as many as the count says."""
    start = now()
    for i in range(7):
        phase = "downloaded" if i % 3 else "failed"
        await ledger.add(record(f"k{i}", phase=phase, created_at=start + timedelta(seconds=i)))
    total = await ledger.count("success")
    pages = [await ledger.recent(2, offset=offset, status="success") for offset in range(0, total + 2, 2)]
    keys = [r.key for page in pages for r in page]
    assert len(keys) == total == 4
    assert len(set(keys)) == total
    assert all(len(page) <= 2 for page in pages)


async def test_the_status_filter_follows_saves(ledger: Ledger) -> None:
    """A row saved in a new phase moves from one status filter to the other."""
    rec = record("k1", phase="created", task_id="task_1", api_status="processing")
    await ledger.add(rec)
    assert await ledger.count("running") == 1
    rec.phase = "downloaded"
    await ledger.save(rec)
    assert await ledger.count("running") == 0
    assert [r.key for r in await ledger.recent(10, status="success")] == ["k1"]


# -- uploads ---------------------------------------------------------------------------------------


async def test_upload_cache_is_per_scope(ledger: Ledger, path: Path) -> None:
    """A cached upload URL is found by content hash, and only where it was uploaded."""
    expires = now() + timedelta(hours=24)
    await ledger.remember_upload("abc", "https://files/abc.png", expires)
    assert await ledger.cached_upload("abc") == ("https://files/abc.png", expires)
    assert await ledger.cached_upload("def") is None
    async with opened(path, api_scope="offline", upload_scope="http://127.0.0.1:5555") as elsewhere:
        assert await elsewhere.cached_upload("abc") is None
    async with opened(path, api_scope="other", upload_scope=API) as same_place:
        assert await same_place.cached_upload("abc") == ("https://files/abc.png", expires)


async def test_a_new_upload_replaces_the_cached_one(ledger: Ledger) -> None:
    """Uploading the same content again (the old URL expired) keeps only the new URL."""
    await ledger.remember_upload("abc", "https://files/old.png", now())
    later = now() + timedelta(hours=24)
    await ledger.remember_upload("abc", "https://files/new.png", later)
    assert await ledger.cached_upload("abc") == ("https://files/new.png", later)


# -- concurrency -----------------------------------------------------------------------------------


async def test_concurrent_writers_lose_nothing(ledger: Ledger, other: Ledger) -> None:
    """Two processes' worth of writers on one file: every row lands, none twice, every update kept."""

    async def write(ledger: Ledger, prefix: str) -> None:
        for i in range(100):
            rec = record(f"{prefix}{i}")
            await ledger.add(rec)
            rec.phase, rec.task_id, rec.api_status = "created", f"task_{prefix}{i}", "processing"
            await ledger.save(rec)

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            tg.start_soon(write, ledger, "a")
            tg.start_soon(write, other, "b")
    assert await ledger.count() == 200
    assert await other.count("running") == 200


# -- migrations ------------------------------------------------------------------------------------

V1_ROWS: list[tuple[str, Phase, str | None]] = [  # key, phase, api_status: each kind a version-1 ledger held
    ("v_submitting", "submitting", None),
    ("v_created", "created", None),
    ("v_pending", "created", "pending"),
    ("v_processing", "created", "processing"),
    ("v_unknown", "created", "queued"),
    ("v_succeeded", "succeeded", "success"),
    ("v_downloaded", "downloaded", "success"),
    ("v_failed", "failed", "failed"),
]


@pytest.fixture
def v1_path(path: Path) -> Path:
    """A version-1 ledger, made by hand from the first migration, with a row in each phase and one upload."""
    path.parent.mkdir()
    db = sqlite3.connect(path)
    db.executescript(MIGRATIONS[0])
    start = now()
    for i, (key, phase, api_status) in enumerate(V1_ROWS):
        stamp = (start + timedelta(seconds=i)).isoformat()
        task_id = None if phase == "submitting" else f"task_{key}"
        db.execute(
            "INSERT INTO tasks (key, task_id, request, phase, api_status, base_url, owner, lease_until, "
            "created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                key,
                task_id,
                GenerateRequest(prompt=key).model_dump_json(),
                phase,
                api_status,
                API,
                "old-owner",
                4e9,  # a version-1 lease still running (until 2096): leases mean nothing any more
                stamp,
                stamp,
            ),
        )
    db.execute(
        "INSERT INTO uploads (sha256, base_url, url, expires_at) VALUES (?, ?, ?, ?)",
        ("abc", API, "https://files/abc.png", (start + timedelta(hours=24)).isoformat()),
    )
    db.execute("PRAGMA user_version=1")
    db.commit()
    db.close()
    return path


async def test_a_version_1_ledger_gets_endpoint_and_status(v1_path: Path) -> None:
    """Every old row was created through /tasks/async and gets the public status status_of gives its phase."""
    async with opened(v1_path) as ledger:
        for key, phase, api_status in V1_ROWS:
            row = await ledger.get(key)
            assert row is not None
            assert row.endpoint == "async"
            assert row.status == status_of(phase, api_status)
        for status in STATUSES:
            expected = {key for key, phase, api_status in V1_ROWS if status_of(phase, api_status) == status}
            assert {r.key for r in await ledger.recent(100, status=status)} == expected
            assert await ledger.count(status) == len(expected)


async def test_a_version_1_ledger_resumes_its_rows_and_keeps_its_uploads(v1_path: Path) -> None:
    """After migrating, old unfinished rows are resumed whatever their leases said, and the upload cache is kept."""
    async with opened(v1_path) as ledger:
        unfinished = [key for key, phase, _ in V1_ROWS if phase in ("submitting", "created", "succeeded")]
        assert await ledger.claimable() == unfinished
        cached = await ledger.cached_upload("abc")
        assert cached is not None
        assert cached[0] == "https://files/abc.png"
    db = sqlite3.connect(v1_path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    db.close()
