"""The HTTP transport's guards: a bearer token always (made and kept when none is set), DNS-rebinding protection
for every spelling of loopback. Real server processes, or the real ASGI app served by uvicorn over real HTTP."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import httpx2
import pytest
import uvicorn
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from pydantic import SecretStr

from nano_banana_mcp.config import Settings
from nano_banana_mcp.emulator import Emulator
from nano_banana_mcp.errors import ConfigError
from nano_banana_mcp.mcp_server import http_app
from nano_banana_mcp.mcp_server.http import bind, http_auth
from nano_banana_mcp.mcp_server.tokens import TOKEN_FILE

if TYPE_CHECKING:
    from tests.conftest import Hello, MakeSettings, S3Server
    from tests.mcp_server.conftest import ServeHttp

pytestmark = pytest.mark.anyio

TOKEN = "s3cret-token"
LOOPBACK_SPELLINGS = ["LOCALHOST", "Localhost", "0:0:0:0:0:0:0:1", "::0:1", "[::1]", "127.0.0.2", "127.0.0.1", "::1"]
FOREIGN = {"Host": "evil.example.com"}, {"Origin": "http://evil.example.com"}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# -- the app, served by uvicorn in a thread ------------------------------------------------------------


@dataclass
class Served:
    base: str
    port: int
    settings: Settings


@pytest.fixture(scope="module")
def served(
    tmp_path_factory: pytest.TempPathFactory, make_settings: MakeSettings, emulator_server: Emulator
) -> Iterator[Callable[..., Served]]:
    """``served(host, token=True)``: the HTTP app built for ``host`` and a free port, with the bearer token TOKEN
    set (or none), served on 127.0.0.1; one server per (host, token) for this module, all stopped together."""
    running: dict[tuple[str, bool], tuple[Served, uvicorn.Server, threading.Thread]] = {}

    def serve(host: str, token: bool = True) -> Served:
        if (host, token) not in running:
            settings = make_settings(emulator_server.base_url, tmp_path_factory.mktemp("http"))
            if token:
                settings = settings.model_copy(update={"http_token": SecretStr(TOKEN)})
            sock = bind("127.0.0.1", 0)
            port = sock.getsockname()[1]
            server = uvicorn.Server(uvicorn.Config(http_app(settings, host, port), log_level="warning"))
            thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
            thread.start()
            while not server.started:
                time.sleep(0.01)
            running[host, token] = Served(f"http://127.0.0.1:{port}", port, settings), server, thread
        return running[host, token][0]

    yield serve
    for _, server, _ in running.values():
        server.should_exit = True
    for _, _, thread in running.values():
        thread.join(10)


@pytest.mark.parametrize("host", LOOPBACK_SPELLINGS)
def test_every_loopback_spelling_refuses_foreign_host_and_origin(
    served: Callable[..., Served], host: str, hello: Hello
) -> None:
    """On any spelling of loopback, a foreign Host is answered 421 and a foreign Origin 403, even with the token."""
    app = served(host)
    assert hello(app.base, bearer(TOKEN) | FOREIGN[0]).status_code == 421
    assert hello(app.base, bearer(TOKEN) | FOREIGN[1]).status_code == 403


@pytest.mark.parametrize(
    ("host", "named"),
    [
        ("LOCALHOST", "localhost"),
        ("0:0:0:0:0:0:0:1", "[::1]"),
        ("[::1]", "[::1]"),
        ("127.0.0.2", "127.0.0.2"),
        ("127.0.0.2", "localhost"),
    ],
)
def test_every_loopback_spelling_accepts_its_own_host_and_origin(
    served: Callable[..., Served], host: str, named: str, hello: Hello
) -> None:
    """The host:port served (and the plain loopback names with that port) pass as Host and as http:// Origin."""
    app = served(host)
    headers = {"Host": f"{named}:{app.port}", "Origin": f"http://{named}:{app.port}"}
    assert hello(app.base, bearer(TOKEN) | headers).status_code == 200


def test_another_port_is_a_foreign_host(served: Callable[..., Served], hello: Hello) -> None:
    """Loopback with another port is another server: its name is refused."""
    app = served("localhost")
    assert hello(app.base, bearer(TOKEN) | {"Host": f"localhost:{app.port + 1}"}).status_code == 421


