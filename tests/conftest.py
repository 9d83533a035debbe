"""Shared fixtures: one emulator served over real HTTP for the session, reset before every test; a throwaway
PostgreSQL cluster for the session, started by the first test that needs one."""

from __future__ import annotations

import importlib.util
import itertools
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import httpx
import pytest
from mcp import Client
from mcp_types import CallToolResult, TextContent
from pydantic import SecretStr
from tests.loopback import TLS

from nano_banana_mcp import collector
from nano_banana_mcp.config import Settings
from nano_banana_mcp.emulator import Emulator, serve_in_thread
from nano_banana_mcp.mcp_server import create_server

API_KEY = "monet_test_key"

# Python writes bytecode unless told not to, and an installed wheel is byte-compiled when it is installed; a machine
# may still say PYTHONDONTWRITEBYTECODE=1 (this one does). The ~150 processes the tests start (servers, the CLI) would
# then each compile the product's modules again from the editable checkout, and each worker would rewrite every test
# module's asserts again: 8 s of CPU and 5 s of the suite's wall time on 2 cores (alternating runs, pycs removed
# before each, 98.3/99.1 s against 93.8/93.1 s). Set here, it reaches the workers and every process they start.
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
sys.dont_write_bytecode = False

# The types of the session's helper fixtures, for the tests' annotations (imported under TYPE_CHECKING).
MakeSettings = Callable[[str | None, Path], Settings]
MakeUndecodablePng = Callable[[Path, tuple[int, int]], Path]
TextOf = Callable[[CallToolResult], str]
ServerEnv = Callable[[Path], dict[str, str]]


class MakePng(Protocol):
    def __call__(self, path: Path, size: tuple[int, int] = ...) -> Path: ...


class Hello(Protocol):
    def __call__(self, base: str, headers: dict[str, str] | None = None) -> httpx.Response: ...


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def emulator_server() -> Iterator[Emulator]:
    emulator = Emulator(api_key=API_KEY, task_seconds=0.3, stream_interval=0.05)
    with serve_in_thread(emulator):
        yield emulator


EMULATOR_TESTS = Path(__file__).parent / "emulator"


@pytest.fixture(autouse=True)
def emulator(emulator_server: Emulator, request: pytest.FixtureRequest) -> Iterator[Emulator]:
    """The session's emulator with no tasks, uploads, requests or faults, in strict idempotency (a key dedupes only
    on the endpoint it was first sent to). After every test of the product, no key has gone to a second endpoint:
    against an API that scopes keys per endpoint, that would have charged a task twice."""
    emulator_server.reset()
    yield emulator_server
    if not request.node.path.is_relative_to(EMULATOR_TESTS):  # the emulator's own tests do it on purpose
        assert emulator_server.keys_on_two_endpoints() == set(), "an idempotency key was sent to two endpoints"


@pytest.fixture
def api_key() -> str:
    return API_KEY


def _make_settings(base_url: str | None, root: Path) -> Settings:
    """Settings pointing at the emulator, with test-speed retries and polling, files under ``root``."""
    assert base_url is not None, "the emulator is not serving"
    return Settings(
        api_key=SecretStr(API_KEY),
        base_url=base_url,
        output_dir=root / "out",
        data_dir=root / "data",
        allowed_dirs=[root],
        request_timeout=5,
        retry_base_delay=0.01,
        retry_max_delay=0.05,
        max_retry_after=1,
        poll_interval=0.05,
        poll_max_interval=0.2,
    )


@pytest.fixture
def settings(tmp_path: Path, emulator: Emulator) -> Settings:
    return _make_settings(emulator.base_url, tmp_path)


@pytest.fixture(scope="session")
def make_settings() -> MakeSettings:
    """Settings for another API URL or folder: ``make_settings(base_url, root)``."""
    return _make_settings


ERAS = ("auto", "legacy")
"""The protocol eras the server speaks: 2026-07-28 (``auto``) and the 2025-11-25 handshake most hosts speak today."""


