"""Every ledger keeps the same promises, on SQLite and on PostgreSQL: rows survive, live owners keep others off, dead
owners lose rows at once, lists agree with their totals, uploads are cached per API, callers see one tenant's rows
and uploads.

Each test runs on both (``[sqlite]``, ``[postgresql]``). What only one of them has is tested apart: the SQLite
file (WAL, damage, read-only, its version-1 migration) in ``test_ledger_sqlite.py``, the database (URLs,
migrations of replicas starting together, a replica whose connection is cut) in ``test_ledger_pg.py``.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import anyio
import pytest
from pydantic import SecretStr

from nano_banana_mcp.catalog import GenerateRequest
from nano_banana_mcp.tasks import LEDGER_FILE, STATUSES, Ledger, LedgerStore, RowTaken, SavedImage, Status, TaskRecord
from nano_banana_mcp.tasks.records import Call, now

pytestmark = pytest.mark.anyio

API = "https://monet.example"

ORPHAN = """
import sys
from pathlib import Path

import anyio
from pydantic import SecretStr

from nano_banana_mcp.catalog import GenerateRequest
from nano_banana_mcp.tasks import Ledger, TaskRecord


async def main() -> None:
    kind, location, api_scope, key = sys.argv[1:]
    if kind == "sqlite":
        ledger = Ledger(Path(location), api_scope=api_scope)
    else:
        from nano_banana_mcp.tasks.ledger_pg import PostgresLedger

        ledger = PostgresLedger(SecretStr(location), api_scope=api_scope)
    await ledger.open()
    await ledger.add(TaskRecord(key=key, request=GenerateRequest(prompt="orphan")))
    print(ledger.owner, flush=True)
    sys.stdin.read()


anyio.run(main)
"""


def record(key: str, **changes: Any) -> TaskRecord:
    return TaskRecord(key=key, request=GenerateRequest(prompt=f"prompt {key}"), **changes)


@dataclass(frozen=True)
class Store:
    """Where the rows live: an SQLite file, or a PostgreSQL database. Each ledger opened on it is another process's."""

    kind: Literal["sqlite", "postgresql"]
    location: str

    def ledger(self, api_scope: str = API, upload_scope: str | None = None) -> LedgerStore:
        if self.kind == "sqlite":
            return Ledger(Path(self.location), api_scope=api_scope, upload_scope=upload_scope)
        from nano_banana_mcp.tasks.ledger_pg import PostgresLedger  # noqa: PLC0415 - the team extra

        return PostgresLedger(SecretStr(self.location), api_scope=api_scope, upload_scope=upload_scope)


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    if request.param == "sqlite":
        return Store("sqlite", str(tmp_path / "data" / LEDGER_FILE))
    return Store("postgresql", request.getfixturevalue("database_url"))


@asynccontextmanager
async def opened(store: Store, api_scope: str = API, upload_scope: str | None = None) -> AsyncIterator[LedgerStore]:
    """A ledger as another process would open it on the same store."""
    ledger = await store.ledger(api_scope, upload_scope).open()
    try:
        yield ledger
    finally:
        await ledger.close()


@pytest.fixture
async def ledger(store: Store) -> AsyncIterator[LedgerStore]:
    async with opened(store) as ledger:
        yield ledger


@pytest.fixture
async def other(store: Store, ledger: LedgerStore) -> AsyncIterator[LedgerStore]:
    """A second, live process on the same store."""
    async with opened(store) as other:
        yield other


def _lock_holders(url: str, owner: str) -> list[int]:
    """The server pids of the PostgreSQL sessions holding ledger owner ``owner``'s lock."""
    import psycopg  # noqa: PLC0415 - the team extra

    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1 "
            "AND ((classid::bigint << 32) | objid::bigint) = hashtextextended(%s, 0)",
            (owner,),
        ).fetchall()
    return [pid for (pid,) in rows]


