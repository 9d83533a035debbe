"""Shared helpers for the benchmarks: the emulator, a real server process, results files, statistics."""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from mcp import StdioServerParameters

KEY = "monet_bench"
RESULTS = Path(__file__).parent / "results"
COMMAND = str(Path(sys.executable).with_name("nano-banana-mcp"))


def server_env(base_url: str, work: Path | None = None, **extra: str) -> dict[str, str]:
    """Environment for a real `nano-banana-mcp` process against the emulator, files in a temp folder."""
    work = work or Path(tempfile.mkdtemp(prefix="nb-bench-"))
    return {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(work),
        "MONET_API_KEY": KEY,
        "MONET_BASE_URL": base_url,
        "NANO_BANANA_DATA_DIR": str(work / "data"),
        "NANO_BANANA_OUTPUT_DIR": str(work / "out"),
        **extra,
    }


def stdio_server(env: dict[str, str], *args: str) -> StdioServerParameters:
    return StdioServerParameters(command=COMMAND, args=list(args), env=env)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def summary_ms(values: list[float]) -> dict[str, float]:
    return {
        "median_ms": round(statistics.median(values) * 1000, 1),
        "p95_ms": round(percentile(values, 0.95) * 1000, 1),
        "min_ms": round(min(values) * 1000, 1),
        "max_ms": round(max(values) * 1000, 1),
        "n": len(values),
    }


def write(name: str, figures: dict[str, Any]) -> None:
    print(json.dumps(figures, indent=2))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(figures, indent=2) + "\n")


def write_labelled(name: str, label: str, figures: dict[str, Any], *, command: str, measure: str) -> None:
    """Keep ``figures`` under ``label`` in ``results/{name}.json`` beside the other labels' (before/after runs)."""
    path = RESULTS / f"{name}.json"
    recorded = json.loads(path.read_text()) if path.exists() else {}
    recorded[label] = figures
    recorded["command"] = command
    recorded["measure"] = measure
    print(json.dumps({label: figures}, indent=2))
    RESULTS.mkdir(exist_ok=True)
    path.write_text(json.dumps(recorded, indent=2) + "\n")