def test_missing_token_gets_401_pointing_to_the_resource_metadata(served: Callable[..., Served], hello: Hello) -> None:
    """Without the token: 401 with a WWW-Authenticate naming the protected-resource metadata, which is served."""
    app = served("127.0.0.1")
    response = hello(app.base)
    assert response.status_code == 401
    [metadata_url] = re.findall(r'resource_metadata="([^"]+)"', response.headers["www-authenticate"])
    assert metadata_url == f"http://127.0.0.1:{app.port}/.well-known/oauth-protected-resource/mcp"
    metadata = httpx.get(f"{app.base}/.well-known/oauth-protected-resource/mcp").json()
    assert metadata["resource"] == f"http://127.0.0.1:{app.port}/mcp"


def test_app_without_a_configured_token_requires_the_one_it_keeps(served: Callable[..., Served], hello: Hello) -> None:
    """Built with no token set, the app still requires one: the token kept in the data dir."""
    app = served("127.0.0.1", token=False)
    kept = (app.settings.data_dir / TOKEN_FILE).read_text().strip()
    assert hello(app.base).status_code == 401
    assert hello(app.base, bearer(kept)).status_code == 200


# -- the token itself ----------------------------------------------------------------------------------


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
def test_made_token_file_is_private_whatever_the_umask(settings: Settings) -> None:
    """The token file is created mode 600 even under umask 000: no other user can ever read it."""
    old = os.umask(0)
    try:
        auth = http_auth(settings, "127.0.0.1")
    finally:
        os.umask(old)
    path = settings.data_dir / TOKEN_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert auth.token is not None
    assert path.read_text() == auth.token.get_secret_value() + "\n"
    assert len(auth.token.get_secret_value()) >= 43  # secrets.token_urlsafe(32)


def test_made_token_is_reused(settings: Settings) -> None:
    """The next start reads the kept token instead of making another."""
    first, second = http_auth(settings, "127.0.0.1"), http_auth(settings, "127.0.0.1")
    assert first.token is not None
    assert second.token is not None
    assert first.token.get_secret_value() == second.token.get_secret_value()


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
def test_kept_token_others_can_read_is_refused(settings: Settings) -> None:
    """A kept token file someone made readable by others is refused, saying how to get a fresh one."""
    http_auth(settings, "127.0.0.1")
    (settings.data_dir / TOKEN_FILE).chmod(0o644)
    with pytest.raises(ConfigError, match="not yours alone"):
        http_auth(settings, "127.0.0.1")


@pytest.mark.parametrize(
    "update",
    [
        {"http_token": SecretStr("")},
        {"http_token": SecretStr(" \t ")},
        {"http_token": SecretStr("two words")},
        {"http_token_file": "blank"},
    ],
    ids=["empty", "whitespace", "inner-space", "blank-file"],
)
def test_blank_tokens_are_refused(settings: Settings, tmp_path: Path, update: dict[str, Any]) -> None:
    """An empty, blank or unsendable token is refused by name, never taken as 'no token'."""
    if "http_token_file" in update:
        (tmp_path / "blank").write_text("\n  \n")
        update = {"http_token_file": tmp_path / "blank"}
    with pytest.raises(ConfigError, match="NANO_BANANA_HTTP_TOKEN"):
        http_auth(settings.model_copy(update=update), "127.0.0.1")


def test_no_auth_with_a_token_set_is_refused(settings: Settings) -> None:
    """--no-auth and a configured token contradict each other: refused, not one silently chosen."""
    with pytest.raises(ConfigError, match="--no-auth"):
        http_auth(settings.model_copy(update={"http_token": SecretStr(TOKEN)}), "127.0.0.1", no_auth=True)


def test_http_off_loopback_needs_a_token(settings: Settings) -> None:
    """Off loopback --no-auth is refused; without a configured token the app requires a made one."""
    with pytest.raises(ConfigError, match=r"Refusing --no-auth on 0\.0\.0\.0"):
        http_auth(settings, "0.0.0.0", no_auth=True)
    auth = http_auth(settings, "0.0.0.0")
    assert auth.token is not None
    assert auth.made_here


