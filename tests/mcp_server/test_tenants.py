"""Tenants (``NANO_BANANA_HTTP_TOKENS_FILE``): one bearer token per tenant, each tenant blind to the others' tasks,
images, resources and uploads; another tenant's task answers exactly like an unknown one. The real ASGI app over
real HTTP (uvicorn in a thread), SDK clients sending each tenant's token."""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp.shared.subscriptions import ResourceUpdated
from pydantic import SecretStr
from tests.loopback import TLS

from nano_banana_mcp.catalog import GenerateRequest
from nano_banana_mcp.config import Settings
from nano_banana_mcp.emulator import Emulator
from nano_banana_mcp.errors import ConfigError
from nano_banana_mcp.mcp_server.app import TenantTokenVerifier
from nano_banana_mcp.mcp_server.http import http_auth
from nano_banana_mcp.mcp_server.tokens import read_tokens_file
from nano_banana_mcp.runtime import open_service

if TYPE_CHECKING:
    from tests.conftest import Hello, MakePng, MakeSettings
    from tests.mcp_server.conftest import ServeHttp

pytestmark = pytest.mark.anyio

ALICE = "alice-token-0123456789"
BOB = "bob-token-9876543210"  # written in the file as its sha256: digest
UNKNOWN = "task_nope0000000000"


def _write_private(path: Path, text: str) -> Path:
    """A tokens file as the server accepts it: readable by its owner only."""
    path.write_text(text)
    path.chmod(0o600)
    return path


def _text(result: Any) -> str:
    return " ".join(getattr(c, "text", "") for c in result.content)


@dataclass
class Served:
    url: str
    settings: Settings


@pytest.fixture(scope="module")
def tenants_server(
    tmp_path_factory: pytest.TempPathFactory,
    make_settings: MakeSettings,
    emulator_server: Emulator,
    serve_http: ServeHttp,
) -> Iterator[Served]:
    """The HTTP app with a tokens file of two tenants: alice (plain token) and bob (``sha256:`` digest)."""
    root = tmp_path_factory.mktemp("tenants")
    tokens = root / "tokens"
    bob_digest = hashlib.sha256(BOB.encode()).hexdigest()
    _write_private(tokens, f"# team\n\nalice {ALICE}\n  bob   sha256:{bob_digest.upper()}  \n")
    settings = make_settings(emulator_server.base_url, root).model_copy(update={"http_tokens_file": tokens})
    with serve_http(settings) as base:
        yield Served(f"{base}/mcp", settings)


@asynccontextmanager
async def connect(served: Served, token: str, **kwargs: Any) -> AsyncIterator[Client]:
    async with (
        httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30, verify=TLS) as http,
        Client(streamable_http_client(served.url, http_client=http), read_timeout_seconds=30, **kwargs) as client,
    ):
        yield client


async def _resource_error(client: Client, uri: str) -> tuple[int, str]:
    with pytest.raises(MCPError) as caught:
        await client.read_resource(uri)
    return caught.value.error.code, caught.value.error.message


def _same(text: str, task_id: str) -> str:
    """An answer with the task id it names replaced: what an unknown id's answer must equal."""
    return text.replace(task_id, "<id>")


