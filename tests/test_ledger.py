"""The SQLite ledger: rows survive, leases keep two processes off one task, the schema is versioned."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import anyio
import pytest

from nano_banana_mcp.catalog import GenerateRequest
from nano_banana_mcp.errors import ConfigError
from nano_banana_mcp.ledger import SCHEMA_VERSION, Ledger
from nano_banana_mcp.store import SavedImage, TaskRecord, now

pytestmark = pytest.mark.anyio

API = "https://monet.example"


def record(key: str, **changes) -> TaskRecord:
    return TaskRecord(key=key, request=GenerateRequest(prompt=f"prompt {key}"), **changes)


@pytest.fixture
async def ledger(tmp_path: Path) -> AsyncIterator[Ledger]:
    ledger = await Ledger(tmp_path / "ledger.sqlite3", owner="a", api=API, lease_seconds=30).open()
    yield ledger
    await ledger.close()


async def other(tmp_path: Path, *, owner: str = "b", lease_seconds: float = 30) -> Ledger:
    return await Ledger(tmp_path / "ledger.sqlite3", owner=owner, api=API, lease_seconds=lease_seconds).open()


async def test_a_row_survives_reopening(ledger: Ledger, tmp_path: Path) -> None:
    """What one process wrote, a new process reads back whole."""
    rec = record("k1", task_id="task_1", phase="downloaded", progress=100.0)
    rec.images = [SavedImage(path="/x/a.png", url="https://f/a.png", mime_type="image/png", width=2, height=3)]
    await ledger.add(rec)
    await ledger.save(rec)
    await ledger.close()
    reopened = await other(tmp_path)
    got = await reopened.by_task_id("task_1")
    await reopened.close()
    assert got is not None
    assert got.model_dump(exclude={"updated_at"}) == rec.model_dump(exclude={"updated_at"})


async def test_wal_busy_timeout_and_schema_version(ledger: Ledger) -> None:
    """The database runs in WAL mode with a busy timeout and records its schema version."""
    db = sqlite3.connect(ledger.path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    db.close()


async def test_newer_schema_is_refused_with_advice(tmp_path: Path) -> None:
    """A ledger from a newer version is not touched; the error says what to do."""
    path = tmp_path / "ledger.sqlite3"
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version={SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(ConfigError, match="NANO_BANANA_DATA_DIR"):
        await Ledger(path, owner="a", api=API).open()


async def test_unwritable_data_dir_is_a_clear_error(tmp_path: Path) -> None:
    """A data dir that cannot hold the ledger names the setting to change."""
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match="NANO_BANANA_DATA_DIR"):
        await Ledger(blocker / "sub" / "ledger.sqlite3", owner="a", api=API).open()


async def test_a_held_lease_keeps_another_process_off(ledger: Ledger, tmp_path: Path) -> None:
    """The creator holds its new row; another process can neither claim nor see it as claimable."""
    await ledger.add(record("k1"))
    b = await other(tmp_path)
    assert await b.claimable() == []
    assert not await b.claim("k1")
    assert await ledger.claim("k1")  # the holder renews its own
    await b.close()


async def test_an_expired_lease_is_taken_over(tmp_path: Path) -> None:
    """A process that stops renewing (it died) loses the row to the next one."""
    a = await other(tmp_path, owner="a", lease_seconds=0.05)
    await a.add(record("k1"))
    b = await other(tmp_path, owner="b")
    await anyio.sleep(0.1)
    assert await b.claimable() == ["k1"]
    assert await b.claim("k1")
    assert not await a.claim("k1")  # now b's
    await a.close()
    await b.close()


async def test_released_and_finished_rows(ledger: Ledger, tmp_path: Path) -> None:
    """A released unfinished row is free for others; a finished row is never claimable."""
    await ledger.add(record("open"))
    await ledger.add(record("done", phase="downloaded"))
    await ledger.release("open")
    await ledger.release("done")
    b = await other(tmp_path)
    assert await b.claimable() == ["open"]
    assert not await b.claim("done")
    await b.close()


async def test_rows_of_another_api_are_not_resumed(ledger: Ledger, tmp_path: Path) -> None:
    """Tasks made at one API (or offline) are not resumed by a process talking to another."""
    await ledger.add(record("k1"))
    await ledger.release("k1")
    offline = await Ledger(tmp_path / "ledger.sqlite3", owner="c", api="offline").open()
    assert await offline.claimable() == []
    await offline.close()


async def test_recent_is_newest_first_and_filters_by_phase(ledger: Ledger) -> None:
    """Listing pages newest first, and a phase filter narrows both the rows and the count."""
    start = now()
    for i, phase in enumerate(["downloaded", "failed", "created", "downloaded"]):
        await ledger.add(record(f"k{i}", phase=phase, created_at=start + timedelta(seconds=i)))
    assert [r.key for r in await ledger.recent(10)] == ["k3", "k2", "k1", "k0"]
    assert [r.key for r in await ledger.recent(1, offset=1)] == ["k2"]
    assert [r.key for r in await ledger.recent(10, status=["downloaded"])] == ["k3", "k0"]
    assert await ledger.count(["downloaded"]) == 2
    assert await ledger.count() == 4


async def test_upload_cache_is_per_api(ledger: Ledger, tmp_path: Path) -> None:
    """A cached upload URL is found by content hash, and only for the API it was uploaded to."""
    expires = now() + timedelta(hours=24)
    await ledger.remember_upload("abc", "https://files/abc.png", expires)
    assert await ledger.cached_upload("abc") == ("https://files/abc.png", expires)
    elsewhere = await Ledger(tmp_path / "ledger.sqlite3", owner="c", api="offline").open()
    assert await elsewhere.cached_upload("abc") is None
    await elsewhere.close()


async def test_concurrent_writers_lose_nothing(tmp_path: Path) -> None:
    """Two processes' worth of writers on one file: every row lands, none twice."""
    a, b = await other(tmp_path, owner="a"), await other(tmp_path, owner="b")

    async def write(ledger: Ledger, prefix: str) -> None:
        for i in range(100):
            rec = record(f"{prefix}{i}", task_id=f"task_{prefix}{i}")
            await ledger.add(rec)
            rec.phase = "created"
            await ledger.save(rec)

    started = time.monotonic()
    async with anyio.create_task_group() as tg:
        tg.start_soon(write, a, "a")
        tg.start_soon(write, b, "b")
    assert time.monotonic() - started < 30
    assert await a.count() == 200
    assert await b.count(["created"]) == 200
    await a.close()
    await b.close()
