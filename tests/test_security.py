"""What an injected agent or a hostile network peer cannot make the server do. One rule per test."""

from __future__ import annotations

import logging
import socket
import subprocess
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import httpx2
import pytest
import uvicorn
from mcp import Client
from mcp.client import ClientRequestContext
from mcp.client.streamable_http import streamable_http_client
from mcp_types import ListRootsResult, Root
from pydantic import FileUrl, SecretStr

from nano_banana_mcp.config import Settings
from nano_banana_mcp.emulator import Emulator
from nano_banana_mcp.errors import DownloadError
from nano_banana_mcp.images.naming import output_path
from nano_banana_mcp.mcp_server import create_server, http_app
from nano_banana_mcp.monet import MonetClient

if TYPE_CHECKING:
    from tests.conftest import MakePng, TextOf

pytestmark = pytest.mark.anyio


@pytest.fixture
def outside(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder that is not among the allowed ones."""
    return tmp_path_factory.mktemp("elsewhere")


# -- 1. reading reference images -----------------------------------------------------------------


GenerateWith = Callable[[Client, Path | str], Coroutine[Any, Any, tuple[bool, str]]]


@pytest.fixture
def generate_with(text_of: TextOf) -> GenerateWith:
    """Call generate_image with one reference: (is_error, text)."""

    async def call(client: Client, path: Path | str) -> tuple[bool, str]:
        result = await client.call_tool("generate_image", {"prompt": "p", "images": [str(path)]})
        return result.is_error, text_of(result)

    return call


async def test_reference_inside_an_allowed_folder_passes(
    mcp_client: Client, tmp_path: Path, emulator: Emulator, png: MakePng, generate_with: GenerateWith
) -> None:
    """The allowed case: a real image in an allowed folder is uploaded and used."""
    is_error, text = await generate_with(mcp_client, png(tmp_path / "pics" / "ok.png"))
    assert not is_error, text
    assert emulator.uploads == 1


async def test_reference_outside_the_allowed_folders_is_refused(
    mcp_client: Client, outside: Path, emulator: Emulator, png: MakePng, generate_with: GenerateWith
) -> None:
    """A file outside every allowed folder is refused, naming the rule and the setting."""
    is_error, text = await generate_with(mcp_client, png(outside / "secret.png"))
    assert is_error
    assert "outside the folders this server may read" in text
    assert "NANO_BANANA_ALLOWED_DIRS" in text
    assert emulator.uploads == 0


async def test_symlink_out_of_an_allowed_folder_is_refused(
    mcp_client: Client, tmp_path: Path, outside: Path, emulator: Emulator, png: MakePng, generate_with: GenerateWith
) -> None:
    """A link inside an allowed folder to a file outside it is judged by where it leads."""
    link = tmp_path / "innocent.png"
    link.symlink_to(png(outside / "target.png"))
    is_error, text = await generate_with(mcp_client, link)
    assert is_error
    assert "outside the folders" in text
    assert emulator.uploads == 0


@pytest.mark.parametrize("hidden", [".ssh/id_ed25519.png", ".aws/creds.png", "pics/.secret.png"])
async def test_hidden_files_and_folders_are_refused(
    mcp_client: Client, tmp_path: Path, emulator: Emulator, hidden: str, png: MakePng, generate_with: GenerateWith
) -> None:
    """Nothing in or named like a dot-folder is read, even inside an allowed folder."""
    is_error, text = await generate_with(mcp_client, png(tmp_path / hidden))
    assert is_error
    assert "hidden" in text
    assert emulator.uploads == 0


async def test_a_non_image_with_an_image_name_is_refused(
    mcp_client: Client, tmp_path: Path, emulator: Emulator, generate_with: GenerateWith
) -> None:
    """The content decides, not the name: a key file renamed .png is not sent."""
    fake = tmp_path / "key.png"
    fake.write_text("-----BEGIN OPENSSH PRIVATE KEY-----\n")
    is_error, text = await generate_with(mcp_client, fake)
    assert is_error
    assert "checked by its content" in text
    assert emulator.uploads == 0


async def test_an_oversized_reference_is_refused(
    settings: Settings, tmp_path: Path, emulator: Emulator, png: MakePng, generate_with: GenerateWith
) -> None:
    """A reference over the size limit is refused before it is read whole."""
    small = settings.model_copy(update={"max_reference_bytes": 1000})
    big = png(tmp_path / "big.png", (400, 400))
    async with Client(create_server(small)) as client:
        is_error, text = await generate_with(client, big)
    assert is_error
    assert "the limit is" in text
    assert emulator.uploads == 0


@pytest.mark.parametrize(
    "reference",
    ["http://example.com/a.png", "file:///etc/passwd", "ftp://example.com/a.png", "gopher://example.com/a.png"],
)
async def test_only_https_urls_pass_as_remote_references(
    mcp_client: Client, emulator: Emulator, reference: str, generate_with: GenerateWith
) -> None:
    """Remote references must be https; other schemes are refused before anything is sent (data: URIs are decoded
    and checked like files: tests/tasks/test_references.py)."""
    is_error, text = await generate_with(mcp_client, reference)
    assert is_error
    assert "https://" in text
    assert emulator.creates == 0


async def test_the_output_folder_is_always_readable(
    mcp_client: Client, settings: Settings, emulator: Emulator, png: MakePng, generate_with: GenerateWith
) -> None:
    """A result saved earlier can be used as a reference for the next image."""
    is_error, text = await generate_with(mcp_client, png(settings.output_dir / "earlier.png"))
    assert not is_error, text


async def test_client_roots_extend_the_allowed_folders(
    settings: Settings, outside: Path, emulator: Emulator, png: MakePng, generate_with: GenerateWith
) -> None:
    """A folder the MCP client declares as a root is readable (2025-era connections, which have roots)."""

    async def list_roots(context: ClientRequestContext) -> ListRootsResult:
        return ListRootsResult(roots=[Root(uri=FileUrl(outside.as_uri()), name="project")])

    ref = png(outside / "from-root.png")
    async with Client(create_server(settings), mode="legacy", list_roots_callback=list_roots) as client:
        is_error, text = await generate_with(client, ref)
    assert not is_error, text
    assert emulator.uploads == 1


def test_allowed_dirs_default_to_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """With nothing configured, home (and the output folder) are the allowed folders."""
    monkeypatch.delenv("NANO_BANANA_ALLOWED_DIRS", raising=False)
    settings = Settings(output_dir=tmp_path / "o", data_dir=tmp_path / "d")
    assert settings.reference_roots() == [Path.home().resolve(), tmp_path / "o"]


# -- 2. writing outputs --------------------------------------------------------------------------


async def test_output_names_never_come_from_the_prompt(mcp_client: Client, settings: Settings) -> None:
    """A prompt full of path tricks still saves one server-named file directly inside the output folder."""
    prompt = "../../../../etc/cron.d/x ..\\..\\evil /tmp/owned.png %2e%2e"
    result = await mcp_client.call_tool("generate_image", {"prompt": prompt})
    path = Path(result.structured_content["images"][0]["path"])
    assert path.parent == settings.output_dir
    assert path.name.startswith("nano-banana-")
    assert [p.name for p in settings.output_dir.iterdir()] == [path.name]


@pytest.mark.parametrize("local_id", ["../../etc/passwd", "/abs/path", "a\\b\\..\\c", "\x00nul", "", "ünï/cödé"])
def test_output_path_stays_in_the_folder(tmp_path: Path, local_id: str) -> None:
    """Whatever the id, the output path is a plain name directly inside the output folder."""
    path = output_path(tmp_path, local_id, 0, "image/png", datetime.now(UTC))
    assert path.parent == tmp_path
    assert "/" not in path.name
    assert "\\" not in path.name


# -- 3. downloads --------------------------------------------------------------------------------


@pytest.fixture
async def monet(emulator: Emulator, api_key: str) -> AsyncIterator[MonetClient]:
    assert emulator.base_url is not None
    async with httpx.AsyncClient() as http:
        yield MonetClient(http, base_url=emulator.base_url, api_key=SecretStr(api_key), timeout=5)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://files.monet.vision/a.png", "only over https"),
        ("https://evil.example.com/a.png", "not on the download allowlist"),
        ("https://monet.vision.evil.com/a.png", "not on the download allowlist"),
        ("https://169.254.169.254/latest/meta-data", "not on the download allowlist"),
        ("ftp://files.monet.vision/a.png", "only over https"),
    ],
)
async def test_downloads_only_from_allowed_https_hosts(
    monet: MonetClient, tmp_path: Path, url: str, reason: str
) -> None:
    """Image URLs off the allowlist, or not https, are refused before any connection."""
    with pytest.raises(DownloadError, match=reason):
        await monet.download(url, tmp_path / "x.png", max_bytes=10_000)
    assert list(tmp_path.iterdir()) == []


def test_monet_hosts_and_configured_hosts_are_allowed(emulator: Emulator) -> None:
    """Monet's own file hosts and the hosts the user adds pass the check."""
    client = MonetClient(
        httpx.AsyncClient(), base_url="https://monet.vision", api_key=SecretStr("k"), download_hosts=["cdn.mine.org"]
    )
    for url in ("https://files.monet.vision/a.png", "https://monet.vision/a.png", "https://cdn.mine.org/x.png"):
        client.downloads.check_url(url)  # no error


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        ("redirect_offsite", "not on the download allowlist"),
        ("redirect_loop", "redirected more than"),
        ("not_image", "not an image"),
    ],
)
async def test_hostile_downloads_are_refused(
    mcp_client: Client, settings: Settings, emulator: Emulator, kind: str, expected: str
) -> None:
    """A redirect off the allowlist, a redirect loop, or a non-image never lands in the output folder."""
    emulator.faults.hostile_kind = kind
    emulator.faults.hostile = 100
    result = await mcp_client.call_tool("generate_image", {"prompt": "p", "wait_seconds": 10})
    data = result.structured_content
    assert data["status"] != "success"
    assert expected in data["error"]
    saved = list(settings.output_dir.glob("*")) if settings.output_dir.exists() else []
    assert [p for p in saved if not p.name.startswith(".")] == []


