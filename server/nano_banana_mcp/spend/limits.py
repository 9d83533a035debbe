"""The daily image limit: ``NANO_BANANA_DAILY_IMAGE_LIMIT`` images per tenant per UTC day, counted from the ledger.

The count is the tenant's rows created since midnight UTC that may be paid for: every task requested, finished or
not, except a create the API refused (a failed row it never named: nothing was made). Being read from the ledger,
it holds across restarts and is shared by every replica on one PostgreSQL ledger.

A call that would pass the limit is refused before anything is uploaded or paid, in one line that names the limit
and when it resets. Within one process a tenant's check and the writing of its rows take turns, so two calls at once
cannot both pass the last images; replicas check the shared count, and two calls on two replicas in the same few
milliseconds could each pass it (docs/deploy.md says so).

Per-tenant limits: a tokens file line may end with ``daily_images=N`` (``mcp_server.tokens``); that tenant's limit
is then N whatever the server-wide one is.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import anyio

from nano_banana_mcp.errors import InvalidRequest

if TYPE_CHECKING:  # spend is a leaf: the tasks package imports it
    from nano_banana_mcp.tasks.store import LedgerStore

__all__ = ["LIMIT_SETTING", "DailyLimits", "LimitReached", "day_start", "month_start", "resets_at"]

LIMIT_SETTING = "NANO_BANANA_DAILY_IMAGE_LIMIT"
_DEFAULT_TENANT = "default"  # tasks.records.DEFAULT_TENANT: stdio's, the CLI's, a single token's


def now() -> datetime:
    return datetime.now(UTC)


class LimitReached(InvalidRequest):
    """A call would pass its tenant's daily image limit: refused before anything was paid."""


def day_start(moment: datetime) -> datetime:
    """Midnight UTC of ``moment``'s day: where a day's count starts."""
    return moment.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def month_start(moment: datetime) -> datetime:
    """Midnight UTC of the first of ``moment``'s month."""
    return day_start(moment).replace(day=1)


def resets_at(moment: datetime) -> datetime:
    """When the day of ``moment`` ends and its count starts again from 0."""
    return day_start(moment) + timedelta(days=1)


def _in(delta: timedelta) -> str:
    minutes = max(1, int(delta.total_seconds() // 60))
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min"


@dataclass
class DailyLimits:
    """The server-wide limit and the tenants' own; ``on_refused`` hears of each refusal (metrics)."""

    default: int | None = None
    per_tenant: Mapping[str, int] = field(default_factory=dict)
    on_refused: Callable[[str], None] | None = None
    _turns: dict[str, anyio.Lock] = field(default_factory=dict, init=False, repr=False)

    def of(self, tenant: str) -> int | None:
        """The tenant's limit (its own, else the server's), or None for no limit."""
        return self.per_tenant.get(tenant, self.default)

    async def used(self, ledger: LedgerStore, tenant: str, at: datetime | None = None) -> int:
        """Images the tenant requested today (UTC), from the ledger."""
        return await ledger.images_since(day_start(at or now()), tenant=tenant)

    async def check(self, ledger: LedgerStore, tenant: str, images: int) -> None:
        """Refuse (:class:`LimitReached`) a call of ``images`` images that would pass the tenant's limit today."""
        limit = self.of(tenant)
        if limit is None or images <= 0:
            return
        at = now()
        used = await self.used(ledger, tenant, at)
        if used + images <= limit:
            return
        if self.on_refused is not None:
            self.on_refused(tenant)
        who = "" if tenant == _DEFAULT_TENANT else f" for tenant {tenant}"
        left = max(0, limit - used)
        fewer = f"ask for at most {left}, or wait" if left else "wait"
        raise LimitReached(
            f"Refused before anything was paid: the daily limit{who} is {_images(limit)} ({LIMIT_SETTING}), "
            f"{used} {'is' if used == 1 else 'are'} used today and this call asks for {images}. It resets at "
            f"{resets_at(at):%Y-%m-%d %H:%M} UTC (in {_in(resets_at(at) - at)}); {fewer}."
        )

    @asynccontextmanager
    async def turn(self, ledger: LedgerStore, tenant: str, images: int) -> AsyncIterator[None]:
        """Check again and hold the tenant's turn while its rows are written: within this process, two calls cannot
        both pass the last images."""
        if self.of(tenant) is None or images <= 0:
            yield
            return
        lock = self._turns.setdefault(tenant, anyio.Lock())
        async with lock:
            await self.check(ledger, tenant, images)
            yield


def _images(n: int) -> str:
    return f"{n} image" if n == 1 else f"{n} images"
