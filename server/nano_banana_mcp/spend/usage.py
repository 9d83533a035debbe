"""What was spent: each result's own (:class:`Made`), and a period's per tenant, model and resolution
(:class:`UsageReport`), both counted from the ledger's rows as the daily limit counts them.

An image is one task (each task makes one image, and is one charge); a create the API refused made nothing and
counts for nothing. With ``NANO_BANANA_PRICES`` every line also has its cost; an image whose price the file does not
give is counted in ``unpriced``, never guessed.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Literal, TypeVar

from pydantic import BaseModel, Field

from nano_banana_mcp.spend.limits import DailyLimits, day_start, month_start, now, resets_at
from nano_banana_mcp.spend.prices import DEFAULT_RESOLUTION, Prices

if TYPE_CHECKING:  # spend is a leaf: the tasks package imports it
    from nano_banana_mcp.tasks.records import TaskRecord
    from nano_banana_mcp.tasks.results import TaskResult
    from nano_banana_mcp.tasks.store import LedgerStore

__all__ = [
    "Made",
    "PeriodUsage",
    "TenantUsage",
    "UsageLine",
    "UsageReport",
    "made_by",
    "paid",
    "usage_report",
    "with_made",
]


_R = TypeVar("_R", bound="TaskResult")


def paid(record: TaskRecord) -> bool:
    """Whether the row may be paid for: all but a create the API refused (a failed row it never named)."""
    return not (record.phase == "failed" and record.task_id is None)


class Made(BaseModel):
    """What a call made, or is making: its images (one per task, each paid for), model, resolution and cost."""

    images: int
    model: str
    resolution: str = Field(description="'default' when not given")
    cost: float | None = Field(default=None, description="In unit; null without a price")
    unit: str | None = None

    def line(self) -> str:
        """What a result says (its ``made``): '2 images with nano-banana-2 at 2K, cost 0.12 USD'."""
        at = "" if self.resolution == DEFAULT_RESOLUTION else f" at {self.resolution}"
        cost = f", cost {self.cost:g} {self.unit}" if self.cost is not None and self.unit else ""
        return f"{self.images} image{'s' * (self.images != 1)} with {self.model}{at}{cost}"


def made_by(records: Sequence[TaskRecord], prices: Prices, *, images: int | None = None) -> Made:
    """What these rows of one call (one model and resolution) made: ``images`` of them, or those :func:`paid`."""
    request = records[0].request
    images = sum(paid(r) for r in records) if images is None else images
    resolution = request.resolution or DEFAULT_RESOLUTION
    cost = prices.cost(request.model, request.resolution, images)
    return Made(images=images, model=request.model, resolution=resolution, cost=cost, unit=prices.unit)


def with_made(
    outcome: Callable[[Sequence[TaskRecord], Sequence[_R]], _R],
    records: Sequence[TaskRecord],
    results: Sequence[_R],
    prices: Prices,
) -> _R:
    """A call's one result (``outcome`` of its rows and their results) with what it made (``made``): its tasks but
    those whose create the API refused (the rows may be as they were at submit, so the refusals are read off the
    results, as ``tasks.results.outcome`` reads them)."""
    refused = sum(r.status == "failed" and r.task_id == row.key for r, row in zip(results, records, strict=True))
    made = made_by(records, prices, images=len(results) - refused).line()
    return outcome(records, results).model_copy(update={"made": made})


class UsageLine(BaseModel):
    model: str
    resolution: str
    images: int
    cost: float | None = None


class TenantUsage(BaseModel):
    tenant: str
    images: int
    cost: float | None = None
    unpriced: int = Field(default=0, description="Images whose price is not known (not in cost)")
    lines: list[UsageLine]
    daily_limit: int | None = None


class PeriodUsage(BaseModel):
    period: Literal["today", "month"]
    since: datetime
    images: int
    cost: float | None = None
    tenants: list[TenantUsage]


class UsageReport(BaseModel):
    """Today (UTC) and this month, per tenant, by model and resolution."""

    unit: str = Field(description="The cost unit; 'images' without prices")
    at: datetime
    resets_at: datetime
    today: PeriodUsage
    month: PeriodUsage


def _period(
    name: Literal["today", "month"],
    since: datetime,
    rows: Iterable[tuple[str, str, str | None]],
    prices: Prices,
    limits: DailyLimits | None,
) -> PeriodUsage:
    counts: dict[str, dict[tuple[str, str], int]] = {}
    for tenant, model, resolution in rows:
        key = (model, resolution or DEFAULT_RESOLUTION)
        counted = counts.setdefault(tenant, {})
        counted[key] = counted.get(key, 0) + 1
    tenants = []
    for tenant in sorted(counts):
        lines = [
            UsageLine(model=m, resolution=r, images=n, cost=prices.cost(m, r, n))
            for (m, r), n in sorted(counts[tenant].items())
        ]
        priced = [line.cost for line in lines if line.cost is not None]
        tenants.append(
            TenantUsage(
                tenant=tenant,
                images=sum(line.images for line in lines),
                cost=round(sum(priced), 6) if prices.unit else None,
                unpriced=sum(line.images for line in lines if line.cost is None) if prices.unit else 0,
                lines=lines,
                daily_limit=limits.of(tenant) if limits is not None else None,
            )
        )
    costs = [t.cost for t in tenants if t.cost is not None]
    return PeriodUsage(
        period=name,
        since=since,
        images=sum(t.images for t in tenants),
        cost=round(sum(costs), 6) if prices.unit else None,
        tenants=tenants,
    )


def _model_and_resolution(request: str) -> tuple[str, str | None]:
    data = json.loads(request)
    return str(data.get("model", "unknown")), data.get("resolution")


async def usage_report(
    ledger: LedgerStore,
    prices: Prices,
    limits: DailyLimits | None = None,
    *,
    tenant: str | None = None,
    at: datetime | None = None,
) -> UsageReport:
    """Today's and this month's usage of one tenant (or, None, of every tenant), read from the ledger in one query."""
    at = at or now()
    today, month = day_start(at), month_start(at)
    rows = [
        (t, *_model_and_resolution(request), created)
        for t, request, created in await ledger.spent_since(month, tenant=tenant)
    ]
    return UsageReport(
        unit=prices.unit or "images",
        at=at,
        resets_at=resets_at(at),
        today=_period("today", today, ((t, m, r) for t, m, r, c in rows if c >= today), prices, limits),
        month=_period("month", month, ((t, m, r) for t, m, r, c in rows if c >= month), prices, None),
    )