async def test_a_redirect_to_a_data_url_fails_the_task_once_and_keeps_its_url(
    mcp_client: Client, emulator: Emulator, settings: Settings
) -> None:
    """An output URL that redirects to a data: URL is not downloadable: the task fails once, saying so, with the API's
    URL kept; it is not downloaded again and again (before: a raw InvalidURL, retried without end)."""
    emulator.faults.hostile_kind = "redirect_data"
    emulator.faults.hostile = 100
    result = await mcp_client.call_tool("generate_image", {"prompt": "p", "wait_seconds": 10})
    data = result.structured_content
    assert data["status"] == "failed", data
    assert "redirected to a data: URL" in data["error"]
    assert "InvalidURL" not in data["error"]
    assert data["images"][0]["url"].startswith(emulator.base_url)
    assert emulator.hostile_fired["redirect_data"] == 1
    saved = list(settings.output_dir.glob("*")) if settings.output_dir.exists() else []
    assert [p for p in saved if not p.name.startswith(".")] == []


async def test_redirect_on_loopback_is_followed(mcp_client: Client, emulator: Emulator, text_of: TextOf) -> None:
    """The allowed case: a redirect that stays on an allowed host is followed and the image saved."""
    emulator.faults.hostile_kind = "redirect_loopback"
    emulator.faults.hostile = 1
    result = await mcp_client.call_tool("generate_image", {"prompt": "p"})
    assert result.structured_content["status"] == "success", text_of(result)