async def test_each_tenant_is_blind_to_the_others_tasks_images_and_uploads(
    tenants_server: Served, emulator: Emulator, png: MakePng
) -> None:
    """Alice's task, its image and resources, and her upload do not exist for bob: by id (the same error text and
    code as an id nobody made), by list, as a reference; and bob's upload of the same file is his own."""
    reference = png(tenants_server.settings.allowed_dirs[0] / "refs" / "cat.png")
    async with connect(tenants_server, ALICE) as alice, connect(tenants_server, BOB) as bob:
        made = await alice.call_tool("generate_image", {"prompt": "alice's secret"})
        assert not made.is_error, _text(made)
        task_id = made.structured_content["task_id"]
        task_uri = f"nano-banana://tasks/{task_id}"
        image_uri = made.structured_content["images"][0]["uri"]
        assert (await alice.read_resource(image_uri)).contents  # hers to read

        # get_task: the same answer as for an id nobody made
        theirs = await bob.call_tool("get_task", {"task_id": task_id})
        unknown = await bob.call_tool("get_task", {"task_id": UNKNOWN})
        assert theirs.is_error and unknown.is_error
        assert _same(_text(theirs), task_id) == _same(_text(unknown), UNKNOWN)
        assert "alice's secret" not in _text(theirs)

        # resources/read of the task and of its image
        for uri in (task_uri, image_uri):
            unknown_uri = uri.replace(task_id, UNKNOWN)
            code, message = await _resource_error(bob, uri)
            unknown_code, unknown_message = await _resource_error(bob, unknown_uri)
            assert (code, _same(message, task_id)) == (unknown_code, _same(unknown_message, UNKNOWN))

        # a nano-banana:// reference to her image
        edits = [
            await bob.call_tool("generate_image", {"prompt": "edit", "images": [uri]})
            for uri in (image_uri, image_uri.replace(task_id, UNKNOWN))
        ]
        assert all(e.is_error for e in edits)
        assert _same(_text(edits[0]), task_id) == _same(_text(edits[1]), UNKNOWN)

        # nor her saved file by its path (the output folder is every tenant's)
        path = made.structured_content["images"][0]["path"]
        for tool, args in (("upload_reference", {"path": path}), ("generate_image", {"prompt": "x", "images": [path]})):
            by_path = await bob.call_tool(tool, args)
            assert by_path.is_error and "output folder" in _text(by_path)
        mine = await alice.call_tool("upload_reference", {"path": path})
        assert mine.is_error  # the same for her: her own images go by their URI
        staged = png(tenants_server.settings.data_dir / "staging" / "in-flight.png")  # a bucket's image being made
        in_data = await bob.call_tool("upload_reference", {"path": str(staged)})
        assert in_data.is_error and "data folder" in _text(in_data)
        ok = await alice.call_tool("generate_image", {"prompt": "edit mine", "images": [image_uri]})
        assert not ok.is_error, _text(ok)
        uploads_so_far = emulator.uploads

        # list_tasks: each sees their own rows only, and never the API's shared list
        bob_list = (await bob.call_tool("list_tasks", {})).structured_content
        alice_list = (await alice.call_tool("list_tasks", {})).structured_content
        assert bob_list["tasks"] == [] and bob_list["total_local"] == 0
        assert [t["task_id"] for t in alice_list["tasks"]] == [ok.structured_content["task_id"], task_id]
        assert alice_list["total_api"] is None and bob_list["total_api"] is None

        # the upload cache is per tenant
        first = await alice.call_tool("upload_reference", {"path": str(reference)})
        again = await alice.call_tool("upload_reference", {"path": str(reference)})
        assert emulator.uploads == uploads_so_far + 1
        assert again.structured_content["url"] == first.structured_content["url"]
        his = await bob.call_tool("upload_reference", {"path": str(reference)})
        assert not his.is_error, _text(his)
        assert emulator.uploads == uploads_so_far + 2
        assert his.structured_content["url"] != first.structured_content["url"]

        # and bob's own work is his
        own = await bob.call_tool("generate_image", {"prompt": "bob's"})
        assert not own.is_error, _text(own)
        bob_list = (await bob.call_tool("list_tasks", {})).structured_content
        assert [t["task_id"] for t in bob_list["tasks"]] == [own.structured_content["task_id"]]
        gone = await alice.call_tool("get_task", {"task_id": own.structured_content["task_id"]})
        assert gone.is_error


@pytest.mark.filterwarnings("ignore:resources/subscribe is removed")
async def test_subscriptions_are_per_tenant(tenants_server: Served, emulator: Emulator) -> None:
    """A legacy subscribe to another tenant's task is refused like an unknown one, and so is a 2026 listen on it
    (``tests/mcp_server/test_watch.py``), while its own tenant hears it finish."""
    emulator.task_seconds = 3  # long enough for every check below to run while it is still working
    async with connect(tenants_server, ALICE) as alice:
        made = await alice.call_tool("generate_image", {"prompt": "later", "wait_seconds": 0})
        task_id = made.structured_content["task_id"]
        uri = f"nano-banana://tasks/{task_id}"
        heard: list[str] = []
        with anyio.fail_after(60):  # only against a hang
            async with alice.listen(resource_subscriptions=[uri]) as sub:  # open before the task can finish
                async with connect(tenants_server, BOB, mode="legacy") as bob_legacy:
                    errors = []
                    for target in (uri, f"nano-banana://tasks/{UNKNOWN}"):
                        with pytest.raises(MCPError) as caught:
                            await bob_legacy.subscribe_resource(target)
                        errors.append((caught.value.error.code, caught.value.error.message.replace(target, "<uri>")))
                    assert errors[0] == errors[1]
                async with connect(tenants_server, ALICE, mode="legacy") as alice_legacy:
                    await alice_legacy.subscribe_resource(uri)  # her own task: accepted
                async with connect(tenants_server, BOB) as bob:
                    with pytest.raises(MCPError, match="No such resource"):
                        async with bob.listen(resource_subscriptions=[uri]):
                            pass
                async for event in sub:
                    assert isinstance(event, ResourceUpdated)
                    heard.append(event.uri)
                    break
    assert heard == [uri]


