"""What the team benchmarks start beside the emulator: a throwaway PostgreSQL cluster, moto's S3 server, and
`nano-banana-mcp serve --http` replicas on ports of their own choosing.

The PostgreSQL part follows tests/conftest.py's PostgresCluster (benchmarks do not import from tests/): initdb
into a temporary folder, served on a free loopback port with trust auth; as root, initdb and the server run as
the ``postgres`` user (``nobody`` if there is none), since PostgreSQL refuses to run as root.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from _common import COMMAND


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _postgres_bin() -> Path:
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), key=lambda p: int(p.parts[-3]))
    if versions:
        return versions[-1].parent
    found = shutil.which("pg_ctl")
    if found and shutil.which("initdb"):
        return Path(found).parent
    raise SystemExit("PostgreSQL's initdb and pg_ctl not found: apt-get install -y postgresql")


def _has_user(name: str) -> bool:
    import pwd  # noqa: PLC0415 - POSIX only

    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


class Postgres:
    """A throwaway cluster: ``start()``, ``new_database(name)`` (its URL), ``query(url, sql)``, ``stop()``."""

    USER = "nano"

    def __init__(self) -> None:
        self.bin_dir = _postgres_bin()
        self.root = Path(tempfile.mkdtemp(prefix="nb-bench-pg-"))
        self.data = self.root / "data"
        self.port = 0
        self._as: list[str] = []
        if hasattr(os, "geteuid") and os.geteuid() == 0:
            import pwd  # noqa: PLC0415

            user = next(u for u in ("postgres", "nobody") if _has_user(u))
            os.chown(self.root, pwd.getpwnam(user).pw_uid, -1)
            self._as = ["runuser", "-u", user, "--"]

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
            self.port = free_port()
            options = (
                f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root} -c fsync=off -c full_page_writes=off "
                "-c synchronous_commit=off -c max_connections=200"
            )
            try:
                self._run("pg_ctl", "-D", str(self.data), "-l", str(self.root / "log"), "-w", "-o", options, "start")
            except RuntimeError:
                if attempt == 2:
                    raise
            else:
                return

    def stop(self) -> None:
        if self.port:
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str) -> str:
        return f"postgresql://{self.USER}@127.0.0.1:{self.port}/{database}"

    def new_database(self, name: str) -> str:
        self.query(self.url("postgres"), f"CREATE DATABASE {name}")
        return self.url(name)

    @staticmethod
    def query(url: str, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        import psycopg  # noqa: PLC0415 - the team extra

        with psycopg.connect(url, autocommit=True) as conn:
            cursor = conn.execute(sql, params)
            return cursor.fetchall() if cursor.description is not None else []


class S3:
    """moto's standalone S3 server on a free loopback port, reached through the standard AWS variables (``env``)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.env = {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": "AKIABENCHNANOBANANA0",
            "AWS_SECRET_ACCESS_KEY": "bench-secret-access-key",
            "AWS_DEFAULT_REGION": "us-east-1",
        }
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self._process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.1):
                    return
            except OSError:
                if self._process.poll() is not None:
                    raise RuntimeError(f"moto's S3 server exited ({self._process.returncode})") from None
                time.sleep(0.05)
        raise RuntimeError("moto's S3 server did not start within 30 s")

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(timeout=10)

    def client(self) -> Any:
        import boto3  # noqa: PLC0415 - the team extra

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=self.env["AWS_SECRET_ACCESS_KEY"],
            region_name=self.env["AWS_DEFAULT_REGION"],
        )

    def keys(self, bucket: str) -> set[str]:
        keys: set[str] = set()
        for page in self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket):
            keys.update(item["Key"] for item in page.get("Contents", []))
        return keys


_SERVED_AT = re.compile(r"http://127\.0\.0\.1:(\d+)/mcp")


@dataclass
class Replica:
    """One `nano-banana-mcp serve --http --port 0` process; its stderr in ``log``, its URL once it has printed it."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path
    base: str = ""
    killed_at: float | None = field(default=None)

    @property
    def url(self) -> str:
        return f"{self.base}/mcp"

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:] if self.log.is_file() else ""

    def kill(self) -> None:
        """SIGKILL, as a crashed machine: no clean-up runs."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.killed_at = time.monotonic()
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()


def start_replica(name: str, env: dict[str, str], home: Path, command: str = COMMAND) -> Replica:
    """Spawn a replica with its own data and output folders under ``home`` (as a machine of its own has);
    ``command``: another checkout's ``nano-banana-mcp`` (a before/after)."""
    home.mkdir(parents=True, exist_ok=True)
    log = home / "stderr.log"
    with log.open("wb") as err:
        process = subprocess.Popen(
            [command, "serve", "--http", "--host", "127.0.0.1", "--port", "0"],
            env=env | {"NANO_BANANA_DATA_DIR": str(home / "data"), "NANO_BANANA_OUTPUT_DIR": str(home / "out")},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    return Replica(name, process, log)


def wait_ready(replica: Replica, timeout: float = 60.0) -> None:
    """Until the replica has printed its URL and ``GET /healthz`` answers 200."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if replica.process.poll() is not None:
            raise SystemExit(f"replica {replica.name} exited ({replica.process.returncode}):\n{replica.log_tail()}")
        if not replica.base and (found := _SERVED_AT.search(replica.log_tail())):
            replica.base = f"http://127.0.0.1:{found.group(1)}"
        if replica.base:
            try:
                if httpx.get(f"{replica.base}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
        time.sleep(0.05)
    raise SystemExit(f"replica {replica.name} not ready within {timeout} s:\n{replica.log_tail()}")
