"""What only the SQLite ledger has: a file in the data dir (WAL, writers waiting on each other, damage, a read-only
file, a newer schema) and its migration from version 1. The promises both ledgers keep are in ``test_ledger.py``."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path

import anyio
import pytest

from nano_banana_mcp.catalog import GenerateRequest
from nano_banana_mcp.errors import ConfigError
from nano_banana_mcp.tasks import LEDGER_FILE, SCHEMA_VERSION, STATUSES, Ledger, Phase, TaskRecord, status_of
from nano_banana_mcp.tasks.ledger import MIGRATIONS
from nano_banana_mcp.tasks.records import Call, now

pytestmark = pytest.mark.anyio

API = "https://monet.example"


def record(key: str) -> TaskRecord:
    return TaskRecord(key=key, request=GenerateRequest(prompt=f"prompt {key}"))


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "data" / LEDGER_FILE


@asynccontextmanager
async def opened(path: Path, api_scope: str = API) -> AsyncIterator[Ledger]:
    ledger = await Ledger(path, api_scope=api_scope).open()
    try:
        yield ledger
    finally:
        await ledger.close()


@pytest.fixture
async def ledger(path: Path) -> AsyncIterator[Ledger]:
    async with opened(path) as ledger:
        yield ledger


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


async def test_a_call_is_read_at_once_while_another_process_writes(ledger: Ledger) -> None:
    """``find_call`` (a host polls it every second per task) reads on a connection of its own that waits for no lock:
    while another process holds a write transaction, it answers at once, with the committed state."""
    await ledger.add(record("k1"))
    await ledger.add_call(Call(id="c1", keys=["k1"]))
    other = sqlite3.connect(ledger.path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    other.execute("UPDATE tasks SET error = 'not committed' WHERE key = 'k1'")
    try:
        found = await ledger.find_call("c1")
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert found is not None and found[1][0].error is None


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
