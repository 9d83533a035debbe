"""`install openclaw` saves images where OpenClaw lets the agent attach them to a reply (issue 24): ``nano-banana`` in
the default agent's workspace, found as OpenClaw finds it. The rule is OpenClaw's (2026.9.6,
``src/media/local-roots.ts``): with ``tools.fs.workspaceOnly: true`` only its temp folder, its media store, its
canvas, ``<state>/workspace`` and the agent's workspace pass; .ci/clients.sh checks a real reply against OpenClaw's own
``getAgentScopedMediaLocalRootsForSources``."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from mcp import Client, StdioServerParameters

from nano_banana_mcp import install
from nano_banana_mcp.install.openclaw import media_folder

HOME = Path("/home/u")


@pytest.mark.parametrize(
    ("document", "environ", "folder"),
    [
        ({}, {}, HOME / ".openclaw/workspace/nano-banana"),
        ({"agents": {"defaults": {"workspace": "~/agent-ws"}}}, {}, HOME / "agent-ws/nano-banana"),
        (
            {"agents": {"defaults": {"workspace": "/srv/ws"}}},
            {"OPENCLAW_STATE_DIR": "/state"},
            Path("/srv/ws/nano-banana"),
        ),
        ({}, {"OPENCLAW_WORKSPACE_DIR": "/ws"}, Path("/ws/nano-banana")),
        ({}, {"OPENCLAW_STATE_DIR": "/state"}, Path("/state/workspace/nano-banana")),
        ({}, {"OPENCLAW_PROFILE": "work"}, HOME / ".openclaw-work/workspace/nano-banana"),
        ({}, {"OPENCLAW_PROFILE": "default"}, HOME / ".openclaw/workspace/nano-banana"),
        ({}, {"OPENCLAW_HOME": "/oc"}, Path("/oc/.openclaw/workspace/nano-banana")),
    ],
)
def test_the_folder_is_in_the_default_agents_workspace(
    document: dict[str, Any], environ: dict[str, str], folder: Path
) -> None:
    """agents.defaults.workspace, else OPENCLAW_WORKSPACE_DIR, else <state dir>/workspace (OPENCLAW_STATE_DIR,
    OPENCLAW_PROFILE, OPENCLAW_HOME), as OpenClaw's resolveAgentWorkspaceDir / resolveDefaultAgentWorkspaceDir."""
    assert media_folder(document, home=HOME, environ=environ) == folder


@pytest.mark.anyio
async def test_the_installed_entry_saves_into_the_workspace(tmp_path: Path, command: str) -> None:
    """The entry written into an OpenClaw config with a workspace of its own carries that folder, and the server it
    starts (with only the entry's env, as OpenClaw starts it) saves the image there, not in ~/Pictures."""
    home = tmp_path / "home"
    config = home / ".openclaw" / "openclaw.json"
    config.parent.mkdir(parents=True)
    config.write_text(json.dumps({"agents": {"defaults": {"workspace": "~/clawspace"}}}), encoding="utf-8")
    environ = {"HOME": str(home), "PATH": os.environ.get("PATH", "")}
    change = install.install("openclaw", offline=True, home=home, environ=environ, command=[command])
    assert change.action == "added"
    entry = install.servers_in(json.loads(config.read_text(encoding="utf-8")), "openclaw")["nano-banana"]
    folder = home / "clawspace" / "nano-banana"
    assert entry["env"] == {"NANO_BANANA_OUTPUT_DIR": str(folder)}

    env = (
        entry["env"]
        | environ
        | {"NANO_BANANA_DATA_DIR": str(tmp_path / "data"), "NANO_BANANA_EMULATOR_TASK_SECONDS": "0.2"}
    )
    params = StdioServerParameters(command=entry["command"], args=entry["args"], env=env)
    async with Client(params, read_timeout_seconds=30) as client:
        result = await client.call_tool("generate_image", {"prompt": "a lighthouse for the chat"})
    assert not result.is_error, result.content
    [image] = result.structured_content["images"]
    assert Path(image["path"]).parent == folder
    assert Path(image["path"]).is_file()
