"""The real `nano-banana-mcp` process: every subcommand, in text and in --json, and the stdio server."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest
from mcp import Client, StdioServerParameters
from PIL import Image

from nano_banana_mcp import catalog
from nano_banana_mcp.emulator import Emulator

if TYPE_CHECKING:
    from tests.conftest import PostgresCluster, S3Server

pytestmark = pytest.mark.anyio


RunCli = Callable[[list[str], dict[str, str]], subprocess.CompletedProcess[str]]


@pytest.fixture
def run_cli(command: str) -> RunCli:
    def run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run([command, *args], env=env, capture_output=True, text=True, timeout=60, check=False)

    return run


@pytest.fixture
def offline_env(process_env: dict[str, str]) -> dict[str, str]:
    """The test process environment without a key or API URL: what a newcomer has."""
    env = {k: v for k, v in process_env.items() if k not in ("MONET_API_KEY", "MONET_BASE_URL")}
    return env | {"NANO_BANANA_EMULATOR_TASK_SECONDS": "0.2"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_serve_over_stdio_generates_an_image(
    emulator: Emulator, process_env: dict[str, str], tmp_path: Path, mode: str, command: str
) -> None:
    """A host spawning the console script gets tools, and generate_image saves a real image."""
    params = StdioServerParameters(command=command, args=[], env=process_env)
    async with Client(params, mode=mode, read_timeout_seconds=30) as client:
        tools = await client.list_tools()
        assert "generate_image" in {t.name for t in tools.tools}
        result = await client.call_tool("generate_image", {"prompt": "a harbour", "aspect_ratio": "3:2"})
    assert not result.is_error, result.content
    [image] = result.structured_content["images"]
    path = Path(image["path"])
    assert path.parent == tmp_path / "out"
    with Image.open(path) as im:
        assert im.size == (1024, 683)
    assert emulator.creates == 1


def test_serve_http_answers_mcp(process_env: dict[str, str], command: str) -> None:
    """`serve --http` starts streamable HTTP on loopback and says where on stderr."""
    port = free_port()
    proc = subprocess.Popen(
        [command, "serve", "--http", "--port", str(port)], env=process_env, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                answer = httpx.post(
                    f"http://127.0.0.1:{port}/mcp",
                    json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
                    headers={"Accept": "application/json, text/event-stream"},
                )
                break
            except httpx.ConnectError:
                assert time.monotonic() < deadline, "the HTTP server did not start"
                time.sleep(0.1)
        assert answer.status_code < 500
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=20)
    assert f"http://127.0.0.1:{port}/mcp" in err


def test_generate_prints_the_saved_path(tmp_path: Path, offline_env: dict[str, str], run_cli: RunCli) -> None:
    """`generate --offline` with no key runs the built-in emulator and prints the image path."""
    proc = run_cli(["generate", "--offline", "a cute cat", "--aspect-ratio", "16:9"], offline_env)
    assert proc.returncode == 0, proc.stderr
    [line] = proc.stdout.splitlines()
    path = Path(line)
    assert path.parent == tmp_path / "out"
    with Image.open(path) as im:
        assert im.size == (1024, 576)
    assert "placeholder" in proc.stderr


def test_generate_json(offline_env: dict[str, str], run_cli: RunCli) -> None:
    """`--json` prints the same structured result the MCP tool returns."""
    proc = run_cli(["generate", "--offline", "--json", "a dog", "--model", "nano-banana-1"], offline_env)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["status"] == "success"
    assert data["offline"] is True
    assert Path(data["images"][0]["path"]).is_file()


def test_tasks_lists_what_was_generated(offline_env: dict[str, str], run_cli: RunCli) -> None:
    """`tasks` and `tasks --json` list a saved task (with its file) and a failed one."""
    made = json.loads(run_cli(["generate", "--offline", "--json", "listed"], offline_env).stdout)
    text = run_cli(["tasks", "--offline"], offline_env)
    assert text.returncode == 0, text.stderr
    [line] = text.stdout.splitlines()
    assert made["task_id"] in line
    assert "success" in line
    assert made["images"][0]["path"] in line

    listing = json.loads(run_cli(["tasks", "--offline", "--json"], offline_env).stdout)
    [task] = listing["tasks"]
    assert task["task_id"] == made["task_id"]
    assert task["paths"] == [made["images"][0]["path"]]
    assert listing["total_local"] == 1
    only_failed = json.loads(run_cli(["tasks", "--offline", "--json", "--status", "failed"], offline_env).stdout)
    assert only_failed["tasks"] == []
    assert only_failed["total_local"] == 0


def test_tasks_with_none_says_how_to_start(offline_env: dict[str, str], run_cli: RunCli) -> None:
    """`tasks` on a fresh machine prints nothing on stdout and a hint on stderr."""
    proc = run_cli(["tasks", "--offline"], offline_env)
    assert proc.returncode == 0
    assert proc.stdout == ""
    assert "generate" in proc.stderr


HOSTILE = "\x1b]0;owned\x07\x1b[2J\x9b31mred\x1b[0m\r\n2026-01-01 00:00:00 ERROR forged line\x00\x08\x7f end"
"""API text that would retitle the terminal, clear it, colour it, and print a log line of its own."""
CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # every control but tab and the line break itself


def test_api_text_reaches_the_terminal_without_control_characters(
    process_env: dict[str, str], emulator: Emulator, api_key: str, run_cli: RunCli
) -> None:
    """A task's error from the API, shown by `generate` (its message and its log lines) and in the `tasks` table,
    and a prompt (an agent's text) in that table, carry no control character to the terminal: no escape sequence,
    and no line of their own."""
    emulator.faults.fail_tasks = 1
    emulator.faults.fail_message = f"failed: {HOSTILE}"
    failed = run_cli(["generate", "a cat", "--log-level", "INFO"], process_env)
    assert failed.returncode == 1, failed.stderr
    assert "forged line" in failed.stderr  # the error is shown, and logged
    emulator.task_seconds = 600  # still running when `tasks` lists it: the row shows its prompt
    prompt = "prompt " + HOSTILE.replace("\x00", "")  # argv cannot carry a NUL
    pending = run_cli(["generate", prompt, "--wait", "0"], process_env)
    assert pending.returncode == 5, pending.stderr
    listed = run_cli(["tasks"], process_env)
    assert listed.returncode == 0, listed.stderr
    assert len(listed.stdout.splitlines()) == 2  # the two tasks: the API's line break made no line of its own
    assert "forged line" in listed.stdout
    assert "prompt" in listed.stdout
    for text in (failed.stdout, failed.stderr, pending.stdout, pending.stderr, listed.stdout, listed.stderr):
        assert not CONTROLS.search(text), repr(text)
        assert not any(line.startswith("2026-01-01") for line in text.splitlines())


def test_models_text_and_json(offline_env: dict[str, str], run_cli: RunCli) -> None:
    """`models` prints the catalogue's table; `models --json` the same models as data."""
    text = run_cli(["models"], offline_env)
    assert text.stdout.strip() == catalog.markdown_table()
    data = json.loads(run_cli(["models", "--json"], offline_env).stdout)
    assert [m["name"] for m in data] == list(catalog.MODELS)
    assert [m["max_reference_images"] for m in data] == [m.max_images for m in catalog.MODELS.values()]


def test_emulator_serves_the_api(offline_env: dict[str, str], command: str) -> None:
    """`emulator` serves the Monet API on loopback with the key it prints."""
    port = free_port()
    proc = subprocess.Popen(
        [command, "emulator", "--port", str(port), "--task-seconds", "0"],
        env=offline_env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                answer = httpx.get(
                    f"http://127.0.0.1:{port}/api/v1/tasks/list", headers={"Authorization": "Bearer monet_offline"}
                )
                break
            except httpx.ConnectError:
                assert time.monotonic() < deadline, "the emulator did not start"
                time.sleep(0.1)
        assert answer.status_code == 200
        assert answer.json()["tasks"] == []
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=20)
    assert f"http://127.0.0.1:{port}" in err


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["generate", "a cat"], 3, "MONET_API_KEY"),
        (["generate", "--offline", "a cat", "--model", "nano-banana-1", "--resolution", "4K"], 2, "no resolution"),
        (["tasks", "--data-dir", "/proc/nope"], 3, "NANO_BANANA_DATA_DIR"),
    ],
    ids=["no-key", "invalid-option", "unusable-data-dir"],
)
def test_errors_are_one_line_with_an_exit_code(
    offline_env: dict[str, str], args: list[str], code: int, message: str, run_cli: RunCli
) -> None:
    """Errors print one clear line on stderr and exit with a meaningful code; nothing on stdout."""
    proc = run_cli(args, offline_env)
    assert proc.returncode == code, proc.stderr
    assert proc.stdout == ""
    assert message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_a_damaged_ledger_is_one_clear_line(offline_env: dict[str, str], tmp_path: Path, run_cli: RunCli) -> None:
    """A ledger file that is not a database stops the command with exit 3, naming the file and the setting."""
    ledger = tmp_path / "data" / "ledger.sqlite3"
    ledger.parent.mkdir(parents=True)
    ledger.write_bytes(b"this is not a database" * 100)
    proc = run_cli(["generate", "--offline", "a cat"], offline_env)
    assert proc.returncode == 3
    [line] = proc.stderr.strip().splitlines()
    assert str(ledger) in line
    assert "NANO_BANANA_DATA_DIR" in line
    assert "Traceback" not in proc.stderr