@pytest.hookimpl(optionalhook=True)  # without pytest-xdist (-p no:xdist) there is no such hook
def pytest_xdist_auto_num_workers(config: pytest.Config) -> int | None:
    """``-n auto`` (pyproject's addopts): two and a half workers per core, up to four more than cores. Most tests
    wait on a server, a subprocess or the emulator's task time rather than compute (the suite keeps 2 cores about
    half busy with 2 workers), so a core serves other workers while one waits. On 2 cores, 5 workers ran the suite in
    92-102 s where 4 took 101-112 s (alternating runs, one machine); 6 were no faster than 5, each worker's
    collection costing ~2.5 s of CPU. PYTEST_XDIST_AUTO_NUM_WORKERS, if set, still decides (xdist's own hook reads
    it)."""
    if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS") or config.option.numprocesses == "logical":
        return None
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    return min(cores * 5 // 2, cores + 4)


def pytest_configure(config: pytest.Config) -> None:
    collector.starting()  # while the test modules are imported: see pytest_collection_finish
    config.addinivalue_line(
        "markers",
        "both_eras: the test's subject is the protocol (transport, notifications, roots, resources, schemas, "
        "extensions): its `mode` runs in each era, not only 2026-07-28",
    )
    config.addinivalue_line(
        "markers",
        "slow: the test takes seconds without a fixture that says so (it waits on real time, or starts a process of "
        "its own): its module is handed out early, as those of SLOW_FIXTURES are",
    )


SLOW_FIXTURES = frozenset(
    {"command", "process_env", "offline_env", "database_url", "postgres", "s3_server", "serve_http", "host"}
)
"""Fixtures of tests that start a process or a server, or use the session's PostgreSQL or S3: they take the time."""


def pytest_collection_finish(session: pytest.Session) -> None:
    """What collection imported (the SDK, pydantic's schemas, the product, the test modules) lives as long as the
    worker: frozen, the collector never traverses it again, as the product does after its own start-up
    (nano_banana_mcp.collector)."""
    collector.started()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Modules with the most slow tests first (a fixture of :data:`SLOW_FIXTURES`, or ``@pytest.mark.slow``), then by
    size (pyproject's --no-loadscope-reorder keeps this order): with each module on one worker (loadscope), a long
    module handed out last keeps one worker busy at the end while the others wait (the browser's 11 tests, ~30 s, did
    under xdist's own order, by number of tests; so did a small module of tests that wait on real time, unmarked)."""
    slow: dict[str, int] = {}
    size: dict[str, int] = {}
    for item in items:
        module = item.nodeid.split("::")[0]
        size[module] = size.get(module, 0) + 1
        fixtures = getattr(item, "fixturenames", ())
        slow[module] = slow.get(module, 0) + bool(
            SLOW_FIXTURES.intersection(fixtures) or item.get_closest_marker("slow") is not None
        )
    rank = {module: (-slow[module], -size[module]) for module in size}
    items.sort(key=lambda item: rank[item.nodeid.split("::")[0]])  # stable: a module's own order is kept


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """``@pytest.mark.both_eras``: ``mode`` (and so ``mcp_client``) takes each era, as ``[auto]`` and ``[legacy]``."""
    if metafunc.definition.get_closest_marker("both_eras") is None:
        return
    if "mode" not in metafunc.fixturenames:
        raise pytest.UsageError(f"{metafunc.definition.nodeid}: both_eras needs `mode` or `mcp_client`")
    metafunc.parametrize("mode", ERAS)


@pytest.fixture
def mode() -> str:
    """The protocol era of ``mcp_client``: 2026-07-28. A test whose subject is the protocol itself is marked
    ``@pytest.mark.both_eras`` and runs in the 2025-11-25 era too; the rest test the product once."""
    return "auto"


@pytest.fixture
async def mcp_client(settings: Settings, mode: str) -> AsyncIterator[Client]:
    """An SDK client connected in memory to a server built from `settings`."""
    async with Client(create_server(settings), mode=mode, read_timeout_seconds=30) as client:
        yield client


COMMAND = str(Path(sys.executable).with_name("nano-banana-mcp"))


@pytest.fixture(scope="session")
def command() -> str:
    """The installed console script, as a host would start it."""
    return COMMAND


@pytest.fixture(scope="session")
def server_env(emulator_server: Emulator) -> ServerEnv:
    """``server_env(root)``: the environment of a real nano-banana-mcp process talking to the session's emulator,
    with test-speed timings, its home and files under ``root`` (for a process shared by a module or the session)."""

    def env(root: Path) -> dict[str, str]:
        return {
            "PATH": os.environ.get("PATH", ""),
            "HOME": str(root),
            "MONET_API_KEY": API_KEY,
            "MONET_BASE_URL": emulator_server.base_url or "",
            "NANO_BANANA_OUTPUT_DIR": str(root / "out"),
            "NANO_BANANA_DATA_DIR": str(root / "data"),
            "NANO_BANANA_RETRY_BASE_DELAY": "0.01",
            "NANO_BANANA_POLL_INTERVAL": "0.05",
            "NANO_BANANA_POLL_MAX_INTERVAL": "0.2",
            "NANO_BANANA_SWEEP_INTERVAL": "0.2",
        }

    return env


@pytest.fixture
def process_env(tmp_path: Path, emulator: Emulator, server_env: ServerEnv) -> dict[str, str]:
    """Environment for a real nano-banana-mcp process talking to the emulator (reset for this test), with test-speed
    timings, its files under the test's ``tmp_path``."""
    return server_env(tmp_path)


@pytest.fixture(scope="session")
def png() -> MakePng:
    """Write a small PNG: ``png(path, size=(64, 48))`` makes its folder and returns the path."""

    def write(path: Path, size: tuple[int, int] = (64, 48)) -> Path:
        from PIL import Image  # noqa: PLC0415 - only the tests that make images pay for Pillow

        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", size, (10, 120, 200)).save(path, "PNG")
        return path

    return write


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


@pytest.fixture(scope="session")
def undecodable_png() -> MakeUndecodablePng:
    """Write a PNG whose header says ``size`` (1-bit grey) but whose pixel data is not zlib at all:
    ``undecodable_png(path, size)``. Opening it reads its size; decoding it fails (OSError, "broken data stream"), so
    code that succeeds on it, or refuses it for its size, never decoded its pixels."""

    def write(path: Path, size: tuple[int, int]) -> Path:
        header = struct.pack(">IIBBBBB", *size, 1, 0, 0, 0, 0)
        body = _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", b"\xff" * 64) + _png_chunk(b"IEND", b"")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"\x89PNG\r\n\x1a\n" + body)
        return path

    return write


@pytest.fixture(scope="session")
def text_of() -> TextOf:
    """The text blocks of a tool result, joined: what the agent reads."""

    def join(result: CallToolResult) -> str:
        return "\n".join(c.text for c in result.content if isinstance(c, TextContent))

    return join


# -- MCP over plain HTTP -------------------------------------------------------------------------------------


_HELLO = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
}
_MCP_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


def _initialize(base: str, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(f"{base}/mcp", json=_HELLO, headers=_MCP_HEADERS | (headers or {}), timeout=20, verify=TLS)


@pytest.fixture(scope="session")
def hello() -> Hello:
    """``hello(base, headers)``: an MCP initialize request to ``{base}/mcp`` over plain HTTP, as any client
    sends first (to see how the transport answers: 200, 401, 421, 403)."""
    return _initialize


# -- PostgreSQL --------------------------------------------------------------------------------------------------


class PostgresCluster:
    """A throwaway PostgreSQL cluster: initdb'd in a temporary folder, served on a free loopback port, trusted.

    As root (CI), initdb and the server run as the ``postgres`` user (``nobody`` if there is none), which owns the
    folder: PostgreSQL refuses to run as root.
    """

    USER = "nano"

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.root = Path(tempfile.mkdtemp(prefix="nb-pg-"))
        self.data = self.root / "data"
        self.port = 0
        self._as: list[str] = []
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            import pwd  # noqa: PLC0415 - POSIX only, as root

            user = next(u for u in ("postgres", "nobody") if _has_user(u))
            os.chown(self.root, pwd.getpwnam(user).pw_uid, -1)
            self._as = ["runuser", "-u", user, "--"]
        self._databases = itertools.count(1)
        self._admin: Any = None

    def _run(self, tool: str, *args: str) -> None:
        done = subprocess.run(
            [*self._as, str(self.bin_dir / tool), *args], capture_output=True, text=True, timeout=60, check=False
        )
        if done.returncode:
            log = self.root / "log"
            tail = log.read_text(errors="replace")[-2000:] if log.is_file() else ""
            raise RuntimeError(f"{tool} {' '.join(args)} failed ({done.returncode}): {done.stderr}{tail}")

    def start(self) -> None:
        self._run("initdb", "-D", str(self.data), "-U", self.USER, "-A", "trust", "-E", "UTF8", "--no-locale", "-N")
        for attempt in range(3):  # a free port may be taken between the check and the start
            self.port = _free_port()
            options = (
                f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root} -c fsync=off -c full_page_writes=off "
                "-c synchronous_commit=off -c max_connections=200"
            )
            try:
                self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "log"), "-w", "-o", options, "start")
                break
            except RuntimeError:
                if attempt == 2:
                    raise
        import psycopg  # noqa: PLC0415 - only the tests that use PostgreSQL need the driver

        self._admin = psycopg.connect(self.url("postgres"), autocommit=True)

    def stop(self) -> None:
        if self._admin is not None:
            self._admin.close()
        if self.port:
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str) -> str:
        return f"postgresql://{self.USER}@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """A new, empty database: its URL."""
        name = f"t{next(self._databases)}"
        self._admin.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def cut_off(self, url: str, owner: str) -> None:
        """End the database session holding the ledger owner ``owner``'s lock, as a crashed host or a cut network
        would (``pg_terminate_backend``), and return once it has ended; the process it belongs to runs on."""
        [(pid,)] = self.query(
            url,
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND objsubid = 1 "
            "AND ((classid::bigint << 32) | objid::bigint) = hashtextextended(%s, 0)",  # a bigint key's two halves
            (owner,),
        )
        assert self.query(url, "SELECT pg_terminate_backend(%s)", (pid,)) == [(True,)]
        self.wait_ended(url, pid)

    def wait_ended(self, url: str, pid: int) -> None:
        """Until the session of server pid ``pid`` is gone (a backend lets go of its advisory locks before it leaves
        pg_stat_activity)."""
        deadline = time.monotonic() + 60  # only against a hang
        while self.query(url, "SELECT 1 FROM pg_stat_activity WHERE pid = %s", (pid,)):
            assert time.monotonic() < deadline, f"PostgreSQL kept session {pid} after it was ended"
            time.sleep(0.01)

    def listeners(self, url: str) -> set[int]:
        """The server pids of the sessions on the database at ``url`` that have run a LISTEN, and finished it."""
        rows = self.query(
            url,
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND query LIKE %s AND state = 'idle'",
            ("LISTEN %",),
        )
        return {pid for (pid,) in rows}

    def cut_listeners(self, url: str) -> set[int]:
        """End the sessions that listen on the database at ``url``, as a cut network would; their pids."""
        pids = self.listeners(url)
        for pid in pids:
            assert self.query(url, "SELECT pg_terminate_backend(%s)", (pid,)) == [(True,)]
        for pid in pids:
            self.wait_ended(url, pid)
        return pids

    def query(self, url: str, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Run one statement on the database at ``url`` (a connection of its own); its rows, if any."""
        import psycopg  # noqa: PLC0415

        with psycopg.connect(url, autocommit=True) as conn:
            cursor = conn.execute(query, params)
            return cursor.fetchall() if cursor.description is not None else []


