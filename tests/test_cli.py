"""The real `nano-banana-mcp` process: every subcommand, in text and in --json, and the stdio server."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
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


def test_generate_media_prints_media_lines(tmp_path: Path, offline_env: dict[str, str], run_cli: RunCli) -> None:
    """`--media` prints one standalone `MEDIA:<absolute path>` line per image, the line OpenClaw attaches from a reply,
    for an agent that runs the command line instead of the MCP tools."""
    proc = run_cli(["generate", "--offline", "--media", "two cats", "--count", "2"], offline_env)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 2
    for line in lines:
        assert line.startswith("MEDIA:/")
        path = Path(line.removeprefix("MEDIA:"))
        assert path.is_absolute() and path.is_file() and path.parent == tmp_path / "out"


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
        (["serve", "--http", "--port", "99999"], 2, "argument --port: '99999' is not a port"),
        (["serve", "--http", "--port", "-1"], 2, "argument --port: '-1' is not a port"),
        (["emulator", "--port", "70000"], 2, "argument --port: '70000' is not a port"),
        (["emulator", "--task-seconds", "-1"], 2, "argument --task-seconds"),
        (["generate", "--offline", "a cat", "--wait", "-1"], 2, "argument --wait"),
        (["generate", "--offline", "a cat", "--request-timeout", "0"], 3, "NANO_BANANA_REQUEST_TIMEOUT"),
        (["tasks", "--offline", "--page", "0"], 2, "argument --page"),
        (["generate", "--offline", "a cat", "--out", "{tmp}/out-\udcff"], 3, "NANO_BANANA_OUTPUT_DIR / --out"),
    ],
    ids=[
        "no-key",
        "invalid-option",
        "unusable-data-dir",
        "port-too-high",
        "negative-port",
        "emulator-port-too-high",
        "negative-task-seconds",
        "negative-wait",
        "zero-request-timeout",
        "page-zero",
        "out-not-utf8",
    ],
)
def test_errors_are_one_line_with_an_exit_code(
    offline_env: dict[str, str], tmp_path: Path, args: list[str], code: int, message: str, run_cli: RunCli
) -> None:
    """Errors print one clear line on stderr and exit with a meaningful code; nothing on stdout."""
    proc = run_cli([arg.replace("{tmp}", str(tmp_path)) for arg in args], offline_env)
    assert proc.returncode == code, proc.stderr
    assert proc.stdout == ""
    assert message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def damage(ledger: Path, how: str) -> None:
    """Garbage in a ledger file: all of it, or (``pages``) everything after a real ledger's first page, whose header
    still reads well."""
    if how == "whole":
        ledger.parent.mkdir(parents=True)
        ledger.write_bytes(b"this is not a database" * 100)
        return

    async def make() -> None:
        from nano_banana_mcp.catalog import GenerateRequest  # noqa: PLC0415
        from nano_banana_mcp.tasks import Ledger, TaskRecord  # noqa: PLC0415

        made = await Ledger(ledger, api_scope="offline").open()
        for n in range(20):
            await made.add(TaskRecord(key=f"k{n}", request=GenerateRequest(prompt="p" * 500)))
        await made.close()

    anyio.run(make)
    size = ledger.stat().st_size
    assert size > 4 * 4096
    with ledger.open("r+b") as file:
        file.seek(4096)
        file.write(b"\xde\xad\xbe\xef" * ((size - 4096) // 4))


@pytest.mark.parametrize("how", ["whole", "pages"])
def test_a_damaged_ledger_is_one_clear_line(
    offline_env: dict[str, str], tmp_path: Path, run_cli: RunCli, how: str
) -> None:
    """A ledger file that is not a database, or whose pages are garbage behind a good header, stops the command
    with exit 3, naming the file and the setting."""
    ledger = tmp_path / "data" / "ledger.sqlite3"
    damage(ledger, how)
    proc = run_cli(["generate", "--offline", "a cat"], offline_env)
    assert proc.returncode == 3
    [line] = proc.stderr.strip().splitlines()
    assert str(ledger) in line
    assert "NANO_BANANA_DATA_DIR" in line
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("how", ["whole", "pages"])
async def test_a_damaged_ledger_stops_the_stdio_server_in_one_line(
    process_env: dict[str, str], command: str, tmp_path: Path, how: str
) -> None:
    """The same garbage under the stdio server a host starts: one line on stderr naming the file and the setting,
    exit 3, no traceback, nothing on stdout."""
    ledger = tmp_path / "data" / "ledger.sqlite3"
    await anyio.to_thread.run_sync(damage, ledger, how)
    hello = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
    }
    with anyio.fail_after(30):
        proc = await anyio.run_process(
            [command], input=(json.dumps(hello) + "\n").encode(), env=process_env, check=False
        )
    assert proc.returncode == 3, proc.stderr
    assert proc.stdout == b""
    [line] = proc.stderr.decode().strip().splitlines()
    assert str(ledger) in line
    assert "NANO_BANANA_DATA_DIR" in line


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


@pytest.mark.parametrize("where", ["a-file", "under-a-file", "proc"])
def test_an_output_folder_that_cannot_be_written_is_refused_before_paying(
    emulator: Emulator, process_env: dict[str, str], tmp_path: Path, run_cli: RunCli, where: str
) -> None:
    """`--out` naming a file, or a place no folder can be made, is one line and exit 3, before any task is created
    (it used to pay, then retry "Free space..." for ever)."""
    (tmp_path / "a-file").write_text("not a folder")
    out = {"a-file": tmp_path / "a-file", "under-a-file": tmp_path / "a-file" / "images", "proc": Path("/proc/nope")}
    proc = run_cli(["generate", "--wait", "5", "--out", str(out[where]), "a cat"], process_env)
    assert proc.returncode == 3, proc.stderr
    [line] = proc.stderr.strip().splitlines()
    assert str(out[where]) in line
    assert "NANO_BANANA_OUTPUT_DIR" in line
    assert proc.stdout == ""
    assert emulator.creates == 0
    assert emulator.requests == []


NUL = "/nowhere/a\x00b"


@pytest.mark.parametrize(
    ("args", "code", "setting"),
    [
        (["generate", "--offline", "a cat", "--out", NUL], 3, "NANO_BANANA_OUTPUT_DIR / --out"),
        (["tasks", "--offline", "--data-dir", NUL], 3, "NANO_BANANA_DATA_DIR / --data-dir"),
        (["generate", "--offline", "a cat", "--allowed-dir", NUL], 3, "NANO_BANANA_ALLOWED_DIRS / --allowed-dir"),
        (["tasks", "--offline", "--database-url-file", NUL], 3, "--database-url-file"),
        (["serve", "--http", "--offline", "--auth-token-file", NUL], 3, "--auth-token-file"),
        (["serve", "--http", "--offline", "--auth-tokens-file", NUL], 3, "--auth-tokens-file"),
        (["generate", "--offline", "a cat", "--image", NUL + ".png"], 2, "Reference image"),
    ],
    ids=["out", "data-dir", "allowed-dir", "database-url-file", "auth-token-file", "auth-tokens-file", "image"],
)
def test_a_nul_character_in_a_path_argument_is_one_clear_line(
    offline_env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    code: int,
    setting: str,
) -> None:
    """A path with a NUL character (which no OS takes, so no real argv can hold it: `main` is called as the console
    script calls it) is one line naming the setting, never a raw ValueError."""
    from nano_banana_mcp.cli import main  # noqa: PLC0415

    for name, value in offline_env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as done:
        main(args)
    assert done.value.code == code
    out, err = capsys.readouterr()
    assert out == ""
    [line] = err.strip().splitlines()
    assert setting in line
    assert "NUL character" in line


@pytest.mark.parametrize("args", [["emulator"], ["serve", "--http"]], ids=["emulator", "serve-http"])
def test_a_busy_port_is_one_clear_line(offline_env: dict[str, str], run_cli: RunCli, args: list[str]) -> None:
    """A port another program listens on: one line naming it, exit 3, no traceback."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = run_cli([*args, "--port", str(port)], offline_env)
    assert proc.returncode == 3, proc.stderr
    [line] = proc.stderr.strip().splitlines()
    assert f"port {port}" in line
    assert "--port" in line