async def test_endless_download_stops_at_the_size_cap(settings: Settings, emulator: Emulator) -> None:
    """A download that never ends is cut at the size limit and nothing is saved."""
    capped = settings.model_copy(update={"max_download_bytes": 2_000_000, "max_retries": 0})
    emulator.faults.hostile_kind = "endless_download"
    emulator.faults.hostile = 100
    async with Client(create_server(capped)) as client:
        result = await client.call_tool("generate_image", {"prompt": "p", "wait_seconds": 10})
    assert "byte limit" in result.structured_content["error"]
    assert not capped.output_dir.exists() or not [p for p in capped.output_dir.iterdir() if p.suffix == ".png"]


# -- 4. secrets ----------------------------------------------------------------------------------


async def test_the_key_never_appears_anywhere(
    settings: Settings,
    emulator: Emulator,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    api_key: str,
    png: MakePng,
    text_of: TextOf,
) -> None:
    """A full run (successes, failures, a refused key) leaves the key in no log, result, file or repr."""
    caplog.set_level(logging.DEBUG)
    seen: list[str] = [repr(settings), str(settings), settings.model_dump_json()]
    ref = png(tmp_path / "ref.png")
    async with Client(create_server(settings)) as client:
        calls: list[tuple[str, dict[str, Any]]] = [
            ("generate_image", {"prompt": "ok", "images": [str(ref)]}),
            ("generate_image", {"prompt": "bad", "model": "nano-banana-1", "resolution": "4K"}),
            ("upload_reference", {"path": str(ref)}),
            ("list_tasks", {}),
            ("get_task", {"task_id": "task_missing"}),
        ]
        for name, args in calls:
            result = await client.call_tool(name, args)
            seen.append(result.model_dump_json())
        emulator.faults.fail_tasks = 1
        seen.append((await client.call_tool("generate_image", {"prompt": "fails"})).model_dump_json())
    wrong = settings.model_copy(update={"api_key": SecretStr("monet_wrong_" + "z" * 20)})
    async with Client(create_server(wrong)) as client:
        refused = await client.call_tool("generate_image", {"prompt": "x"})
    assert "refused the API key" in text_of(refused)
    seen.append(refused.model_dump_json())
    seen.extend(record.getMessage() + (record.exc_text or "") for record in caplog.records)
    files = [p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()]

    for secret in (api_key, "monet_wrong_" + "z" * 20):
        assert not any(secret in text for text in seen)
        assert not any(secret.encode() in blob for blob in files)  # ledger, its WAL, images


