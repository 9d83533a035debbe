"""The daily image limit, counted from the ledger: refused before anything is paid, across a restart, across two
replicas on one PostgreSQL database, per tenant from the tokens file; and what each result says it made."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from nano_banana_mcp.catalog import GenerateRequest
from nano_banana_mcp.config import Settings
from nano_banana_mcp.emulator import Emulator
from nano_banana_mcp.errors import ConfigError, MonetError
from nano_banana_mcp.mcp_server.tokens import read_tokens_file
from nano_banana_mcp.runtime import open_service
from nano_banana_mcp.spend import LimitReached

pytestmark = pytest.mark.anyio

PRICES = """
unit = "USD"

[nano-banana-2]
1K = 0.04
2K = 0.06
default = 0.05

[nano-banana-1]
default = 0.03
"""


def with_prices(settings: Settings, tmp_path: Path, text: str = PRICES) -> Settings:
    path = tmp_path / "prices.toml"
    path.write_text(text)
    return settings.model_copy(update={"prices": path})


async def test_each_result_says_what_it_made_and_what_it_cost(
    settings: Settings, tmp_path: Path, emulator: Emulator
) -> None:
    """A call of 2 images at 2K says: 2 images, nano-banana-2, 2K, 0.12 USD; without prices, images only."""
    emulator.task_seconds = 0
    async with open_service(with_prices(settings, tmp_path)) as service:
        result = await service.generate(GenerateRequest(prompt="two", resolution="2K"), wait_seconds=30, count=2)
    assert result.status == "success"
    assert result.made == "2 images with nano-banana-2 at 2K, cost 0.12 USD"
    async with open_service(settings) as service:
        plain = await service.generate(GenerateRequest(prompt="one", model="nano-banana-1"), wait_seconds=30)
        got = await service.get(plain.task_id)
    assert plain.made == got.made == "1 image with nano-banana-1"


async def test_the_limit_refuses_before_anything_is_paid_and_holds_across_a_restart(
    settings: Settings, emulator: Emulator
) -> None:
    """3 images a day: 2 made, then (after a restart) a call of 2 is refused in one line naming the limit and its
    reset, with nothing created; a call of the 1 left passes."""
    emulator.task_seconds = 0
    limited = settings.model_copy(update={"daily_image_limit": 3})
    async with open_service(limited) as service:
        await service.generate(GenerateRequest(prompt="first"), wait_seconds=30, count=2)
    assert emulator.creates == 2
    async with open_service(limited) as restarted:
        with pytest.raises(LimitReached) as refused:
            await restarted.submit(GenerateRequest(prompt="too many"), count=2)
        assert emulator.creates == 2
        message = str(refused.value)
        assert "\n" not in message
        assert "daily limit is 3 images (NANO_BANANA_DAILY_IMAGE_LIMIT), 2 are used today" in message
        assert "this call asks for 2" in message
        assert "resets at" in message and "UTC (in " in message
        assert "ask for at most 1" in message
        result = await restarted.generate(GenerateRequest(prompt="the last one"), wait_seconds=30)
        assert result.status == "success"
        with pytest.raises(LimitReached, match="3 are used today"):
            await restarted.submit(GenerateRequest(prompt="no more"))
    assert emulator.creates == 3


async def test_a_create_the_api_refused_does_not_count(settings: Settings, emulator: Emulator) -> None:
    """A refused create made nothing: it does not use up the limit."""
    emulator.task_seconds = 0
    emulator.faults.refuse_creates = 100
    limited = settings.model_copy(update={"daily_image_limit": 1})
    async with open_service(limited) as service:
        with pytest.raises(MonetError):
            await service.generate(GenerateRequest(prompt="refused"), wait_seconds=30)
        emulator.faults.refuse_creates = 0
        result = await service.generate(GenerateRequest(prompt="made"), wait_seconds=30)
    assert result.status == "success"


async def test_a_request_sent_again_with_its_request_id_is_not_counted_twice(
    settings: Settings, emulator: Emulator
) -> None:
    """The same request_id collects the rows it wrote: at the limit, it is not refused."""
    emulator.task_seconds = 0
    limited = settings.model_copy(update={"daily_image_limit": 2})
    async with open_service(limited) as service:
        request = GenerateRequest(prompt="again")
        first = await service.generate(request, wait_seconds=30, count=2, request_id="r-1")
        again = await service.generate(request, wait_seconds=30, count=2, request_id="r-1")
    assert again.task_ids == first.task_ids
    assert emulator.creates == 2


async def test_two_replicas_on_one_database_share_the_count(
    settings: Settings, tmp_path: Path, database_url: str, emulator: Emulator
) -> None:
    """Two services on one PostgreSQL ledger (each its own folders, as two machines): what one made counts on the
    other, both ways."""
    emulator.task_seconds = 0

    def replica(name: str) -> Settings:
        return settings.model_copy(
            update={
                "database_url": SecretStr(database_url),
                "daily_image_limit": 3,
                "data_dir": tmp_path / name / "data",
                "output_dir": tmp_path / name / "out",
            }
        )

    async with open_service(replica("a")) as a, open_service(replica("b")) as b:
        await a.generate(GenerateRequest(prompt="on a"), wait_seconds=30, count=2)
        with pytest.raises(LimitReached, match="2 are used today and this call asks for 2"):
            await b.submit(GenerateRequest(prompt="on b"), count=2)
        await b.generate(GenerateRequest(prompt="on b"), wait_seconds=30)
        with pytest.raises(LimitReached, match="3 are used today"):
            await a.submit(GenerateRequest(prompt="on a again"))
    assert emulator.creates == 3


async def test_a_tenants_own_limit_from_the_tokens_file(settings: Settings, tmp_path: Path, emulator: Emulator) -> None:
    """`alice TOKEN daily_images=1` caps alice at 1 whatever the server-wide limit; bob keeps the server's."""
    emulator.task_seconds = 0
    path = tmp_path / "tokens"
    path.write_text("alice alice-token-0123456789 daily_images=1\nbob bob-token-0123456789abcdef\n")
    path.chmod(0o600)
    limits = {t.tenant: t.daily_images for t in read_tokens_file(path) if t.daily_images is not None}
    assert limits == {"alice": 1}
    async with open_service(settings.model_copy(update={"daily_image_limit": 5}), tenant_limits=limits) as service:
        await service.generate(GenerateRequest(prompt="alice's"), wait_seconds=30, tenant="alice")
        with pytest.raises(LimitReached, match="daily limit for tenant alice is 1 image \\("):
            await service.submit(GenerateRequest(prompt="alice's second"), tenant="alice")
        await service.generate(GenerateRequest(prompt="bob's"), wait_seconds=30, count=2, tenant="bob")
    assert emulator.creates == 3