def test_database_url_file_puts_the_ledger_in_postgresql(
    offline_env: dict[str, str], tmp_path: Path, postgres: PostgresCluster, database_url: str, run_cli: RunCli
) -> None:
    """`--database-url-file` (the URL itself is never a flag) moves the ledger to PostgreSQL: `generate` writes its
    row there and no SQLite file is made."""
    url_file = tmp_path / "database-url"
    url_file.write_text(database_url + "\n")
    flag = ["--database-url-file", str(url_file)]
    made = json.loads(run_cli(["generate", "--offline", "--json", *flag, "shared"], offline_env).stdout)
    assert postgres.query(database_url, "SELECT task_id, phase FROM tasks") == [(made["task_id"], "downloaded")]
    assert not (tmp_path / "data" / "ledger.sqlite3").exists()


def test_an_unreachable_database_is_one_clear_line(offline_env: dict[str, str], run_cli: RunCli) -> None:
    """A database that cannot be reached stops the command with exit 3, naming it and the setting, not the password."""
    env = offline_env | {"NANO_BANANA_DATABASE_URL": f"postgresql://nb:pw-secret@127.0.0.1:{free_port()}/ledger"}
    proc = run_cli(["tasks", "--offline"], env)
    assert proc.returncode == 3
    [line] = proc.stderr.strip().splitlines()
    assert "NANO_BANANA_DATABASE_URL" in line
    assert "nb@127.0.0.1" in line
    assert "pw-secret" not in proc.stderr


