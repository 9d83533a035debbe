"""CPU of one ledger operation on SQLite, in process (no server, no emulator): what the shared SQL core costs.

    .venv/bin/python bench/ledger_ops.py [--label after] [--calls 3000]

A ledger in a temporary folder holds 200 rows and one call of 4 rows; each operation the service and the MCP layer
use is run ``--calls`` times after 100 to warm up, and its CPU (user + system of this process, the ledger's worker
thread included) is divided by the calls. ``find_call`` is the look-up behind every ``tasks/get``
(``tasks_poll.py``). Figures are written under ``--label`` in ``bench/results/ledger_ops.json`` (run it with
``--label before`` on the code before a change, then with ``--label after``).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from _common import write_labelled
from nano_banana_mcp.catalog import GenerateRequest
from nano_banana_mcp.tasks import Ledger, TaskRecord
from nano_banana_mcp.tasks.records import Call, now

ROWS = 200
WARM_UP = 100


async def measure(calls: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="nb-bench-") as folder:
        ledger = await Ledger(Path(folder) / "ledger.sqlite3", api_scope="offline").open()
        try:
            for i in range(ROWS):
                stamp = now()
                record = TaskRecord(
                    key=f"k{i}",
                    task_id=f"t{i}",
                    request=GenerateRequest(prompt=f"prompt {i}"),
                    phase="created",
                    created_at=stamp,
                    updated_at=stamp,
                )
                await ledger.add(record)
            await ledger.add_call(Call(id="c1", tenant="default", keys=[f"k{i}" for i in range(4)], created_at=now()))
            wanted = [f"t{i}" for i in range(50)]
            operations: dict[str, Callable[[], Awaitable[Any]]] = {
                "find_call": lambda: ledger.find_call("c1"),
                "find_by_task_id": lambda: ledger.find("t7"),
                "find_by_key": lambda: ledger.find("k7"),
                "get": lambda: ledger.get("k7"),
                "recent_20": lambda: ledger.recent(20),
                "count": ledger.count,
                "known_task_ids_50": lambda: ledger.known_task_ids(wanted),
                "cancel_call": lambda: ledger.cancel_call("c1", now()),
                "remember_upload": lambda: ledger.remember_upload("sha", "https://example.invalid/u", now()),
            }
            figures: dict[str, float] = {}
            for name, operation in operations.items():
                for _ in range(WARM_UP):
                    await operation()
                start = time.process_time()
                for _ in range(calls):
                    await operation()
                figures[f"{name}_cpu_us"] = round(1e6 * (time.process_time() - start) / calls, 1)
            return figures
        finally:
            await ledger.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--label", default="after", help="where the figures go in the results file")
    parser.add_argument("--calls", type=int, default=3000, help="calls of each operation")
    args = parser.parse_args()
    figures = asyncio.run(measure(args.calls))
    write_labelled(
        "ledger_ops",
        args.label,
        figures,
        command=".venv/bin/python bench/ledger_ops.py --label LABEL",
        measure="CPU microseconds of one SQLite ledger operation, in process, 200 rows",
    )


if __name__ == "__main__":
    main()