@pytest.mark.parametrize("field", ["daily_images=lots", "daily_images=-1", "daily_images=1 daily_images=2"])
def test_a_malformed_daily_images_field_is_refused_naming_the_line(tmp_path: Path, field: str) -> None:
    path = tmp_path / "tokens"
    path.write_text(f"alice alice-token-0123456789 {field}\n")
    path.chmod(0o600)
    with pytest.raises(ConfigError, match=r"line 1: write the tenant's own daily image limit once") as refused:
        read_tokens_file(path)
    assert "alice-token" not in str(refused.value)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ('unit = "USD"\n[nano-banana-3]\ndefault = 1\n', "names the model 'nano-banana-3'"),
        ('unit = "USD"\n[nano-banana-2]\n8K = 1\n', "nano-banana-2 has no resolution '8K'"),
        ('unit = "USD"\n[nano-banana-2]\n1K = -1\n', "must be a number, 0 or more"),
        ("[nano-banana-2]\n1K = 1\n", "needs a unit"),
        ("unit = \n", "is not valid TOML"),
    ],
)
async def test_a_bad_prices_file_is_refused_at_start(
    settings: Settings, tmp_path: Path, emulator: Emulator, text: str, problem: str
) -> None:
    """A prices file that would price nothing (a typo) or cannot be read stops the start, before anything is paid."""
    with pytest.raises(ConfigError, match="NANO_BANANA_PRICES") as refused:
        async with open_service(with_prices(settings, tmp_path, text)):
            pass
    assert problem in str(refused.value)
    assert emulator.creates == 0
