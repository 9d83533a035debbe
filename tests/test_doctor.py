"""`nano-banana-mcp doctor`: the real console script against the emulator over HTTP, in a temporary home.

Each test runs the command as a user would and reads its table or its `--json`; the emulator counts what it was
asked, so a doctor that created a task, or asked more than once, would show.
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

from nano_banana_mcp import install
from nano_banana_mcp.catalog import GenerateRequest
from nano_banana_mcp.emulator import Emulator
from nano_banana_mcp.tasks import LEDGER_FILE, Ledger, TaskRecord
from nano_banana_mcp.tasks.create_path import CreatePath

BASE_CHECKS = ["key", "api", "data folder", "output folder", "ledger", "create path"]
HOST_CHECKS = [f"host {host}" for host in install.HOSTS]


def doctor(command: str, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([command, "doctor", *args], env=env, capture_output=True, text=True, timeout=120, check=False)


def rows(proc: subprocess.CompletedProcess[str]) -> dict[str, dict[str, Any]]:
    """The `--json` report by check name (and every row has exactly the three documented fields)."""
    report = json.loads(proc.stdout)
    assert all(set(row) == {"check", "status", "detail"} for row in report), report
    return {row["check"]: row for row in report}


def api_requests(emulator: Emulator) -> list[tuple[str, str]]:
    return [(r.method, r.path) for r in emulator.requests if r.path.startswith("/api/")]


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_working_setup_passes_with_one_free_read(
    emulator: Emulator, process_env: dict[str, str], command: str, api_key: str
) -> None:
    """Every check passes, the report is JSON with a row per check, and the API was asked exactly one list read:
    no task was created (nothing was paid)."""
    proc = doctor(command, process_env, "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = rows(proc)
    assert list(report) == BASE_CHECKS + HOST_CHECKS
    assert {row["status"] for row in report.values()} == {"ok"}, report
    assert "ms" in report["api"]["detail"]
    assert emulator.creates == 0
    assert api_requests(emulator) == [("GET", "/api/v1/tasks/list")]
    assert api_key not in proc.stdout + proc.stderr


def test_the_table_says_what_each_check_found(emulator: Emulator, process_env: dict[str, str], command: str) -> None:
    """Without --json, one line per check (name, status, detail) and a last line that sums it up."""
    proc = doctor(command, process_env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split() == ["CHECK", "STATUS", "DETAIL"]
    assert [line.split("  ")[0].strip() for line in lines[1:-1]] == BASE_CHECKS + HOST_CHECKS
    assert all(" ok " in line for line in lines[1:-1])
    assert lines[-1] == f"All {len(BASE_CHECKS + HOST_CHECKS)} checks passed."


def test_a_refused_key_fails_and_is_never_shown(emulator: Emulator, process_env: dict[str, str], command: str) -> None:
    """A key the API refuses (401) fails the key row with what to do; the API itself answered; the key appears
    nowhere."""
    wrong = "monet_not_the_right_key_42"
    proc = doctor(command, process_env | {"MONET_API_KEY": wrong}, "--json")
    assert proc.returncode == 1
    report = rows(proc)
    assert report["key"]["status"] == "fail"
    assert "refused the API key" in report["key"]["detail"]
    assert "MONET_API_KEY" in report["key"]["detail"]
    assert report["api"]["status"] == "ok"
    assert wrong not in proc.stdout + proc.stderr
    assert emulator.creates == 0


def test_no_key_says_how_to_get_one(emulator: Emulator, process_env: dict[str, str], command: str) -> None:
    env = {k: v for k, v in process_env.items() if k != "MONET_API_KEY"}
    proc = doctor(command, env, "--json")
    assert proc.returncode == 1
    key = rows(proc)["key"]
    assert key["status"] == "fail"
    assert "https://monet.vision" in key["detail"]
    assert "--offline" in key["detail"]
    assert api_requests(emulator) == []


def test_an_unreachable_api_fails_at_once(process_env: dict[str, str], command: str) -> None:
    """A closed port fails the api row on the first try. The retry settings are set so that a single retry would
    wait an hour: the doctor does not retry, so it answers (a retry would hang until doctor()'s 120 s guard)."""
    env = process_env | {
        "MONET_BASE_URL": f"http://127.0.0.1:{closed_port()}",
        "NANO_BANANA_RETRY_BASE_DELAY": "3600",
        "NANO_BANANA_RETRY_MAX_DELAY": "3600",
    }
    proc = doctor(command, env, "--json")
    assert proc.returncode == 1
    report = rows(proc)
    assert report["api"]["status"] == "fail"
    assert "Could not reach the Monet API" in report["api"]["detail"]
    assert report["key"]["status"] == "warn"  # not known: nothing answered


@pytest.mark.parametrize(("check", "variable"), [("output folder", "OUTPUT_DIR"), ("data folder", "DATA_DIR")])
def test_a_folder_that_cannot_be_written_fails(
    process_env: dict[str, str], command: str, tmp_path: Path, check: str, variable: str
) -> None:
    """A folder that cannot be made (here: under a file, which stops root too) fails its row, naming the folder
    and the setting to change."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder\n")
    folder = blocker / "images"
    proc = doctor(command, process_env | {f"NANO_BANANA_{variable}": str(folder)}, "--json")
    assert proc.returncode == 1
    row = rows(proc)[check]
    assert row["status"] == "fail"
    assert str(folder) in row["detail"]
    assert f"NANO_BANANA_{variable}" in row["detail"]


def test_offline_checks_the_built_in_emulator(emulator: Emulator, process_env: dict[str, str], command: str) -> None:
    """With no key and no API URL, `--offline` passes: it asks the built-in emulator, not any outside API."""
    env = {k: v for k, v in process_env.items() if k not in ("MONET_API_KEY", "MONET_BASE_URL")}
    proc = doctor(command, env, "--offline", "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = rows(proc)
    assert {row["status"] for row in report.values()} == {"ok"}, report
    assert "built-in emulator" in report["api"]["detail"]
    assert api_requests(emulator) == []  # the session's emulator was not the one asked


def test_the_create_path_row_says_async_once_a_stream_proved_unreadable(
    emulator: Emulator, process_env: dict[str, str], command: str, tmp_path: Path
) -> None:
    """The create path this data dir remembers for this API, and why."""
    assert rows(doctor(command, process_env, "--json"))["create path"]["detail"].startswith("sync")
    assert emulator.base_url is not None
    CreatePath.load(tmp_path / "data", emulator.base_url).stream_unreadable("test")
    row = rows(doctor(command, process_env, "--json"))["create path"]
    assert row["status"] == "ok"
    assert row["detail"].startswith("async")
    assert "(test)" in row["detail"]


def test_an_unfinished_task_is_counted_and_left_alone(
    emulator: Emulator, process_env: dict[str, str], command: str, tmp_path: Path
) -> None:
    """A row a stopped process left unfinished is counted; the doctor neither resumes it nor creates anything."""

    async def leave_a_row() -> None:
        assert emulator.base_url is not None
        ledger = await Ledger(tmp_path / "data" / LEDGER_FILE, api_scope=emulator.base_url).open()
        await ledger.add(TaskRecord(key="left-behind", request=GenerateRequest(prompt="a lighthouse")))
        await ledger.close()

    anyio.run(leave_a_row)
    proc = doctor(command, process_env, "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 unfinished task waiting" in rows(proc)["ledger"]["detail"]
    assert emulator.creates == 0
    assert api_requests(emulator) == [("GET", "/api/v1/tasks/list")]


def test_host_entries_are_found_and_a_missing_command_fails(
    process_env: dict[str, str], command: str, tmp_path: Path
) -> None:
    """The entry `install` wrote is found and its command exists; an entry whose program is gone fails, with the
    command that fixes it. Other hosts without an entry pass."""
    installed = subprocess.run(
        [command, "install", "claude-code"], env=process_env, capture_output=True, text=True, timeout=60, check=False
    )
    assert installed.returncode == 0, installed.stderr
    install.install(
        "cursor", command=["/gone/venv/bin/nano-banana-mcp"], home=tmp_path, platform=sys.platform, environ={}
    )
    proc = doctor(command, process_env, "--json")
    assert proc.returncode == 1
    report = rows(proc)
    assert report["host claude-code"]["status"] == "ok"
    assert command in report["host claude-code"]["detail"]
    assert "this installation" in report["host claude-code"]["detail"]
    assert report["host cursor"]["status"] == "fail"
    assert "/gone/venv/bin/nano-banana-mcp" in report["host cursor"]["detail"]
    assert "nano-banana-mcp install cursor" in report["host cursor"]["detail"]
    assert report["host claude-desktop"]["status"] == "ok"


def test_the_table_carries_no_control_character_from_a_host_file(
    process_env: dict[str, str], command: str, tmp_path: Path
) -> None:
    """An entry's command holding escape sequences and a line break (a hand-edited or hostile host file) is shown
    in the table without them: it cannot retitle or clear the terminal, nor print a row of its own."""
    hostile = "/gone/\x1b]0;owned\x07\x1b[2J\x9b31m\nforged row\r/nano-banana-mcp"
    install.install("cursor", command=[hostile], home=tmp_path, platform=sys.platform, environ={})
    proc = doctor(command, process_env)
    assert proc.returncode == 1
    assert "forged row" in proc.stdout
    assert not re.search("[\x00-\x08\x0b-\x1f\x7f-\x9f]", proc.stdout), repr(proc.stdout)
    assert not any(line.startswith("forged row") for line in proc.stdout.splitlines())


def test_the_tokens_file_counts_tenants_and_shows_no_secret(
    process_env: dict[str, str], command: str, tmp_path: Path
) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("alice alice-token-never-shown\nbob bob-token-never-shown MONET_BOB_KEY\n")
    tokens.chmod(0o600)
    env = process_env | {"MONET_BOB_KEY": "monet_bob_key_never_shown"}
    proc = doctor(command, env, "--auth-tokens-file", str(tokens), "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    row = rows(proc)["tokens file"]
    assert row["status"] == "ok"
    assert "2 tenants, 1 with its own Monet key" in row["detail"]
    assert "never-shown" not in proc.stdout + proc.stderr


def test_an_unreachable_database_fails_without_its_password(process_env: dict[str, str], command: str) -> None:
    url = f"postgresql://nano:db-password-never-shown@127.0.0.1:{closed_port()}/nano_banana"
    proc = doctor(command, process_env | {"NANO_BANANA_DATABASE_URL": url}, "--json")
    assert proc.returncode == 1
    row = rows(proc)["ledger"]
    assert row["status"] == "fail"
    assert "nano@127.0.0.1" in row["detail"]
    assert "never-shown" not in proc.stdout + proc.stderr


def test_a_postgresql_ledger_is_connected_and_pinged(
    process_env: dict[str, str], command: str, database_url: str
) -> None:
    """The cluster trusts every connection, so a password in the URL is accepted, and must not be shown."""
    url = database_url.replace("nano@", "nano:db-password-never-shown@")
    proc = doctor(command, process_env | {"NANO_BANANA_DATABASE_URL": url}, "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    row = rows(proc)["ledger"]
    assert row["status"] == "ok"
    assert row["detail"].startswith("PostgreSQL nano@127.0.0.1:")
    assert "never-shown" not in proc.stdout + proc.stderr


def test_the_bucket_is_checked_when_set(
    process_env: dict[str, str], command: str, s3_server: Any, storage_url: str
) -> None:
    """A bucket that answers passes; one that does not exist fails; no AWS credential is shown."""
    env = process_env | s3_server.env
    proc = doctor(command, env | {"NANO_BANANA_STORAGE_URL": storage_url}, "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert rows(proc)["bucket"]["status"] == "ok"
    missing = doctor(command, env | {"NANO_BANANA_STORAGE_URL": "s3://nano-banana-no-such-bucket/images"}, "--json")
    assert missing.returncode == 1
    row = rows(missing)["bucket"]
    assert row["status"] == "fail"
    assert "nano-banana-no-such-bucket" in row["detail"]
    secret = s3_server.env["AWS_SECRET_ACCESS_KEY"]
    assert secret not in proc.stdout + proc.stderr + missing.stdout + missing.stderr
