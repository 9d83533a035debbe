"""Which key a tenant's calls go out on, and what a tenant without one is told."""

from __future__ import annotations

import httpx
import pytest
from pydantic import SecretStr

from nano_banana_mcp.errors import NO_KEY, ConfigError
from nano_banana_mcp.monet import MonetClient, MonetClients


def _client(key: str) -> MonetClient:
    return MonetClient(httpx.AsyncClient, base_url="http://127.0.0.1:9", api_key=SecretStr(key))


def test_a_tenant_with_a_key_of_its_own_uses_it_and_the_others_the_servers() -> None:
    server, carol = _client("monet_server"), _client("monet_carol")
    clients = MonetClients(server, {"carol": carol})
    assert clients.require("carol") is carol
    assert clients.require("dave") is server


def test_no_key_anywhere_names_monet_api_key_and_offline() -> None:
    with pytest.raises(ConfigError) as raised:
        MonetClients(None).require("default")
    assert str(raised.value) == NO_KEY
    assert "MONET_API_KEY" in NO_KEY and "--offline" in NO_KEY


def test_a_tenant_without_a_key_is_told_which_settings_give_it_one() -> None:
    clients = MonetClients(None, {"carol": _client("monet_carol")})
    with pytest.raises(ConfigError, match=r"No Monet API key for tenant 'dave'.*tokens file.*MONET_API_KEY"):
        clients.require("dave")
