"""What one image costs: ``NANO_BANANA_PRICES``, a small TOML file in the operator's own unit.

::

    unit = "USD"                 # any name: USD, EUR, credits...

    [nano-banana-2]
    1K = 0.04
    2K = 0.06
    4K = 0.12
    default = 0.04               # a call that leaves resolution out

    [nano-banana-1]
    default = 0.03               # a model without a resolution option

A model or resolution the file leaves out has no known cost: results and usage then count it in images only, and say
so. Without the file everything is counted in images. A file that cannot be read, or that names a model or resolution
the catalogue does not know (a typo would price nothing), is refused at start, before anything is paid.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from nano_banana_mcp import catalog
from nano_banana_mcp.errors import ConfigError

__all__ = ["DEFAULT_RESOLUTION", "PRICES_SETTING", "Prices", "load_prices"]

PRICES_SETTING = "NANO_BANANA_PRICES"
DEFAULT_RESOLUTION = "default"
"""How a call that leaves ``resolution`` out (or a model without the option) is named in prices and usage."""
_MAX_BYTES = 64 * 1024


@dataclass(frozen=True)
class Prices:
    """The price of one image by model and resolution (``default``: none given), in ``unit``; empty: no file."""

    unit: str | None = None
    table: dict[str, dict[str, float]] = field(default_factory=dict)

    def of(self, model: str, resolution: str | None) -> float | None:
        """The price of one image, or None when it is not known."""
        return self.table.get(model, {}).get(resolution or DEFAULT_RESOLUTION)

    def cost(self, model: str, resolution: str | None, images: int) -> float | None:
        """What ``images`` images cost (0 images cost 0), or None when the price is not known."""
        if images == 0:
            return 0.0
        price = self.of(model, resolution)
        return None if price is None else round(price * images, 6)


def load_prices(path: Path | None) -> Prices:
    """The prices in ``path`` (None: no file, everything in images); ConfigError naming the file and the problem."""
    if path is None:
        return Prices()
    where = f"the prices file {path} ({PRICES_SETTING})"
    try:
        with path.open("rb") as file:
            data = file.read(_MAX_BYTES + 1)
    except OSError as err:
        raise ConfigError(f"Cannot read {where}: {err.strerror or err}. Fix the path, or unset it.") from err
    if len(data) > _MAX_BYTES:
        raise ConfigError(f"{where} is over {_MAX_BYTES // 1024} KB; it holds one price per model and resolution.")
    try:
        parsed = tomllib.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as err:
        raise ConfigError(f"{where} is not valid TOML ({err}); see docs/deploy.md for an example.") from err
    unit = parsed.pop("unit", None)
    if not isinstance(unit, str) or not unit.strip() or len(unit) > 20:
        raise ConfigError(f'{where} needs a unit of up to 20 characters, for example unit = "USD".')
    table: dict[str, dict[str, float]] = {}
    for model, prices in parsed.items():
        spec = catalog.MODELS.get(model)
        if spec is None:
            raise ConfigError(f"{where} names the model {model!r}; the models are {', '.join(catalog.MODELS)}.")
        if not isinstance(prices, dict):
            raise ConfigError(f"{where}: write [{model}] with one line per resolution, for example default = 0.04.")
        allowed = (*spec.resolutions, DEFAULT_RESOLUTION)
        table[model] = {}
        for resolution, price in prices.items():
            if resolution not in allowed:
                raise ConfigError(
                    f"{where}: {model} has no resolution {resolution!r}; give prices for {', '.join(allowed)}."
                )
            if isinstance(price, bool) or not isinstance(price, int | float) or not math.isfinite(price) or price < 0:
                raise ConfigError(f"{where}: the price of {model} {resolution} must be a number, 0 or more.")
            table[model][resolution] = float(price)
    return Prices(unit=unit.strip(), table=table)
