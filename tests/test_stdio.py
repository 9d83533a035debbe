"""The real `nano-banana-mcp` process: over stdio with the SDK client, and the `generate` command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mcp import Client, StdioServerParameters
from PIL import Image

pytestmark = pytest.mark.anyio

COMMAND = str(Path(sys.executable).with_name("nano-banana-mcp"))


def base_env(tmp_path: Path) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(tmp_path),
        "NANO_BANANA_OUTPUT_DIR": str(tmp_path / "out"),
        "NANO_BANANA_DATA_DIR": str(tmp_path / "data"),
        "NANO_BANANA_RETRY_BASE_DELAY": "0.01",
        "NANO_BANANA_POLL_INTERVAL": "0.05",
    }


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_stdio_server_generates_an_image(emulator, api_key: str, tmp_path: Path, mode: str) -> None:
    """A host spawning the console script gets tools, and generate_image saves a real image."""
    env = base_env(tmp_path) | {"MONET_API_KEY": api_key, "MONET_BASE_URL": emulator.base_url}
    params = StdioServerParameters(command=COMMAND, args=[], env=env)
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


def test_offline_generate_prints_the_saved_path(tmp_path: Path) -> None:
    """`generate --offline` with no key runs the built-in emulator and prints the image path."""
    env = base_env(tmp_path) | {"NANO_BANANA_EMULATOR_TASK_SECONDS": "0.2"}
    proc = subprocess.run(
        [COMMAND, "generate", "--offline", "a cute cat", "--aspect-ratio", "16:9"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    [line] = proc.stdout.splitlines()
    path = Path(line)
    assert path.parent == tmp_path / "out"
    with Image.open(path) as im:
        assert im.size == (1024, 576)
    assert "placeholder" in proc.stderr


def test_offline_generate_json_output(tmp_path: Path) -> None:
    """`--json` prints the same structured result the MCP tool returns."""
    env = base_env(tmp_path) | {"NANO_BANANA_EMULATOR_TASK_SECONDS": "0"}
    proc = subprocess.run(
        [COMMAND, "generate", "--offline", "--json", "a dog", "--model", "nano-banana-1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
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
def test_cli_errors_are_one_line_with_an_exit_code(tmp_path: Path, args: list[str], code: int, message: str) -> None:
    """Errors print one clear line on stderr and exit with a meaningful code; nothing on stdout."""
    proc = subprocess.run(
        [COMMAND, *args], env=base_env(tmp_path), capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == code
    assert proc.stdout == ""
    assert message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
