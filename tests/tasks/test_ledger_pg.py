"""What only the PostgreSQL ledger has: a URL (and its password, never shown), a schema that replicas starting together
migrate once, owners that are database sessions: a replica whose connection is cut loses its rows to the others
within seconds, takes a new identity, and is refused any write on a row that changed hands; and finishes announced
to every replica: each hears once of every row another finished, even after its listening connection was cut."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import anyio
import pytest
from anyio.streams.memory import MemoryObjectReceiveStream
from mcp import Client
from pydantic import SecretStr

from nano_banana_mcp.catalog import GenerateRequest
from nano_banana_mcp.config import Settings
from nano_banana_mcp.errors import ConfigError, DatabaseUnavailable
from nano_banana_mcp.mcp_server import create_server
from nano_banana_mcp.tasks import RowTaken, TaskRecord
from nano_banana_mcp.tasks.ledger_pg import SCHEMA_VERSION, PostgresLedger

if TYPE_CHECKING:
    from tests.conftest import PostgresCluster, TextOf

pytestmark = pytest.mark.anyio

API = "https://monet.example"
PASSWORD = "s3cret-Pa55word"  # must never appear in a message


def record(key: str, **changes: Any) -> TaskRecord:
    return TaskRecord(key=key, request=GenerateRequest(prompt=f"prompt {key}"), **changes)


def pg_ledger(url: str) -> PostgresLedger:
    return PostgresLedger(SecretStr(url), api_scope=API)


@pytest.fixture
async def replica_a(database_url: str) -> AsyncIterator[PostgresLedger]:
    ledger = await pg_ledger(database_url).open()
    yield ledger
    await ledger.close()


@pytest.fixture
async def replica_b(database_url: str, replica_a: PostgresLedger) -> AsyncIterator[PostgresLedger]:
    ledger = await pg_ledger(database_url).open()
    yield ledger
    await ledger.close()


@pytest.fixture
async def replica_c(database_url: str, replica_b: PostgresLedger) -> AsyncIterator[PostgresLedger]:
    ledger = await pg_ledger(database_url).open()
    yield ledger
    await ledger.close()


# -- replicas ----------------------------------------------------------------------------------------------------


async def test_a_cut_off_replicas_rows_are_taken_within_seconds(
    postgres: PostgresCluster, database_url: str, replica_a: PostgresLedger, replica_b: PostgresLedger
) -> None:
    """Replica A's session ends (its backend terminated): the moment it has, B sees A's rows free (no lease to wait
    out) and claims them all."""
    keys = [f"k{i}" for i in range(5)]
    for key in keys:
        await replica_a.add(record(key))
    assert await replica_b.claimable() == []
    assert not await replica_b.claim("k0")
    postgres.cut_off(database_url, replica_a.owner)  # returns once the session has ended
    assert await replica_b.claimable() == keys
    assert [await replica_b.claim(key) for key in keys] == [True] * 5


async def test_a_replica_that_lost_its_session_is_refused_rows_taken_meanwhile(
    postgres: PostgresCluster, database_url: str, replica_a: PostgresLedger, replica_b: PostgresLedger
) -> None:
    """A replica whose session was cut while it worked a row: once B holds the row, A's next write of it is refused;
    A goes on under a new identity, and what nobody took is still its to resume."""
    working, untouched = record("working"), record("untouched")
    await replica_a.add(working)
    await replica_a.add(untouched)
    old_identity = replica_a.owner
    postgres.cut_off(database_url, old_identity)
    with anyio.fail_after(60):  # only against a hang
        while not await replica_b.claim("working"):
            await anyio.sleep(0.01)
    working.phase, working.task_id = "created", "task_1"
    with pytest.raises(RowTaken):
        await replica_a.save(working)
    assert await replica_a.claimable() == ["untouched"]  # its lost rows that nobody took are its to resume
    assert replica_a.owner != old_identity
    assert await replica_a.claim("untouched")
    assert not await replica_b.claim("untouched")
    await replica_a.save(untouched)
    got = await replica_b.get("working")
    assert got is not None
    assert got.phase == "submitting"


async def test_owners_are_sessions_holding_one_advisory_lock_each(
    postgres: PostgresCluster, database_url: str, replica_a: PostgresLedger, replica_b: PostgresLedger
) -> None:
    """Each replica holds exactly one session-level advisory lock, on a connection apart from its pool."""
    rows = postgres.query(
        database_url,
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1 "
        "AND ((classid::bigint << 32) | objid::bigint) = ANY(ARRAY[hashtextextended(%s, 0), hashtextextended(%s, 0)])",
        (replica_a.owner, replica_b.owner),
    )
    assert rows == [(2,)]
    await replica_a.close()
    assert postgres.query(
        database_url,
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objsubid = 1 "
        "AND ((classid::bigint << 32) | objid::bigint) = hashtextextended(%s, 0)",
        (replica_a.owner,),
    ) == [(0,)]


# -- finishes told to the other replicas --------------------------------------------------------------------------


@asynccontextmanager
async def watching(
    postgres: PostgresCluster, url: str, ledger: PostgresLedger
) -> AsyncIterator[MemoryObjectReceiveStream[TaskRecord]]:
    """``ledger.watch_finished`` running, its LISTEN done: what it tells, in order."""
    send, receive = anyio.create_memory_object_stream[TaskRecord](100)
    before = postgres.listeners(url)
    async with anyio.create_task_group() as tg:
        tg.start_soon(ledger.watch_finished, send.send)
        with anyio.fail_after(60):  # only against a hang
            while not postgres.listeners(url) - before:
                await anyio.sleep(0.01)
        yield receive
        tg.cancel_scope.cancel()


async def finish(ledger: PostgresLedger, key: str, **changes: object) -> TaskRecord:
    """Add a row and write it to its end, through a step that does not finish it."""
    rec = record(key, **changes)
    await ledger.add(rec)
    rec.phase, rec.task_id = "created", f"task_{key}"
    await ledger.save(rec)
    rec.phase = "downloaded"
    await ledger.save(rec)
    return rec


async def next_told(told: MemoryObjectReceiveStream[TaskRecord]) -> TaskRecord:
    with anyio.fail_after(60):  # only against a hang
        return await told.receive()


async def test_a_row_another_replica_finishes_is_told_once_with_its_tenant(
    postgres: PostgresCluster, database_url: str, replica_a: PostgresLedger, replica_b: PostgresLedger
) -> None:
    """B finishes alice's row: A is told once (not of B's earlier writes), with the row as written."""
    async with watching(postgres, database_url, replica_a) as told:
        await finish(replica_b, "k1", tenant="alice")
        await finish(replica_b, "k2")
        first, second = await next_told(told), await next_told(told)
    assert (first.key, first.tenant, first.phase, first.task_id, first.status) == (
        "k1",
        "alice",
        "downloaded",
        "task_k1",
        "success",
    )
    assert second.key == "k2"  # k1 once, then k2: nothing else in between


async def test_a_row_a_replica_finishes_itself_is_not_told_to_it(
    postgres: PostgresCluster, database_url: str, replica_a: PostgresLedger, replica_b: PostgresLedger
) -> None:
    """A's own finish is told by its runner, not by its watch: the next it hears of is B's."""
    async with watching(postgres, database_url, replica_a) as told:
        await finish(replica_a, "mine")
        await finish(replica_b, "theirs")
        assert (await next_told(told)).key == "theirs"


async def test_a_refused_write_announces_nothing(
    postgres: PostgresCluster,
    database_url: str,
    replica_a: PostgresLedger,
    replica_b: PostgresLedger,
    replica_c: PostgresLedger,
) -> None:
    """A, cut off, writes the end of a row that B took over and finished meanwhile: A is refused, and C, watching,
    hears of the row once (B's finish), then of the next."""
    working = record("working")
    await replica_a.add(working)
    postgres.cut_off(database_url, replica_a.owner)
    with anyio.fail_after(60):  # only against a hang
        while not await replica_b.claim("working"):
            await anyio.sleep(0.01)
    async with watching(postgres, database_url, replica_c) as told:
        taken = await replica_b.get("working")
        assert taken is not None
        taken.phase = "failed"
        await replica_b.save(taken)
        assert (await next_told(told)).key == "working"
        working.phase = "downloaded"
        with pytest.raises(RowTaken):
            await replica_a.save(working)
        await finish(replica_b, "next")
        assert (await next_told(told)).key == "next"


async def test_finishes_are_told_again_once_the_listening_connection_is_back(
    postgres: PostgresCluster,
    database_url: str,
    replica_a: PostgresLedger,
    replica_b: PostgresLedger,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A's listening session is ended (a cut network, a restarted database): A listens again on a new connection,
    with one warning, and hears of B's finishes as before."""
    async with watching(postgres, database_url, replica_a) as told:
        await finish(replica_b, "before")
        assert (await next_told(told)).key == "before"
        with caplog.at_level(logging.WARNING, logger="nano_banana_mcp"):
            cut = postgres.cut_listeners(database_url)
            assert len(cut) == 1
            with anyio.fail_after(60):  # only against a hang
                while not postgres.listeners(database_url) - cut:
                    await anyio.sleep(0.01)
        await finish(replica_b, "after")
        assert (await next_told(told)).key == "after"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "cannot listen" in warnings[0]


# -- the schema --------------------------------------------------------------------------------------------------


async def test_replicas_starting_together_migrate_once(postgres: PostgresCluster, database_url: str) -> None:
    """Six replicas opening an empty database at once: one migrates, every one starts, each version is applied once."""
    ledgers = [pg_ledger(database_url) for _ in range(6)]
    async with anyio.create_task_group() as tg:
        for ledger in ledgers:
            tg.start_soon(ledger.open)
    try:
        assert postgres.query(database_url, "SELECT version FROM schema_version ORDER BY version") == [
            (v,) for v in range(1, SCHEMA_VERSION + 1)
        ]
        await ledgers[0].add(record("k1"))
        assert [await ledger.count() for ledger in ledgers] == [1] * 6
    finally:
        for ledger in ledgers:
            await ledger.close()


async def test_a_newer_schema_is_refused_with_advice(postgres: PostgresCluster, database_url: str) -> None:
    """A database migrated by a newer version is not touched; the error names it and says what to do."""
    await (await pg_ledger(database_url).open()).close()
    postgres.query(database_url, "INSERT INTO schema_version (version) VALUES (%s)", (SCHEMA_VERSION + 1,))
    with pytest.raises(ConfigError, match="newer nano-banana-mcp") as info:
        await pg_ledger(database_url).open()
    assert "NANO_BANANA_DATABASE_URL" in str(info.value)
    assert postgres.query(database_url, "SELECT max(version) FROM schema_version") == [(SCHEMA_VERSION + 1,)]


async def test_a_nul_character_from_the_api_is_stored(replica_a: PostgresLedger) -> None:
    """PostgreSQL text holds no NUL: a prompt keeps it (as JSON), an API's error text has it replaced, nothing fails."""
    rec = TaskRecord(key="k1", request=GenerateRequest(prompt="a\x00b"))
    await replica_a.add(rec)
    rec.phase, rec.error = "failed", "bad\x00thing"
    await replica_a.save(rec)
    got = await replica_a.get("k1")
    assert got is not None
    assert (got.request.prompt, got.error) == ("a\x00b", "bad\ufffdthing")


# -- the URL -----------------------------------------------------------------------------------------------------


def closed_port() -> int:
    import socket  # noqa: PLC0415

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize(
    "url",
    [
        pytest.param(f"postgresql://nano:{PASSWORD}@127.0.0.1:{closed_port()}/ledger", id="unreachable"),
        pytest.param(f"postgresql://nano:{PASSWORD}%zz@127.0.0.1/ledger", id="unreadable"),
    ],
)
async def test_a_database_that_cannot_be_used_is_named_without_its_password(url: str) -> None:
    """The error names the database and the setting; the password is in no message."""
    with pytest.raises(ConfigError) as info:
        await pg_ledger(url).open()
    message = str(info.value)
    assert "NANO_BANANA_DATABASE_URL" in message
    assert PASSWORD not in message
    assert "s3cret" not in message


async def test_a_missing_database_is_named(postgres: PostgresCluster) -> None:
    """A database that does not exist: the error names it (user@host:port/dbname) and says what to check."""
    url = postgres.url("no_such_database")
    with pytest.raises(ConfigError) as info:
        await pg_ledger(url).open()
    assert f"nano@127.0.0.1:{postgres.port}/no_such_database" in str(info.value)
    assert "does not exist" in str(info.value)


async def test_a_version_1_database_gets_tenants_and_keeps_its_rows_and_uploads(
    postgres: PostgresCluster, database_url: str
) -> None:
    """Migration 2 on a database of version 1: its rows and uploads belong to the tenant ``default``, and the
    upload cache is keyed by tenant from then on."""
    from nano_banana_mcp.tasks.ledger_pg import MIGRATIONS  # noqa: PLC0415

    postgres.query(database_url, MIGRATIONS[0])
    postgres.query(
        database_url,
        "CREATE TABLE schema_version (version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())",
    )
    postgres.query(database_url, "INSERT INTO schema_version (version) VALUES (1)")
    postgres.query(
        database_url,
        "INSERT INTO tasks (key, task_id, request, phase, status, api_scope, created_at, updated_at) "
        "VALUES ('k1', 't1', %s, 'downloaded', 'success', %s, now(), now())",
        (GenerateRequest(prompt="old").model_dump_json(), API),
    )
    postgres.query(
        database_url,
        "INSERT INTO uploads (sha256, scope, url, expires_at) VALUES ('abc', %s, 'https://f/abc', now() + '1 day')",
        (API,),
    )
    ledger = await pg_ledger(database_url).open()
    try:
        found = await ledger.find("t1")
        assert found is not None and found.tenant == "default"
        assert await ledger.find("t1", tenant="alice") is None
        assert (await ledger.cached_upload("abc") or ("",))[0] == "https://f/abc"
        assert await ledger.cached_upload("abc", tenant="alice") is None
    finally:
        await ledger.close()
    assert postgres.query(database_url, "SELECT max(version) FROM schema_version") == [(SCHEMA_VERSION,)]


async def test_a_database_failure_tells_tenants_database_unavailable_and_the_operator_why(
    postgres: PostgresCluster, database_url: str, settings: Settings, text_of: TextOf, caplog: pytest.LogCaptureFixture
) -> None:
    """The database fails while serving (here its table is gone for a moment): the tenant reads "database
    unavailable", never the database's user@host:port/dbname nor its password; the operator's log names the database,
    without the password."""
    caplog.set_level(logging.INFO)
    where = database_url.removeprefix("postgresql://")  # nano@127.0.0.1:port/tN
    with_password = database_url.replace("://nano@", f"://nano:{PASSWORD}@")
    served = settings.model_copy(update={"database_url": SecretStr(with_password)})
    async with Client(create_server(served), read_timeout_seconds=30) as client:
        await client.call_tool("generate_image", {"prompt": "kept in PostgreSQL"})
        postgres.query(database_url, "ALTER TABLE tasks RENAME TO tasks_away")
        try:
            listed = await client.call_tool("list_tasks", {})
        finally:
            postgres.query(database_url, "ALTER TABLE tasks_away RENAME TO tasks")
    told = text_of(listed)
    assert listed.is_error
    assert "database unavailable" in told, told
    assert where not in told and "127.0.0.1" not in told and PASSWORD not in told
    assert where in caplog.text
    assert PASSWORD not in caplog.text


async def test_a_call_while_the_database_is_down_is_answered_within_seconds(
    postgres: PostgresCluster, database_url: str, replica_a: PostgresLedger
) -> None:
    """The database stops taking connections (every session ended, none let in): each kind of call a tool makes
    (a look-up, a new row, a list, a health check) fails within the issue's 5 s, saying the database is unavailable
    (the log names it and the setting), instead of waiting out the pool's 30 s."""
    await replica_a.add(record("before"))
    database = database_url.rsplit("/", 1)[1]
    admin = postgres.url("postgres")
    postgres.query(admin, f"ALTER DATABASE {database} WITH ALLOW_CONNECTIONS false")
    try:
        postgres.query(admin, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (database,))
        calls = {
            "find": lambda: replica_a.find("before"),
            "add": lambda: replica_a.add(record("after")),
            "recent": lambda: replica_a.recent(10),
            "ping": replica_a.ping,
        }
        answers: dict[str, tuple[float, BaseException | None]] = {}

        async def answer(name: str) -> None:
            started = anyio.current_time()
            try:
                await calls[name]()
            except DatabaseUnavailable as err:
                answers[name] = (anyio.current_time() - started, err)
            else:
                answers[name] = (anyio.current_time() - started, None)

        async with anyio.create_task_group() as tg:  # at once, as a server's concurrent tool calls would be
            for name in calls:
                tg.start_soon(answer, name)
        for name, (took, err) in answers.items():
            assert err is not None, f"{name} did not fail while the database was down"
            assert took < 5, name  # the promise: a clear answer within 5 s
            assert "database unavailable" in str(err)
    finally:
        postgres.query(admin, f"ALTER DATABASE {database} WITH ALLOW_CONNECTIONS true")
