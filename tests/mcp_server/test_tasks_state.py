"""What ``tasks/get`` says of a task while it works: ``lastUpdatedAt`` moves with its progress, and a task waiting for
a setting is carried on once the setting is mended (a real stdio process, driven by the plain 2026 wire client)."""

from __future__ import annotations

import itertools
import shutil
from pathlib import Path
from typing import Any

import anyio
import pytest
from tests.mcp_server.wire import StdioWire

from nano_banana_mcp.emulator import Emulator

pytestmark = pytest.mark.anyio


async def test_last_updated_at_moves_when_the_progress_moves(
    command: str, process_env: dict[str, str], emulator: Emulator
) -> None:
    """Every ``tasks/get`` answer whose progress differs from the one before it has a later ``lastUpdatedAt`` (not
    only a change of status): a host that shows "updated 3 s ago" shows the generation moving."""
    emulator.task_seconds = 3.0
    seen: list[dict[str, Any]] = []
    async with StdioWire.spawn([command], process_env) as wire:
        created = await wire.call_tool("generate_image", {"prompt": "a slow sunrise"})
        assert created["resultType"] == "task"
        with anyio.fail_after(60):
            while (task := await wire.get(created["taskId"]))["status"] == "working":
                seen.append(task)
                if len({t["statusMessage"] for t in seen if t["statusMessage"].startswith("Generating")}) == 3:
                    emulator.finish_tasks()  # the progress moved twice: enough seen
                await anyio.sleep(0.05)
    assert task["status"] == "completed"
    generating = [t for t in seen if t["statusMessage"].startswith("Generating with")]
    moved = [(a, b) for a, b in itertools.pairwise(generating) if a["statusMessage"] != b["statusMessage"]]
    assert moved, [t["statusMessage"] for t in seen]  # the progress moved while the status stayed "processing"
    assert all(b["lastUpdatedAt"] > a["lastUpdatedAt"] for a, b in moved), [
        (t["statusMessage"], t["lastUpdatedAt"]) for t in generating
    ]


async def test_a_task_waiting_for_a_setting_is_carried_on_by_tasks_get_once_mended(
    command: str, process_env: dict[str, str], emulator: Emulator
) -> None:
    """The output folder cannot be written (a file took its place after the server started): the paid image waits,
    and ``tasks/get`` says why. Once the folder is back, the next ``tasks/get`` carries the task on (as ``get_task``
    does): completed, the image saved, one create."""
    emulator.task_seconds = 0.2
    out = Path(process_env["NANO_BANANA_OUTPUT_DIR"])
    async with StdioWire.spawn([command], process_env) as wire:
        await wire.request("server/discover")  # started: the output folder was checked
        shutil.rmtree(out, ignore_errors=True)
        out.write_text("a file where the output folder should be\n")
        created = await wire.call_tool("generate_image", {"prompt": "kept for later"})
        assert created["resultType"] == "task", created
        with anyio.fail_after(30):
            while "could not be saved" not in (task := await wire.get(created["taskId"]))["statusMessage"]:
                await anyio.sleep(0.05)
        assert task["status"] == "working" and "NANO_BANANA_OUTPUT_DIR" in task["statusMessage"]
        assert task["pollIntervalMs"] == 5000

        out.unlink()  # mended: the folder can be made again
        with anyio.fail_after(30):
            while (task := await wire.get(created["taskId"]))["status"] == "working":
                await anyio.sleep(0.05)
    assert task["status"] == "completed", task
    saved = Path(task["result"]["structuredContent"]["images"][0]["path"])
    assert saved.is_file() and saved.parent == out
    assert emulator.creates == 1