def test_tokens_map_to_their_tenant_and_sha256_entries_take_the_token_not_the_digest(
    tenants_server: Served, hello: Hello
) -> None:
    """Each token (plain or by digest) is accepted; the digest itself, a guess or nothing is 401."""
    base = tenants_server.url.removesuffix("/mcp")
    digest = hashlib.sha256(BOB.encode()).hexdigest()
    for token, status in ((ALICE, 200), (BOB, 200), (f"sha256:{digest}", 401), (digest, 401), ("guess", 401)):
        answer = hello(base, {"Authorization": f"Bearer {token}"})
        assert answer.status_code == status, token
        assert ALICE not in answer.text and BOB not in answer.text


async def test_verifier_names_the_tenant_in_the_subject(tmp_path: Path) -> None:
    _write_private(tmp_path / "tokens", f"alice {ALICE}\nbob sha256:{hashlib.sha256(BOB.encode()).hexdigest()}\n")
    verifier = TenantTokenVerifier(read_tokens_file(tmp_path / "tokens"))
    alice, bob = await verifier.verify_token(ALICE), await verifier.verify_token(BOB)
    assert alice is not None and alice.subject == "alice" and alice.token != ALICE
    assert bob is not None and bob.subject == "bob"
    for wrong in (ALICE[:-1], ALICE + "x", "", BOB.upper()):
        assert await verifier.verify_token(wrong) is None
    for token, tenant in ((BOB, "bob"), (ALICE, "alice"), (BOB, "bob")):  # accepted before: each still its own tenant
        again = await verifier.verify_token(token)
        assert again is not None and again.subject == tenant


@pytest.mark.parametrize("name", ["default", "Default", "DEFAULT"])
def test_a_reserved_tenant_name_in_the_tokens_file_is_refused(settings: Settings, tmp_path: Path, name: str) -> None:
    """``default`` is the tenant of stdio, the CLI and a single token: a tokens-file tenant of that name would list
    and read what they made, so the file is refused, naming the line (and never the token)."""
    path = tmp_path / "tokens"
    path.write_text(f"alice {ALICE}\n{name} {BOB}\n")
    path.chmod(0o600)
    with pytest.raises(ConfigError) as caught:
        http_auth(settings.model_copy(update={"http_tokens_file": path}), "127.0.0.1")
    message = str(caught.value)
    assert f"{path} line 2:" in message and "reserved" in message
    assert BOB not in message


SECRET = "do-not-print-me-42"


@pytest.mark.parametrize(
    ("text", "line", "says"),
    [
        (f"alice {SECRET}\n\n# c\nalice other-token-0123456789\n", 4, "already given on line 1"),
        (f"alice {SECRET}\nbob {SECRET}\n", 2, "also the token of line 1"),
        (f"alice {SECRET}\nbob sha256:{hashlib.sha256(SECRET.encode()).hexdigest()}\n", 2, "also the token of line 1"),
        (f"# c\n{SECRET}\n", 2, "no token"),
        ("alice sha256:abc\n", 1, "64 hex digits"),
        (f"alice {SECRET} MONET_TEST_NEVER_SET_KEY\n", 1, "MONET_TEST_NEVER_SET_KEY, which should hold"),
        (f"alice {SECRET} 9LIVES\n", 1, "name of an environment variable"),
        (f"alice {SECRET} monet_{SECRET.replace('-', '_')}\n", 1, "never the key itself"),
        (f"alice {SECRET} x y\n", 1, "4 fields"),
        (f"al/ice {SECRET}\n", 1, "tenant name"),
        (f"alice {SECRET}\u00e9\n", 1, "header cannot carry"),
        (f"alice {SECRET}\nbob {SECRET[:15]}\n", 2, "shorter than 16 characters"),
        (f"alice {SECRET} AWS_SECRET_ACCESS_KEY\n", 1, "a variable whose name starts with MONET_"),
    ],
)
def test_a_malformed_tokens_file_is_refused_naming_the_line_never_the_token(
    settings: Settings, tmp_path: Path, text: str, line: int, says: str
) -> None:
    path = tmp_path / "tokens"
    _write_private(path, text)
    with pytest.raises(ConfigError) as caught:
        http_auth(settings.model_copy(update={"http_tokens_file": path}), "127.0.0.1")
    message = str(caught.value)
    assert f"{path} line {line}:" in message
    assert says in message
    assert SECRET not in message and SECRET.replace("-", "_") not in message