def test_storage_url_keeps_the_image_in_the_bucket(
    offline_env: dict[str, str], tmp_path: Path, s3_server: S3Server, storage_url: str, run_cli: RunCli
) -> None:
    """`--storage-url` saves the image in the bucket (credentials from the standard AWS variables) and prints where it
    is; the output folder stays empty."""
    proc = run_cli(["generate", "--offline", "--storage-url", storage_url, "a bucket"], offline_env | s3_server.env)
    assert proc.returncode == 0, proc.stderr
    [line] = proc.stdout.strip().splitlines()
    bucket = storage_url.split("/")[2]
    assert [f"s3://{bucket}/{key}" for key in s3_server.keys(bucket)] == [line]
    assert not any((tmp_path / "out").rglob("*.png"))
    assert s3_server.env["AWS_SECRET_ACCESS_KEY"] not in proc.stdout + proc.stderr


def test_a_bad_storage_url_is_one_clear_line(offline_env: dict[str, str], run_cli: RunCli) -> None:
    proc = run_cli(["generate", "--offline", "--storage-url", "s3://No_Such/x", "a cat"], offline_env)
    assert proc.returncode == 3
    [line] = proc.stderr.strip().splitlines()
    assert "NANO_BANANA_STORAGE_URL / --storage-url must read s3://bucket" in line


def test_generate_again_with_its_request_id_prints_the_same_image(
    emulator: Emulator, process_env: dict[str, str], run_cli: RunCli
) -> None:
    """A script re-run with `--request-id` (after a crash, a cut connection) collects the first run's task."""
    args = ["generate", "--request-id", "nightly-42", "a lighthouse"]
    first, second = run_cli(args, process_env), run_cli(args, process_env)
    assert first.returncode == second.returncode == 0, first.stderr + second.stderr
    assert first.stdout == second.stdout
    assert emulator.creates == 1
