"""`nano-banana-mcp usage`: today and this month, per tenant, by model and resolution, as a table and as JSON."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from nano_banana_mcp.catalog import GenerateRequest
from nano_banana_mcp.config import Settings
from nano_banana_mcp.emulator import Emulator
from nano_banana_mcp.runtime import open_service

PRICES = 'unit = "USD"\n[nano-banana-2]\n1K = 0.04\n2K = 0.06\n'


@pytest.fixture
async def spent(settings: Settings, emulator: Emulator) -> None:
    """alice: 2 images at 2K and 1 at 1K; bob: 1 image of nano-banana-1 (no price given for it)."""
    emulator.task_seconds = 0
    async with open_service(settings) as service:
        await service.generate(GenerateRequest(prompt="a", resolution="2K"), 30, count=2, tenant="alice")
        await service.generate(GenerateRequest(prompt="b", resolution="1K"), 30, tenant="alice")
        await service.generate(GenerateRequest(prompt="c", model="nano-banana-1"), 30, tenant="bob")


@pytest.mark.anyio
@pytest.mark.usefixtures("spent")
async def test_usage_per_tenant_model_and_resolution(command: str, process_env: dict[str, str], tmp_path: Path) -> None:
    prices = tmp_path / "prices.toml"
    prices.write_text(PRICES)
    env = process_env | {"NANO_BANANA_PRICES": str(prices), "NANO_BANANA_DAILY_IMAGE_LIMIT": "50"}
    table = subprocess.run([command, "usage"], env=env, capture_output=True, text=True, timeout=60, check=False)
    assert table.returncode == 0, table.stderr
    lines = [" ".join(line.split()) for line in table.stdout.splitlines()]
    assert "cost in USD" in lines[0]
    assert "today alice nano-banana-2 1K 1 0.04" in lines
    assert "today alice nano-banana-2 2K 2 0.12" in lines
    assert "today alice total 3 of 50 0.16" in lines
    assert "today bob nano-banana-1 default 1 -" in lines
    assert "today bob total 1 of 50 0.00 (+1 unpriced)" in lines
    assert sum(line.startswith("month") for line in lines) == 5

    args = [command, "usage", "--json", "--tenant", "alice"]
    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["unit"] == "USD"
    [alice] = report["today"]["tenants"]
    assert (alice["tenant"], alice["images"], alice["cost"], alice["daily_limit"]) == ("alice", 3, 0.16, 50)
    assert [(x["model"], x["resolution"], x["images"]) for x in alice["lines"]] == [
        ("nano-banana-2", "1K", 1),
        ("nano-banana-2", "2K", 2),
    ]
    assert report["month"]["images"] == 3