def _has_user(name: str) -> bool:
    import pwd  # noqa: PLC0415

    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _postgres_bin() -> Path | None:
    """Where initdb and pg_ctl are: Debian's newest /usr/lib/postgresql/<version>/bin, else the PATH."""
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parts[-3]))
    if versions:
        return versions[-1].parent
    found = shutil.which("pg_ctl")
    return Path(found).parent if found and shutil.which("initdb") else None


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresCluster]:
    """One throwaway cluster for the session. Skipped without the binaries, except under CI, where that fails."""
    bin_dir = _postgres_bin()
    if bin_dir is None or importlib.util.find_spec("psycopg") is None:
        missing = "PostgreSQL's initdb and pg_ctl" if bin_dir is None else "psycopg"
        reason = (
            f"{missing} not found: install Debian's postgresql package (apt-get install -y postgresql) and the team "
            "extra (pip install -e '.[test]')"
        )
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; .ci/run installs both")
        pytest.skip(reason)
    cluster = PostgresCluster(bin_dir)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def database_url(postgres: PostgresCluster) -> str:
    """The URL of a new, empty database on the session's cluster."""
    return postgres.new_database()


# -- S3 ----------------------------------------------------------------------------------------------------------


class S3Server:
    """moto's standalone S3 server (``moto[server]``) on a free loopback port, as any S3-compatible service is
    reached: through the standard AWS variables (``env``)."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.env = {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": "AKIATESTNANOBANANA00",
            "AWS_SECRET_ACCESS_KEY": "test-secret-access-key-never-shown",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
        self._buckets = itertools.count(1)
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self._process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60  # only against a hang
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.1):
                    return
            except OSError:
                if self._process.poll() is not None:
                    raise RuntimeError(f"moto's S3 server exited ({self._process.returncode})") from None
                time.sleep(0.05)
        raise RuntimeError("moto's S3 server did not start within 60 s")

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(timeout=10)

    def client(self) -> Any:
        import boto3  # noqa: PLC0415 - only the tests that use object storage need it

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=self.env["AWS_SECRET_ACCESS_KEY"],
            region_name=self.env["AWS_DEFAULT_REGION"],
        )

    def new_bucket(self) -> str:
        """A new, empty bucket: its name."""
        name = f"nano-banana-test-{next(self._buckets)}"
        self.client().create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str) -> list[str]:
        """Every object key in ``bucket``."""
        listed = self.client().list_objects_v2(Bucket=bucket)
        return sorted(item["Key"] for item in listed.get("Contents", []))


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    """One S3 API for the session. Skipped without moto, except under CI, where that fails."""
    if importlib.util.find_spec("moto") is None or importlib.util.find_spec("boto3") is None:
        reason = "moto[server] and boto3 are not installed: pip install -e '.[test]'"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    server = S3Server()
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def storage_url(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> str:
    """``s3://<a new bucket>/images``, with the AWS variables that reach the session's S3 server set in this
    process's environment (and in ``s3_server.env`` for processes the test starts)."""
    for name, value in s3_server.env.items():
        monkeypatch.setenv(name, value)
    return f"s3://{s3_server.new_bucket()}/images"
