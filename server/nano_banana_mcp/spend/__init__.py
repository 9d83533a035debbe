"""Know and cap what the server spends: prices, the daily image limit, and usage (issue 22).

:class:`Spend` is what the service holds: the prices (``NANO_BANANA_PRICES``) and the daily limits
(``NANO_BANANA_DAILY_IMAGE_LIMIT``, and the tenants' own from the tokens file). Everything is counted from the
ledger's rows, so it holds across restarts and is shared by replicas.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from nano_banana_mcp.config import Settings
from nano_banana_mcp.spend.limits import LIMIT_SETTING, DailyLimits, LimitReached
from nano_banana_mcp.spend.prices import DEFAULT_RESOLUTION, Prices, load_prices
from nano_banana_mcp.spend.usage import Made, UsageReport, made_by, paid, usage_report, with_made

__all__ = [
    "DEFAULT_RESOLUTION",
    "LIMIT_SETTING",
    "DailyLimits",
    "LimitReached",
    "Made",
    "Prices",
    "Spend",
    "UsageReport",
    "load_prices",
    "made_by",
    "paid",
    "usage_report",
    "with_made",
]


@dataclass
class Spend:
    """The prices and the daily limits of one server."""

    prices: Prices = field(default_factory=Prices)
    limits: DailyLimits = field(default_factory=DailyLimits)

    @classmethod
    def of(
        cls,
        settings: Settings,
        tenant_limits: Mapping[str, int] | None = None,
        on_refused: Callable[[str], None] | None = None,
    ) -> Spend:
        """From the settings (the prices file is read now: a bad one fails at start) and the tenants' own limits."""
        limits = DailyLimits(settings.daily_image_limit, dict(tenant_limits or {}), on_refused)
        return cls(prices=load_prices(settings.prices), limits=limits)
