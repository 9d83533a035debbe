"""``nano-banana-mcp usage``: what was spent today (UTC) and this month, per tenant, by model and resolution, as a
table or JSON, read from the ledger (the same count as the daily limit's)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from nano_banana_mcp.cli.arguments import Parser
from nano_banana_mcp.cli.exits import EXIT_OK
from nano_banana_mcp.cli.settings import add_settings_flags
from nano_banana_mcp.terminal import printable

if TYPE_CHECKING:
    from nano_banana_mcp.config import Settings
    from nano_banana_mcp.spend.usage import PeriodUsage, UsageReport

__all__ = ["add_parser", "render", "run"]


def add_parser(sub: argparse._SubParsersAction[Parser]) -> None:
    usage = sub.add_parser("usage", help="images (and cost) today and this month, per tenant, model and resolution")
    usage.add_argument("--tenant", help="only this tenant (default: every tenant)")
    usage.add_argument("--json", action="store_true", help="print JSON")
    add_settings_flags(usage)


async def run(settings: Settings, args: argparse.Namespace) -> int:
    """Print the usage report of every tenant (or one)."""
    from nano_banana_mcp.mcp_server.tokens import read_tokens_file  # noqa: PLC0415
    from nano_banana_mcp.runtime import open_service  # noqa: PLC0415

    limits: dict[str, int] = {}
    if settings.http_tokens_file is not None:  # the tenants' own limits, as the server applies them
        tenants = read_tokens_file(settings.http_tokens_file)
        limits = {t.tenant: t.daily_images for t in tenants if t.daily_images is not None}
    async with open_service(settings, tenant_limits=limits) as service:
        report = await service.usage(tenant=args.tenant)
    print(report.model_dump_json(indent=2) if args.json else render(report))
    return EXIT_OK


def render(report: UsageReport) -> str:
    """The report as a table: one line per tenant, model and resolution, and a total per tenant and period."""
    head = (
        f"Usage on {report.at:%Y-%m-%d %H:%M} UTC (today resets {report.resets_at:%Y-%m-%d %H:%M} UTC); "
        f"cost in {report.unit}"
    )
    rows: list[tuple[str, ...]] = [("period", "tenant", "model", "resolution", "images", "cost")]
    for period in (report.today, report.month):
        rows += _rows(period)
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    table = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines = [head, "", *table]
    return "\n".join(printable(line) for line in lines)


def _rows(period: PeriodUsage) -> list[tuple[str, ...]]:
    name = "today" if period.period == "today" else f"month ({period.since:%Y-%m})"
    if not period.tenants:
        return [(name, "-", "-", "-", "0", _cost(0.0 if period.cost is not None else None))]
    rows: list[tuple[str, ...]] = []
    for tenant in period.tenants:
        for line in tenant.lines:
            rows.append((name, tenant.tenant, line.model, line.resolution, str(line.images), _cost(line.cost)))
        limit = f" of {tenant.daily_limit}" if tenant.daily_limit is not None else ""
        unpriced = f" (+{tenant.unpriced} unpriced)" if tenant.unpriced else ""
        rows.append((name, tenant.tenant, "total", "", f"{tenant.images}{limit}", _cost(tenant.cost) + unpriced))
    return rows


def _cost(cost: float | None) -> str:
    return "-" if cost is None else f"{cost:.2f}"