# -- a team server's start-up ------------------------------------------------------------------------------------

DB_PASSWORD = "pw-Never-Shown-42"


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that takes connections and never answers on them, as a firewalled or hung server does."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(0)
        yield silent.getsockname()[1]


@pytest.fixture
def password_url(postgres: PostgresCluster, database_url: str) -> Callable[[str], str]:
    """``password_url(password)``: a URL of the test database for a user that must give its password (scram), with
    this password in it (right or wrong)."""
    database = database_url.rsplit("/", 1)[1]
    user = f"pw_{database}"
    postgres.query(database_url, f"CREATE ROLE {user} LOGIN PASSWORD '{DB_PASSWORD}'")
    postgres.query(database_url, f"GRANT ALL ON SCHEMA public TO {user}")
    hba = postgres.data / "pg_hba.conf"
    hba.write_text(f"host all {user} 127.0.0.1/32 scram-sha-256\n" + hba.read_text())
    postgres.query(database_url, "SELECT pg_reload_conf()")
    return lambda password: f"postgresql://{user}:{password}@127.0.0.1:{postgres.port}/{database}"


def start_team_server(env: dict[str, str], command: str) -> tuple[subprocess.CompletedProcess[str], float]:
    started = time.monotonic()
    proc = subprocess.run(
        [command, "serve", "--http", "--offline", "--port", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return proc, time.monotonic() - started


def start_team_servers(
    envs: dict[str, dict[str, str]], command: str
) -> dict[str, tuple[subprocess.CompletedProcess[str], float]]:
    """:func:`start_team_server` for each case at once: each start then meets the same load on the machine as the
    baseline it is compared with (one after the other, a busy moment could fall on either), and the test waits for
    the slowest rather than for them all."""
    with ThreadPoolExecutor(len(envs)) as pool:
        started = {case: pool.submit(start_team_server, env, command) for case, env in envs.items()}
        return {case: future.result() for case, future in started.items()}


def assert_one_line_start_failure(
    proc: subprocess.CompletedProcess[str], seconds: float, setting: str, case: str
) -> str:
    """Exit 3, one line naming the setting, no banner before it, no secret in it."""
    print(f"{case}: {seconds:.1f} s")
    assert proc.returncode == 3, proc.stderr
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith("error: ")
    assert setting in line
    assert "Connect with" not in proc.stderr
    assert DB_PASSWORD not in proc.stderr
    return line


def assert_waits_are_bounded(seconds: dict[str, float], baseline: str) -> None:
    """The issue's "within 10 s": a setting that hangs (a silent host) adds at most 7 s to a start that fails at
    once (``baseline``: a refused port), which takes 1-2 s on an idle machine. Measured against that baseline from the
    same run, so a loaded machine's slower start-up does not count against it."""
    for case, took in seconds.items():
        assert took - seconds[baseline] < 7, f"{case}: {took:.1f} s against {seconds[baseline]:.1f} s"


def test_a_team_database_that_is_wrongly_set_stops_the_start_in_one_line(
    offline_env: dict[str, str], command: str, password_url: Callable[[str], str], silent_port: int
) -> None:
    """`serve --http` for a team, its database unreachable, silent, or refusing the password: one line naming
    NANO_BANANA_DATABASE_URL (never the password), exit 3, within 10 s, and no "server on ... Connect with:" before it.
    The right password starts it."""
    cases = {
        "unreachable": f"postgresql://nb:{DB_PASSWORD}@127.0.0.1:{free_port()}/ledger",
        "silent": f"postgresql://nb:{DB_PASSWORD}@127.0.0.1:{silent_port}/ledger",
        "wrong password": password_url(DB_PASSWORD + "-wrong"),
    }
    took: dict[str, float] = {}
    started = start_team_servers(
        {case: offline_env | {"NANO_BANANA_DATABASE_URL": url} for case, url in cases.items()}, command
    )
    for case, (proc, took[case]) in started.items():
        line = assert_one_line_start_failure(proc, took[case], "NANO_BANANA_DATABASE_URL", case)
        assert "-wrong" not in line, case
    assert "password authentication failed" in line
    assert_waits_are_bounded(took, "unreachable")
    right = password_url(DB_PASSWORD)
    with subprocess.Popen(
        [command, "serve", "--http", "--offline", "--port", "0"],
        env=offline_env | {"NANO_BANANA_DATABASE_URL": right},
        stderr=subprocess.PIPE,
        text=True,
    ) as server:
        assert server.stderr is not None
        assert "Connect with" in server.stderr.readline()
        server.terminate()


def test_a_team_bucket_that_cannot_be_used_stops_the_start_in_one_line(
    offline_env: dict[str, str], command: str, s3_server: S3Server, silent_port: int
) -> None:
    """`serve --http` for a team, its bucket missing or its endpoint unreachable or silent: one line naming
    NANO_BANANA_STORAGE_URL, exit 3, within 10 s, no banner before it, no credential in it."""
    cases = {
        "missing bucket": s3_server.env,
        "unreachable endpoint": s3_server.env | {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}"},
        "silent endpoint": s3_server.env | {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{silent_port}"},
    }
    took: dict[str, float] = {}
    bucket = {"NANO_BANANA_STORAGE_URL": "s3://no-such-bucket-here/images"}
    started = start_team_servers({case: offline_env | aws | bucket for case, aws in cases.items()}, command)
    for case, (proc, took[case]) in started.items():
        line = assert_one_line_start_failure(proc, took[case], "NANO_BANANA_STORAGE_URL", case)
        assert "no-such-bucket-here" in line, case
        assert s3_server.env["AWS_SECRET_ACCESS_KEY"] not in proc.stderr
    assert_waits_are_bounded(took, "unreachable endpoint")