def test_cli_failure_output_has_no_key(process_env: dict[str, str], api_key: str, command: str) -> None:
    """Even a failing CLI run (bad base URL, no server), logging everything, prints nothing of the key."""
    env = process_env | {"MONET_BASE_URL": "http://127.0.0.1:9", "NANO_BANANA_MAX_RETRIES": "0"}
    proc = subprocess.run(
        [command, "generate", "x", "--log-level", "DEBUG", "--wait", "2"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 5  # still pending: the request is kept and sent again later
    assert "Could not reach the Monet API" in proc.stderr
    assert api_key not in proc.stdout + proc.stderr


# -- 5. the HTTP transport -----------------------------------------------------------------------


@pytest.fixture
def http_server(settings: Settings) -> Iterator[str]:
    """The streamable-HTTP app with a bearer token, served by uvicorn on a free loopback port."""
    token_settings = settings.model_copy(update={"http_token": SecretStr("s3cret-token")})
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    app = http_app(token_settings, "127.0.0.1", port)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        threading.Event().wait(0.01)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


INIT = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
MCP_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"Authorization": "Bearer wrong-token"}, 401),
        ({"Authorization": "Bearer s3cret-token", "Host": "evil.example.com"}, 421),
        ({"Authorization": "Bearer s3cret-token", "Origin": "http://evil.example.com"}, 403),
    ],
    ids=["no-token", "wrong-token", "bad-host", "bad-origin"],
)
def test_http_refuses_without_token_or_with_foreign_headers(
    http_server: str, headers: dict[str, str], status: int
) -> None:
    """No token or a wrong one is 401; a foreign Host is 421 and a foreign Origin 403 (DNS rebinding)."""
    response = httpx.post(f"{http_server}/mcp", json=INIT, headers=MCP_HEADERS | headers)
    assert response.status_code == status
    assert "s3cret-token" not in response.text


async def test_http_with_the_token_works(http_server: str) -> None:
    """The allowed case: the right bearer token gets the tools and a generated image."""
    async with (
        httpx2.AsyncClient(headers={"Authorization": "Bearer s3cret-token"}, timeout=30) as http,
        Client(streamable_http_client(f"{http_server}/mcp", http_client=http)) as client,
    ):
        tools = await client.list_tools()
        assert "generate_image" in {t.name for t in tools.tools}
        result = await client.call_tool("generate_image", {"prompt": "over http"})
    assert result.structured_content["status"] == "success"


def test_unfilled_host_placeholders_mean_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    """A host that passes `${user_config.api_key}` through unfilled gets 'no key', not a key of that text."""
    monkeypatch.setenv("MONET_API_KEY", "${user_config.api_key}")
    monkeypatch.setenv("NANO_BANANA_OUTPUT_DIR", "${user_config.output_dir}")
    settings = Settings()
    assert settings.api_key is None
    assert "${" not in str(settings.output_dir)