def test_an_empty_tokens_file_or_two_token_settings_are_refused(settings: Settings, tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    _write_private(path, "# nobody yet\n\n")
    with pytest.raises(ConfigError, match="holds no tenant"):
        http_auth(settings.model_copy(update={"http_tokens_file": path}), "127.0.0.1")
    _write_private(path, f"alice {ALICE}\n")
    both = settings.model_copy(update={"http_tokens_file": path, "http_token": SecretStr(SECRET)})
    with pytest.raises(ConfigError, match="set only one"):
        http_auth(both, "127.0.0.1")
    with pytest.raises(ConfigError, match="both set"):
        http_auth(settings.model_copy(update={"http_tokens_file": path}), "127.0.0.1", no_auth=True)


def test_the_server_refuses_to_start_on_a_malformed_tokens_file(
    process_env: dict[str, str], command: str, tmp_path: Path
) -> None:
    """`serve --http` with a malformed line exits with the file and line, and without the token."""
    _write_private(tmp_path / "tokens", f"alice {ALICE}\nbob\n")
    env = process_env | {"NANO_BANANA_HTTP_TOKENS_FILE": str(tmp_path / "tokens")}
    done = subprocess.run(
        [command, "serve", "--http", "--port", "0"], env=env, capture_output=True, text=True, timeout=30, check=False
    )
    assert done.returncode != 0
    assert f"{tmp_path / 'tokens'} line 2:" in done.stderr
    assert ALICE not in done.stderr + done.stdout


def _loose(mode: int) -> Any:
    def make(path: Path) -> None:
        _write_private(path, f"alice {ALICE}\n").chmod(mode)

    return make


def _fifo(path: Path) -> None:
    os.mkfifo(path, 0o600)  # no writer: opening it to read would wait for one


UNTRUSTED_TOKENS_FILES = {
    "other-readable": (_loose(0o644), None, "chmod 600"),
    "group-readable": (_loose(0o640), None, "chmod 600"),
    "group-writable": (_loose(0o620), None, "chmod 600"),
    "fifo": (_fifo, None, "not a regular file (a named pipe)"),
    "folder": (Path.mkdir, None, "not a regular file (a folder)"),
    "one-character-token": (lambda path: _write_private(path, f"alice {ALICE}\nbob x\n"), 2, "shorter than 16"),
    "aws-key-variable": (
        lambda path: _write_private(path, f"alice {ALICE} AWS_SECRET_ACCESS_KEY\n"),
        1,
        "starts with MONET_",
    ),
}


@pytest.mark.parametrize("case", list(UNTRUSTED_TOKENS_FILES))
def test_the_server_refuses_to_start_on_a_tokens_file_it_cannot_trust(
    process_env: dict[str, str], command: str, tmp_path: Path, case: str
) -> None:
    """`serve --http` exits 3 (a configuration error) at once with one line naming the file (and the line): on a
    file other users may read or change (saying which chmod fixes it), a FIFO or a folder (never waited on), a
    token short enough to guess, a third field naming a variable that is not MONET_* (the server's AWS secret would
    otherwise go out as that tenant's Monet key)."""
    make, line, says = UNTRUSTED_TOKENS_FILES[case]
    path = tmp_path / "tokens"
    make(path)
    aws_secret = "aws-secret-never-shown-0123456789"
    env = process_env | {"NANO_BANANA_HTTP_TOKENS_FILE": str(path), "AWS_SECRET_ACCESS_KEY": aws_secret}
    done = subprocess.run(
        [command, "serve", "--http", "--port", "0"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 3, done.stderr
    [error] = done.stderr.splitlines()
    assert error.startswith(f"error: {path} line {line}:" if line else "error: the tokens file ")
    assert str(path) in error
    assert says in error
    assert ALICE not in done.stderr + done.stdout and aws_secret not in done.stderr + done.stdout


def test_a_private_tokens_file_is_accepted_at_mode_600_or_400(settings: Settings, tmp_path: Path) -> None:
    """Readable by its owner only (600, or read-only 400) is what the server asks for, and takes."""
    path = _write_private(tmp_path / "tokens", f"alice {ALICE}\n")
    for mode in (0o600, 0o400):
        path.chmod(mode)
        auth = http_auth(settings.model_copy(update={"http_tokens_file": path}), "127.0.0.1")
        assert [t.tenant for t in auth.tenants] == ["alice"]


def test_the_start_line_names_the_file_not_a_token(settings: Settings, tmp_path: Path) -> None:
    _write_private(tmp_path / "tokens", f"alice {ALICE}\n")
    auth = http_auth(settings.model_copy(update={"http_tokens_file": tmp_path / "tokens"}), "127.0.0.1")
    assert auth.required and auth.token is None
    message = auth.start_message("http://127.0.0.1:8000/mcp")
    assert "1 tenant" in message and str(tmp_path / "tokens") in message
    assert ALICE not in message


# -- a Monet key per tenant (a third field: the environment variable holding it) ----------------------------------

CAROL = "carol-token-0123456789"
DAVE = "dave-token-9876543210"
CAROL_KEY = "monet_carol_own_account_5f1e9a"  # her own account's key: in the environment only
CAROL_KEY_VAR = "MONET_TEST_CAROL_KEY"


@pytest.fixture
def own_key(emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Carol's own Monet key: set in the environment, and accepted by the emulator as another account's key."""
    monkeypatch.setenv(CAROL_KEY_VAR, CAROL_KEY)
    emulator.add_key(CAROL_KEY)
    yield CAROL_KEY
    emulator.extra_keys.remove(CAROL_KEY)


def _own_key_settings(base: Settings, root: Path, **update: Any) -> Settings:
    """``base`` with a tokens file of carol (her own key, by its variable) and dave (the server's key)."""
    tokens = root / "tokens"
    _write_private(tokens, f"# carol pays with her own account\ncarol {CAROL} {CAROL_KEY_VAR}\ndave {DAVE}\n")
    return base.model_copy(update={"http_tokens_file": tokens, **update})


async def test_each_tenant_pays_with_its_own_key_or_the_servers(
    own_key: str,
    settings: Settings,
    serve_http: ServeHttp,
    emulator: Emulator,
    png: MakePng,
    api_key: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Carol's creates and uploads go out on her own key, dave's on MONET_API_KEY; her key is in no log line."""
    caplog.set_level(logging.DEBUG)
    root = settings.allowed_dirs[0]
    reference = png(root / "refs" / "cat.png")
    with serve_http(_own_key_settings(settings, root)) as base:
        served = Served(f"{base}/mcp", settings)
        async with connect(served, CAROL) as carol, connect(served, DAVE) as dave:
            mine = await carol.call_tool("generate_image", {"prompt": "carol's"})
            his = await dave.call_tool("generate_image", {"prompt": "dave's"})
            assert not mine.is_error, _text(mine)
            assert not his.is_error, _text(his)
            assert Path(mine.structured_content["images"][0]["path"]).is_file()
            assert emulator.creates_by_key == Counter({own_key: 1, api_key: 1})

            uploaded = await carol.call_tool("upload_reference", {"path": str(reference)})
            assert not uploaded.is_error, _text(uploaded)
            edit = await dave.call_tool("generate_image", {"prompt": "edit", "images": [str(reference)]})
            assert not edit.is_error, _text(edit)
    assert emulator.uploads_by_key == Counter({own_key: 1, api_key: 1})
    assert emulator.creates_by_key == Counter({own_key: 1, api_key: 2})
    assert all(r.status != 401 for r in emulator.requests)
    assert "HTTP Request: POST" in caplog.text  # the server's own log lines, every one at debug level
    assert own_key not in caplog.text


async def test_without_monet_api_key_a_tenant_with_its_own_key_still_generates(
    own_key: str, settings: Settings, serve_http: ServeHttp, emulator: Emulator
) -> None:
    """No MONET_API_KEY: carol creates, polls and downloads on her own key; dave is told to set MONET_API_KEY."""
    root = settings.allowed_dirs[0]
    keyless = _own_key_settings(settings, root, api_key=None, max_streams=0)  # no stream: the task is polled
    with serve_http(keyless) as base:
        served = Served(f"{base}/mcp", keyless)
        async with connect(served, CAROL) as carol, connect(served, DAVE) as dave:
            mine = await carol.call_tool("generate_image", {"prompt": "carol's"})
            assert not mine.is_error, _text(mine)
            assert mine.structured_content["status"] == "success"
            his = await dave.call_tool("generate_image", {"prompt": "dave's"})
            assert his.is_error and "MONET_API_KEY" in _text(his)
            nobody = await dave.call_tool("get_task", {"task_id": UNKNOWN})
            assert nobody.is_error and "MONET_API_KEY" not in _text(nobody)  # unknown, as for any tenant
    assert emulator.creates_by_key == Counter({own_key: 1})
    polls = [r for r in emulator.requests if r.method == "GET" and r.path.startswith("/api/v1/tasks/task_")]
    assert polls and all(r.status == 200 for r in polls)
    assert own_key not in _text(mine) + _text(his)


@pytest.mark.parametrize("value", [None, "", "   "], ids=["unset", "empty", "blank"])
def test_a_key_variable_that_is_unset_or_empty_is_refused_naming_it(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str | None
) -> None:
    """One ConfigError naming the file, the line and the variable; never a token."""
    if value is None:
        monkeypatch.delenv(CAROL_KEY_VAR, raising=False)
    else:
        monkeypatch.setenv(CAROL_KEY_VAR, value)
    path = tmp_path / "tokens"
    _write_private(path, f"alice {ALICE}\ncarol {CAROL} {CAROL_KEY_VAR}\n")
    with pytest.raises(ConfigError) as caught:
        http_auth(settings.model_copy(update={"http_tokens_file": path}), "127.0.0.1")
    message = str(caught.value)
    assert f"{path} line 2:" in message
    assert CAROL_KEY_VAR in message
    assert "not set" in message if value is None else "empty" in message
    assert ALICE not in message and CAROL not in message


def test_a_tenant_key_appears_in_no_repr_or_start_line(
    own_key: str, settings: Settings, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The auth object, its tenants and their keys show the variable's name, never the key; so does the start line."""
    caplog.set_level(logging.DEBUG)
    auth = http_auth(_own_key_settings(settings, tmp_path), "127.0.0.1")
    assert auth.tenant_keys["carol"].get_secret_value() == own_key
    assert "dave" not in auth.tenant_keys  # dave uses the server's key
    carol = next(t for t in auth.tenants if t.tenant == "carol")
    assert carol.key_env == CAROL_KEY_VAR
    message = auth.start_message("http://127.0.0.1:8000/mcp")
    assert "1 with its own Monet key" in message
    shown = [repr(auth), str(auth), repr(auth.tenants), repr(carol), repr(auth.tenant_keys), message, caplog.text]
    assert CAROL_KEY_VAR in repr(carol)
    assert not [text for text in shown if own_key in text or CAROL in text]


async def test_tenants_sharing_a_key_share_its_client(settings: Settings) -> None:
    """One client per distinct key: a tenant's own, else the server's; two tenants with one key share it."""
    keys = {"carol": SecretStr(CAROL_KEY), "erin": SecretStr(CAROL_KEY)}
    async with open_service(settings, tenant_keys=keys) as service:
        clients = service.clients
        assert clients.for_tenant("carol") is clients.for_tenant("erin")
        assert clients.for_tenant("carol") is not service.client
        assert clients.for_tenant("dave") is service.client is not None
        assert len(clients.all) == 2
        assert CAROL_KEY not in repr(clients)


async def test_offline_mode_ignores_the_tenants_own_keys(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """--offline: every tenant generates on the built-in emulator (its key), and one log line says so."""
    caplog.set_level(logging.INFO)
    offline = Settings(offline=True, output_dir=tmp_path / "out", data_dir=tmp_path / "data", emulator_task_seconds=0)
    async with open_service(offline, tenant_keys={"carol": SecretStr(CAROL_KEY)}) as service:
        assert service.clients.for_tenant("carol") is service.client
        result = await service.generate(GenerateRequest(prompt="offline"), 10, tenant="carol")
    assert result.status == "success" and result.offline
    assert "tenants' own Monet keys are not used" in caplog.text
    assert CAROL_KEY not in caplog.text