class Orphaner:
    """Another process that opened the ledger and added a row it owns, until it is killed."""

    def __init__(self, store: Store, key: str, api_scope: str = API) -> None:
        self.store = store
        self.process = subprocess.Popen(
            [sys.executable, "-c", ORPHAN, store.kind, store.location, api_scope, key],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        self.owner = self.process.stdout.readline().strip()
        assert self.owner, "the other process failed to add its row"

    def kill(self) -> None:
        """SIGKILL (it never releases anything), then until the system has let go of its lock: the OS before the
        process is reaped (SQLite), the database server once it sees the socket close (PostgreSQL)."""
        self.process.kill()
        self.process.wait(timeout=60)
        if self.store.kind == "postgresql":
            deadline = time.monotonic() + 60  # only against a hang
            while _lock_holders(self.store.location, self.owner):
                assert time.monotonic() < deadline, "PostgreSQL kept a killed process's session"
                time.sleep(0.01)

    def close(self) -> None:
        if self.process.poll() is None:
            self.kill()
        for pipe in (self.process.stdin, self.process.stdout):
            if pipe is not None:
                pipe.close()


@pytest.fixture
def orphaner(store: Store, ledger: LedgerStore) -> Iterator[Orphaner]:
    """A live other process owning the row "orphan"."""
    process = Orphaner(store, "orphan")
    yield process
    process.close()


# -- rows --------------------------------------------------------------------------------------------------------


async def test_a_row_survives_reopening(store: Store, ledger: LedgerStore) -> None:
    """What one process wrote, a new process reads back whole."""
    rec = record("k1", task_id="task_1", phase="downloaded", endpoint="sync", api_status="success", progress=100.0)
    rec.images = [SavedImage(path="/x/a.png", url="https://f/a.png", mime_type="image/png", width=2, height=3)]
    await ledger.add(rec)
    await ledger.save(rec)
    await ledger.close()
    async with opened(store) as reopened:
        got = await reopened.find("task_1")
    assert got is not None
    assert got.model_dump(exclude={"updated_at"}) == rec.model_dump(exclude={"updated_at"})


async def test_a_save_by_a_process_that_does_not_own_the_row_is_refused(
    ledger: LedgerStore, other: LedgerStore
) -> None:
    """Only the owner writes a row: another process's save changes nothing and says so."""
    rec = record("k1")
    await ledger.add(rec)
    stale = rec.model_copy(update={"phase": "failed", "error": "not mine"})
    with pytest.raises(RowTaken):
        await other.save(stale)
    got = await ledger.get("k1")
    assert got is not None
    assert (got.phase, got.error) == ("submitting", None)


# -- owners --------------------------------------------------------------------------------------


async def test_a_live_owner_keeps_another_process_off(ledger: LedgerStore, other: LedgerStore) -> None:
    """The creator owns its new row; another live process can neither claim it nor see it as claimable."""
    await ledger.add(record("k1"))
    assert await other.claimable() == []
    assert not await other.claim("k1")
    assert await ledger.claim("k1")


async def test_a_dead_owners_row_is_taken_at_once(ledger: LedgerStore, orphaner: Orphaner) -> None:
    """The moment the owning process is killed, its unfinished row is claimable and claimed; no lease to wait out."""
    assert await ledger.claimable() == []
    assert not await ledger.claim("orphan")
    orphaner.kill()
    assert await ledger.claimable() == ["orphan"]  # no lease to wait out
    assert await ledger.claim("orphan")


async def test_of_two_claims_on_a_dead_owners_row_one_wins(
    ledger: LedgerStore, other: LedgerStore, orphaner: Orphaner
) -> None:
    """Two processes that both find the owner dead race for the row: exactly one gets it, and keeps it."""
    orphaner.kill()
    assert await other.claimable() == ["orphan"]
    won: dict[str, bool] = {}

    async def claim(name: str, ledger: LedgerStore) -> None:
        won[name] = await ledger.claim("orphan")

    async with anyio.create_task_group() as tg:
        tg.start_soon(claim, "ledger", ledger)
        tg.start_soon(claim, "other", other)
    assert sorted(won.values()) == [False, True]
    winner, loser = (ledger, other) if won["ledger"] else (other, ledger)
    assert await winner.claim("orphan")
    assert not await loser.claim("orphan")


async def test_a_row_this_process_owns_but_is_not_working_is_claimable_by_itself(ledger: LedgerStore) -> None:
    """A row this process added (its worker since gone) is offered back to it for resuming."""
    await ledger.add(record("k1"))
    assert await ledger.claimable() == ["k1"]
    assert await ledger.claim("k1")


async def test_a_released_row_is_free_and_a_finished_one_never_claimable(
    ledger: LedgerStore, other: LedgerStore
) -> None:
    """A released unfinished row is free for others; a finished row is never claimable."""
    await ledger.add(record("open"))
    await ledger.add(record("done", phase="downloaded"))
    await ledger.release("open")
    await ledger.release("done")
    assert await other.claimable() == ["open"]
    assert not await other.claim("done")
    assert await other.claim("open")


async def test_rows_of_a_closed_ledger_are_taken_over(store: Store, ledger: LedgerStore) -> None:
    """A process that shut down without releasing its rows leaves them to the others at once."""
    async with opened(store) as gone:
        await gone.add(record("k1"))
    assert await ledger.claimable() == ["k1"]


async def test_rows_of_another_api_are_not_resumed(ledger: LedgerStore, store: Store) -> None:
    """Tasks made at one API (or offline) are not offered to a process talking to another."""
    await ledger.add(record("k1"))
    await ledger.release("k1")
    async with opened(store, api_scope="offline") as offline:
        assert await offline.claimable() == []


async def test_rows_of_another_api_cannot_be_claimed(ledger: LedgerStore, store: Store) -> None:
    """Claiming a row of another API by its key fails too: its create or task id means nothing here."""
    await ledger.add(record("k1"))
    await ledger.release("k1")
    async with opened(store, api_scope="offline") as offline:
        assert not await offline.claim("k1")


@pytest.mark.parametrize("store", ["sqlite"], indirect=True)  # PostgreSQL's watch: test_ledger_pg.py
async def test_an_sqlite_watch_of_other_processes_finishes_returns_at_once(
    ledger: LedgerStore, other: LedgerStore
) -> None:
    """SQLite cannot tell a process of another's writes: the watch returns at once, telling nothing."""
    told: list[TaskRecord] = []

    async def tell(rec: TaskRecord) -> None:
        told.append(rec)

    rec = record("k1")
    await other.add(rec)
    rec.phase = "downloaded"
    await other.save(rec)
    with anyio.fail_after(60):  # only against a hang: a watch that waited for news would never return
        await ledger.watch_finished(tell)
    assert told == []


# -- reading -------------------------------------------------------------------------------------


async def found_key(ledger: LedgerStore, handle: str) -> str | None:
    found = await ledger.find(handle)
    return found.key if found is not None else None


async def test_find_by_task_id_or_by_key(ledger: LedgerStore) -> None:
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
async def filled(ledger: LedgerStore) -> list[TaskRecord]:
    """One row in each phase, a second apart, oldest first."""
    start = now()
    rows = []
    for i, row in enumerate(ROWS):
        rec = row.model_copy(update={"created_at": start + timedelta(seconds=i)})
        await ledger.add(rec)
        rows.append(rec)
    return rows


async def test_recent_is_newest_first_and_pages(ledger: LedgerStore, filled: list[TaskRecord]) -> None:
    """Listing pages newest first; an offset skips the newest."""
    newest_first = [r.key for r in reversed(filled)]
    assert [r.key for r in await ledger.recent(100)] == newest_first
    assert [r.key for r in await ledger.recent(2, offset=1)] == newest_first[1:3]
    assert await ledger.count() == len(filled)


@pytest.mark.parametrize("status", STATUSES)
async def test_recent_and_count_filter_by_public_status(
    ledger: LedgerStore, filled: list[TaskRecord], status: Status
) -> None:
    """A status filter returns exactly the rows with that public status, newest first, and counts them."""
    expected = [r.key for r in reversed(filled) if r.status == status]
    assert expected
    assert [r.key for r in await ledger.recent(100, status=status)] == expected
    assert await ledger.count(status) == len(expected)


async def test_a_filtered_page_agrees_with_its_total(ledger: LedgerStore) -> None:
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


async def test_the_status_filter_follows_saves(ledger: LedgerStore) -> None:
    """A row saved in a new phase moves from one status filter to the other."""
    rec = record("k1", phase="created", task_id="task_1", api_status="processing")
    await ledger.add(rec)
    assert await ledger.count("running") == 1
    rec.phase = "downloaded"
    await ledger.save(rec)
    assert await ledger.count("running") == 0
    assert [r.key for r in await ledger.recent(10, status="success")] == ["k1"]


# -- uploads ---------------------------------------------------------------------------------------


async def test_upload_cache_is_per_scope(ledger: LedgerStore, store: Store) -> None:
    """A cached upload URL is found by content hash, and only where it was uploaded."""
    expires = now() + timedelta(hours=24)
    await ledger.remember_upload("abc", "https://files/abc.png", expires)
    assert await ledger.cached_upload("abc") == ("https://files/abc.png", expires)
    assert await ledger.cached_upload("def") is None
    async with opened(store, api_scope="offline", upload_scope="http://127.0.0.1:5555") as elsewhere:
        assert await elsewhere.cached_upload("abc") is None
    async with opened(store, api_scope="other", upload_scope=API) as same_place:
        assert await same_place.cached_upload("abc") == ("https://files/abc.png", expires)


async def test_a_new_upload_replaces_the_cached_one(ledger: LedgerStore) -> None:
    """Uploading the same content again (the old URL expired) keeps only the new URL."""
    await ledger.remember_upload("abc", "https://files/old.png", now())
    later = now() + timedelta(hours=24)
    await ledger.remember_upload("abc", "https://files/new.png", later)
    assert await ledger.cached_upload("abc") == ("https://files/new.png", later)


# -- tenants ---------------------------------------------------------------------------------------


async def test_a_caller_finds_and_lists_only_its_tenants_rows(ledger: LedgerStore) -> None:
    """find, known_task_ids, recent and count see one tenant's rows; another tenant's id is as good as unknown."""
    start = now()
    await ledger.add(record("a1", phase="downloaded", task_id="ta1", tenant="alice", created_at=start))
    await ledger.add(record("a2", tenant="alice", created_at=start + timedelta(seconds=1)))
    await ledger.add(record("b1", phase="downloaded", task_id="tb1", tenant="bob", created_at=start))
    await ledger.add(record("d1", phase="downloaded", task_id="td1", created_at=start))  # the default tenant
    for handle in ("ta1", "a1", "a2"):
        found = await ledger.find(handle, tenant="alice")
        assert found is not None and found.tenant == "alice"
        assert await ledger.find(handle, tenant="bob") is None
        assert await ledger.find(handle) is None
    assert await ledger.find("a2", tenant="alice") == await ledger.get("a2")  # the runner's get spans tenants
    assert await ledger.known_task_ids(["ta1", "tb1", "td1"], tenant="alice") == {"ta1"}
    assert await ledger.known_task_ids(["ta1", "tb1", "td1"]) == {"td1"}
    assert [r.key for r in await ledger.recent(10, tenant="alice")] == ["a2", "a1"]
    assert [r.key for r in await ledger.recent(10, status="success", tenant="alice")] == ["a1"]
    assert [r.key for r in await ledger.recent(10, tenant="bob")] == ["b1"]
    assert [r.key for r in await ledger.recent(10)] == ["d1"]
    assert (await ledger.count(tenant="alice"), await ledger.count("success", tenant="alice")) == (2, 1)
    assert (await ledger.count(tenant="bob"), await ledger.count(tenant="carol"), await ledger.count()) == (1, 0, 1)


async def test_the_runner_works_every_tenants_rows(ledger: LedgerStore, other: LedgerStore) -> None:
    """claimable, claim and save are the server's own work: a row of any tenant is resumed, its tenant kept."""
    await other.add(record("a1", phase="created", task_id="ta1", tenant="alice"))
    await other.add(record("b1", phase="created", task_id="tb1", tenant="bob"))
    await other.release("a1")
    await other.release("b1")
    assert set(await ledger.claimable()) >= {"a1", "b1"}
    assert await ledger.claim("a1") and await ledger.claim("b1")
    row = await ledger.get("b1")
    assert row is not None and row.tenant == "bob"
    row.phase = "downloaded"
    await ledger.save(row)
    saved = await ledger.find("tb1", tenant="bob")
    assert saved is not None and saved.tenant == "bob" and saved.phase == "downloaded"


async def test_the_upload_cache_is_per_tenant(ledger: LedgerStore) -> None:
    """An upload cached for one tenant is not another's; each keeps its own URL for the same content."""
    expires = now() + timedelta(hours=24)
    await ledger.remember_upload("abc", "https://files/alice.png", expires, tenant="alice")
    assert await ledger.cached_upload("abc", tenant="alice") == ("https://files/alice.png", expires)
    assert await ledger.cached_upload("abc", tenant="bob") is None
    assert await ledger.cached_upload("abc") is None
    await ledger.remember_upload("abc", "https://files/bob.png", expires, tenant="bob")
    assert await ledger.cached_upload("abc", tenant="bob") == ("https://files/bob.png", expires)
    assert await ledger.cached_upload("abc", tenant="alice") == ("https://files/alice.png", expires)


# -- calls answered with a task -------------------------------------------------------------------


async def test_a_call_is_found_by_any_process_with_its_rows_in_order_and_only_by_its_tenant(
    ledger: LedgerStore, other: LedgerStore
) -> None:
    """A call written by one process is read back whole by another, its rows in the call's order (not the rows'),
    with their current state; another tenant's look-up, or an unknown id, finds nothing alike."""
    await ledger.add(record("r2", tenant="alice"))
    await ledger.add(record("r1", tenant="alice", phase="downloaded", task_id="t1"))
    call = Call(id="call-1", keys=["r2", "r1"], tenant="alice", created_at=now())
    await ledger.add_call(call)
    found = await other.find_call("call-1", tenant="alice")
    assert found is not None
    read, rows = found
    assert read == call
    assert [(r.key, r.phase, r.tenant) for r in rows] == [("r2", "submitting", "alice"), ("r1", "downloaded", "alice")]
    assert await other.find_call("call-1", tenant="bob") is None
    assert await other.find_call("call-1") is None
    assert await other.find_call("nobody's", tenant="alice") is None


async def test_a_cancel_is_kept_once_and_only_for_its_tenant(ledger: LedgerStore, other: LedgerStore) -> None:
    """The first cancel's time is kept (a second changes nothing); another tenant cannot cancel (False, as for an
    unknown id); the rows are untouched."""
    await ledger.add(record("r1", tenant="alice"))
    await ledger.add_call(Call(id="call-1", keys=["r1"], tenant="alice"))
    first = now()
    assert not await other.cancel_call("call-1", first, tenant="bob")
    assert not await other.cancel_call("unknown", first, tenant="alice")
    found = await ledger.find_call("call-1", tenant="alice")
    assert found is not None and found[0].cancelled_at is None
    assert await other.cancel_call("call-1", first, tenant="alice")
    assert await other.cancel_call("call-1", first + timedelta(seconds=5), tenant="alice")
    found = await ledger.find_call("call-1", tenant="alice")
    assert found is not None and found[0].cancelled_at == first
    assert found[1][0].phase == "submitting"


# -- concurrency -----------------------------------------------------------------------------------


async def test_concurrent_writers_lose_nothing(ledger: LedgerStore, other: LedgerStore) -> None:
    """Two processes' worth of writers on one file: every row lands, none twice, every update kept."""

    async def write(ledger: LedgerStore, prefix: str) -> None:
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