# -- real server processes ------------------------------------------------------------------------------


@dataclass
class Started:
    url: str
    stderr: str

    @property
    def base(self) -> str:
        return self.url.removesuffix("/mcp")


@contextmanager
def serving(command: str, env: dict[str, str], log: Path, *args: str) -> Iterator[Started]:
    """``nano-banana-mcp serve --http --port 0 ARGS``, once it has printed how to connect."""
    with log.open("w") as err:
        proc = subprocess.Popen(
            [command, "serve", "--http", "--port", "0", *args], env=env, stdout=subprocess.DEVNULL, stderr=err
        )
    try:
        deadline = time.monotonic() + 20
        while not re.search(r"\n  claude mcp add .*\n", text := log.read_text()):
            assert proc.poll() is None, f"the server exited: {text}"
            assert time.monotonic() < deadline, f"no start-up line: {text}"
            time.sleep(0.02)
        [url] = re.findall(r"server on (http://\S+/mcp)", text)
        yield Started(url=url, stderr=text)
    finally:
        proc.terminate()
        proc.wait(20)


async def test_http_makes_a_token_and_prints_the_line_that_connects(
    process_env: dict[str, str], command: str, tmp_path: Path, hello: Hello
) -> None:
    """With no token set, the server makes one, prints the exact `claude mcp add` line, and requires it: no token
    or a wrong one is 401; an SDK client sending the printed one lists the tools and generates an image."""
    with serving(command, process_env, tmp_path / "err.txt") as server:
        [token] = re.findall(r'--header "Authorization: Bearer ([A-Za-z0-9_-]+)"', server.stderr)
        assert f"claude mcp add -s user --transport http nano-banana {server.url} --header" in server.stderr
        assert f"kept in {tmp_path / 'data' / TOKEN_FILE}" in server.stderr
        assert hello(server.base).status_code == 401
        assert hello(server.base, bearer("a-guess")).status_code == 401
        async with (
            httpx2.AsyncClient(headers=bearer(token), timeout=30) as http,
            Client(streamable_http_client(server.url, http_client=http)) as client,
        ):
            assert "generate_image" in {t.name for t in (await client.list_tools()).tools}
            result = await client.call_tool("generate_image", {"prompt": "over http"})
    assert result.structured_content["status"] == "success"


def test_cli_on_localhost_in_capitals_refuses_foreign_host_and_origin(
    process_env: dict[str, str], command: str, tmp_path: Path, hello: Hello
) -> None:
    """`serve --http --host LOCALHOST`: a foreign Host gets 421 and a foreign Origin 403; its own name gets 200."""
    with serving(command, process_env, tmp_path / "err.txt", "--host", "LOCALHOST") as server:
        [token] = re.findall(r"Bearer ([A-Za-z0-9_-]+)", server.stderr)
        port = server.url.split(":")[2].split("/")[0]
        assert server.url == f"http://localhost:{port}/mcp"
        base = f"http://127.0.0.1:{port}"
        assert hello(base, bearer(token) | FOREIGN[0]).status_code == 421
        assert hello(base, bearer(token) | FOREIGN[1]).status_code == 403
        assert hello(base, bearer(token) | {"Host": f"localhost:{port}"}).status_code == 200


@pytest.mark.parametrize("where", ["environment", "file"])
def test_a_token_the_user_set_is_never_printed(
    process_env: dict[str, str], command: str, tmp_path: Path, where: str, hello: Hello
) -> None:
    """A token from NANO_BANANA_HTTP_TOKEN or a token file is required, named by where it is, and not printed."""
    env = process_env | {"NANO_BANANA_HTTP_TOKEN": TOKEN}
    if where == "file":
        (tmp_path / "token").write_text(TOKEN + "\n")
        env = process_env | {"NANO_BANANA_HTTP_TOKEN_FILE": str(tmp_path / "token")}
    with serving(command, env, tmp_path / "err.txt") as server:
        assert hello(server.base).status_code == 401
        assert hello(server.base, bearer(TOKEN)).status_code == 200
    assert TOKEN not in server.stderr
    named = "$NANO_BANANA_HTTP_TOKEN" if where == "environment" else f"$(cat {tmp_path / 'token'})"
    assert f'--header "Authorization: Bearer {named}"' in server.stderr
    assert not (tmp_path / "data" / TOKEN_FILE).exists()


