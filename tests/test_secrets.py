"""The key never escapes, even when the API (or a proxy) echoes it back in what it sends."""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path

import pytest
from mcp import Client
from mcp_types import TextContent
from pydantic import SecretStr

from nano_banana_mcp.config import Settings
from nano_banana_mcp.emulator import Emulator
from nano_banana_mcp.mcp_server import create_server
from nano_banana_mcp.monet.responses import Redactor

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize("kind", ["401", "400", "422", "403", "failed_task"])
async def test_an_api_that_echoes_the_key_leaks_it_nowhere(
    settings: Settings, emulator: Emulator, tmp_path: Path, caplog: pytest.LogCaptureFixture, kind: str, api_key: str
) -> None:
    """Error bodies (JSON, nested, plain text) and a failed task's error that repeat the key or its Bearer header:
    the key is in no tool result, task list, log record, ledger or other file; the error still says what happened."""
    caplog.set_level(logging.DEBUG)
    emulator.faults.echo_key = 1
    emulator.faults.echo_key_kind = kind
    seen: list[str] = []
    async with Client(create_server(settings)) as client:
        result = await client.call_tool("generate_image", {"prompt": "echo", "wait_seconds": 10})
        seen.append(result.model_dump_json())
        listed = await client.call_tool("list_tasks", {})
        seen.append(listed.model_dump_json())
        for task in listed.structured_content["tasks"]:
            seen.append((await client.call_tool("get_task", {"task_id": task["task_id"]})).model_dump_json())
    seen.extend(record.getMessage() + (record.exc_text or "") for record in caplog.records)
    files = [p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()]
    assert emulator.faults.echo_key == 0, "the echo fault fired"
    assert "[redacted]" in " ".join(seen)
    assert not [text for text in seen if api_key in text]
    assert not [blob for blob in files if api_key.encode() in blob]  # the ledger, its WAL, images


def test_the_redactor_removes_the_key_and_any_bearer_token() -> None:
    """The key anywhere, and any ``Bearer`` token (another key, a proxy's), come out as [redacted]."""
    redact = Redactor("monet_secret_1234")
    text = '{"e": "monet_secret_1234 / Authorization: Bearer other.token-9 / bearer monet_secret_1234)"}'
    assert redact.text(text) == '{"e": "[redacted] / Authorization: Bearer [redacted] / bearer [redacted])"}'
    assert Redactor("").text("nothing to hide") == "nothing to hide"


async def test_a_refused_wrong_key_is_not_repeated(settings: Settings, emulator: Emulator) -> None:
    """A wrong key echoed in the 401 is not shown back either (it may be a real key of another account)."""
    wrong = "monet_wrong_" + "z" * 20
    emulator.faults.echo_key = 1
    emulator.faults.echo_key_kind = "401"
    async with Client(create_server(settings.model_copy(update={"api_key": SecretStr(wrong)}))) as client:
        result = await client.call_tool("generate_image", {"prompt": "x"})
    assert result.is_error
    assert isinstance(result.content[0], TextContent)
    assert "refused the API key" in result.content[0].text
    assert wrong not in result.model_dump_json()


def test_a_monet_base_url_with_a_password_in_it_is_refused_without_repeating_it(
    command: str, process_env: dict[str, str]
) -> None:
    """MONET_BASE_URL=http://user:password@host would be repeated by every message that names the API (a tenant's
    task error, the log): the setting is refused at start, naming it, without the password."""
    env = process_env | {"MONET_BASE_URL": "http://user:Hunter2-never-shown@127.0.0.1:9"}
    done = subprocess.run([command, "tasks"], env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 3, done.stderr
    assert "MONET_BASE_URL must not hold a user name or password" in done.stderr
    assert "Hunter2-never-shown" not in done.stdout + done.stderr
