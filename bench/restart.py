"""How fast a restarted server saves an orphan: SIGKILL a `generate` mid-task, start a server, time the file.

    .venv/bin/python bench/restart.py [--runs 5]

Each run: a real `nano-banana-mcp generate` process creates a task against the emulator and is killed
(SIGKILL) once the API has it; when the task has finished at the API, a new server process is spawned
on the same data dir and the time from the spawn to the image on disk is taken (no tool is called; the
sweep interval is set to 60 s, so only the start-up sweep can find the orphan). The server's own
start-up (importing the SDK, ~0.5 s here) is part of the figure. Goal: median <= 2 s. One create per
task is checked on every run.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from _common import COMMAND, KEY, server_env, write
from nano_banana_mcp.emulator import Emulator, serve_in_thread


def wait_for(condition: Callable[[], object], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError
        time.sleep(0.005)


def images(out: Path) -> list[Path]:
    return list(out.glob("*.png")) if out.exists() else []


def one_run(emulator: Emulator, base_url: str) -> float:
    emulator.reset()
    emulator.task_seconds = 0.3
    work = Path(tempfile.mkdtemp(prefix="nb-restart-"))
    env = server_env(base_url, work, NANO_BANANA_SWEEP_INTERVAL="60")
    proc = subprocess.Popen([COMMAND, "generate", "orphan"], env=env, stdout=subprocess.DEVNULL)
    try:
        wait_for(lambda: emulator.creates == 1)
    finally:
        proc.kill()
        proc.wait()
    time.sleep(0.5)  # finished at the API; only the download is left
    assert not images(work / "out")
    started = time.monotonic()
    server = subprocess.Popen([COMMAND], env=env, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    try:
        wait_for(lambda: images(work / "out"))
        took = time.monotonic() - started
    finally:
        server.kill()
        server.wait()
    assert emulator.creates == 1, emulator.creates
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    emulator = Emulator(api_key=KEY, task_seconds=0.3, stream_interval=0.05)
    with serve_in_thread(emulator) as base_url:
        seconds = [one_run(emulator, base_url) for _ in range(args.runs)]
    write(
        "restart",
        {
            "orphan_saved_after_restart_s": {
                "median": round(statistics.median(seconds), 3),
                "min": round(min(seconds), 3),
                "max": round(max(seconds), 3),
                "runs": [round(s, 3) for s in seconds],
            },
            "creates_per_task": 1,
        },
    )


if __name__ == "__main__":
    main()