def test_auth_token_flag_warns_that_others_can_see_it(
    process_env: dict[str, str], command: str, tmp_path: Path, hello: Hello
) -> None:
    """--auth-token still works, with a warning that the process list shows it to other users."""
    with serving(command, process_env, tmp_path / "err.txt", "--auth-token", TOKEN) as server:
        assert hello(server.base, bearer(TOKEN)).status_code == 200
    assert "warning: --auth-token puts the token in the process list" in server.stderr
    assert TOKEN not in server.stderr


def test_no_auth_serves_loopback_without_a_token_and_warns(
    process_env: dict[str, str], command: str, tmp_path: Path, hello: Hello
) -> None:
    """--no-auth on loopback answers without a token (DNS-rebinding protection still on) and warns on stderr."""
    with serving(command, process_env, tmp_path / "err.txt", "--no-auth") as server:
        assert hello(server.base).status_code == 200
        assert hello(server.base, FOREIGN[0]).status_code == 421
    assert "warning: --no-auth" in server.stderr
    assert "Bearer" not in server.stderr


@pytest.mark.parametrize(
    ("args", "env", "named"),
    [
        (["--host", "0.0.0.0", "--no-auth"], {}, "--no-auth"),
        ([], {"NANO_BANANA_HTTP_TOKEN": "  "}, "NANO_BANANA_HTTP_TOKEN"),
    ],
    ids=["no-auth-in-public", "blank-token"],
)
def test_cli_refuses_to_serve_publicly_without_a_token(
    process_env: dict[str, str], command: str, args: list[str], env: dict[str, str], named: str
) -> None:
    """--no-auth off loopback, or a blank token: exit 3 at once, naming the setting."""
    proc = subprocess.run(
        [command, "serve", "--http", "--port", "0", *args],
        env=process_env | env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 3, proc.stderr
    assert named in proc.stderr


def test_healthz_answers_without_a_token_and_names_no_secret(
    process_env: dict[str, str], command: str, tmp_path: Path, hello: Hello
) -> None:
    """`GET /healthz` needs no token and says whether the ledger answers and the image folder is writable: 200
    when both hold, 503 naming which does not; never the token, the key or a path."""
    with serving(command, process_env, tmp_path / "err.txt") as server:
        ok = httpx.get(f"{server.base}/healthz")
        assert (ok.status_code, ok.json()) == (200, {"status": "ok", "ledger": "ok", "storage": "ok"})
        assert hello(server.base).status_code == 401  # the MCP endpoint still needs the token
        out = Path(process_env["NANO_BANANA_OUTPUT_DIR"])
        shutil.rmtree(out, ignore_errors=True)
        out.write_text("a file where the image folder should be")
        sick = httpx.get(f"{server.base}/healthz")
    assert sick.status_code == 503
    assert sick.json() == {"status": "degraded", "ledger": "ok", "storage": "unwritable"}
    for answer in (ok.text, sick.text):
        assert process_env["MONET_API_KEY"] not in answer
        assert str(tmp_path) not in answer


def test_healthz_reports_an_unreachable_bucket(
    settings: Settings, storage_url: str, s3_server: S3Server, serve_http: ServeHttp
) -> None:
    """With images in object storage, /healthz answers 503 while the bucket cannot be reached, and names nothing."""
    bucket = storage_url.split("/")[2]
    team = settings.model_copy(update={"storage_url": storage_url, "http_token": SecretStr("t" * 32)})
    with serve_http(team) as base:
        assert httpx.get(f"{base}/healthz").status_code == 200
        s3_server.client().delete_bucket(Bucket=bucket)
        answer = httpx.get(f"{base}/healthz")
        s3_server.client().create_bucket(Bucket=bucket)
        back = httpx.get(f"{base}/healthz")
    assert (answer.status_code, answer.json()) == (
        503,
        {"status": "degraded", "ledger": "ok", "storage": "unreachable"},
    )
    assert bucket not in answer.text
    assert back.status_code == 200
