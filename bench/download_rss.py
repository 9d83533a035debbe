"""A download streams to disk: peak memory does not grow with the file's size.

    .venv/bin/python bench/download_rss.py

Each size runs in a fresh process that downloads one file from the emulator with the real client
(`MonetClient.download`) and reports its peak RSS (VmHWM, Linux) before and after. Files are random
bytes uploaded to the emulator (incompressible), from 1 MB to 20 MB (a 4K PNG is a few MB).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import httpx

from _common import KEY, write
from nano_banana_mcp.emulator import Emulator, serve_in_thread

CHILD = """
import sys, anyio, httpx
from pathlib import Path
from pydantic import SecretStr
from nano_banana_mcp.monet import MonetClient

def hwm():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM"):
            return int(line.split()[1])

async def main(url, base, dest):
    async with httpx.AsyncClient() as http:
        client = MonetClient(http, base_url=base, api_key=SecretStr("k"))
        before = hwm()
        got = await client.download(url, Path(dest), max_bytes=10**9)
        print(before, hwm(), got.size)

anyio.run(main, *sys.argv[1:])
"""


def main() -> None:
    emulator = Emulator(api_key=KEY)
    figures: dict[str, dict[str, float]] = {}
    with serve_in_thread(emulator) as base_url, tempfile.TemporaryDirectory() as tmp:
        for megabytes in (1, 5, 20):
            data = os.urandom(megabytes * 1024 * 1024 - 1024)
            uploaded = httpx.post(
                f"{base_url}/api/v1/files",
                headers={"Authorization": f"Bearer {KEY}"},
                files={"file": ("blob.png", data, "image/png")},
                timeout=60,
            ).json()
            out = subprocess.run(
                [sys.executable, "-c", CHILD, uploaded["url"], base_url, str(Path(tmp) / f"{megabytes}.bin")],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.split()
            before, after, size = (int(x) for x in out)
            figures[f"{megabytes}MB"] = {
                "file_bytes": size,
                "peak_rss_before_mb": round(before / 1024, 1),
                "peak_rss_after_mb": round(after / 1024, 1),
                "growth_mb": round((after - before) / 1024, 1),
            }
    write("download_rss", figures)
    print(json.dumps({k: v["growth_mb"] for k, v in figures.items()}))


if __name__ == "__main__":
    main()
