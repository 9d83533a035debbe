"""The real `nano-banana-mcp` process: over stdio with the SDK client, and the `generate` command."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from mcp import Client, StdioServerParameters
from PIL import Image

from conftest import COMMAND

pytestmark = pytest.mark.anyio


def run_cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([COMMAND, *args], env=env, capture_output=True, text=True, timeout=60, check=False)


def offline_env(process_env: dict[str, str]) -> dict[str, str]:
    """The test process environment without a key or API URL: what a newcomer has."""
    return {k: v for k, v in process_env.items() if k not in ("MONET_API_KEY", "MONET_BASE_URL")}


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_stdio_server_generates_an_image(
    emulator, process_env: dict[str, str], tmp_path: Path, mode: str
) -> None:
    """A host spawning the console script gets tools, and generate_image saves a real image."""
    params = StdioServerParameters(command=COMMAND, args=[], env=process_env)
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


def test_offline_generate_prints_the_saved_path(tmp_path: Path, process_env: dict[str, str]) -> None:
    """`generate --offline` with no key runs the built-in emulator and prints the image path."""
    env = offline_env(process_env) | {"NANO_BANANA_EMULATOR_TASK_SECONDS": "0.2"}
    proc = run_cli(["generate", "--offline", "a cute cat", "--aspect-ratio", "16:9"], env)
    assert proc.returncode == 0, proc.stderr
    [line] = proc.stdout.splitlines()
    path = Path(line)
    assert path.parent == tmp_path / "out"
    with Image.open(path) as im:
        assert im.size == (1024, 576)
    assert "placeholder" in proc.stderr


def test_offline_generate_json_output(process_env: dict[str, str]) -> None:
    """`--json` prints the same structured result the MCP tool returns."""
    env = offline_env(process_env) | {"NANO_BANANA_EMULATOR_TASK_SECONDS": "0"}
    proc = run_cli(["generate", "--offline", "--json", "a dog", "--model", "nano-banana-1"], env)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["status"] == "success"
    assert data["offline"] is True
    assert Path(data["images"][0]["path"]).is_file()


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["generate", "a cat"], 3, "MONET_API_KEY"),
        (["generate", "--offline", "a cat", "--model", "nano-banana-1", "--resolution", "4K"], 2, "no resolution"),
    ],
    ids=["no-key", "invalid-option"],
)
def test_cli_errors_are_one_line_with_an_exit_code(
    process_env: dict[str, str], args: list[str], code: int, message: str
) -> None:
    """Errors print one clear line on stderr and exit with a meaningful code; nothing on stdout."""
    proc = run_cli(args, offline_env(process_env))
    assert proc.returncode == code
    assert proc.stdout == ""
    assert message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
