"""Which Monet client a tenant's calls go through: the one on its own key (a tokens file's third field), else the
server's (``MONET_API_KEY``), else none."""

from __future__ import annotations

from collections.abc import Mapping

from nano_banana_mcp.errors import NO_KEY, ConfigError
from nano_banana_mcp.monet.client import MonetClient
from nano_banana_mcp.monet.retry import RetryPolicy

__all__ = ["MonetClients"]


class MonetClients:
    """The server's client (None without ``MONET_API_KEY``) and the clients of the tenants that have a key of their own.

    Every client talks to the same API over the process's one HTTP client, with the one retry policy; only the key
    differs. Tenants sharing a key share its client.
    """

    def __init__(self, default: MonetClient | None = None, tenants: Mapping[str, MonetClient] | None = None) -> None:
        self.default = default
        self._tenants = dict(tenants or {})

    def for_tenant(self, tenant: str) -> MonetClient | None:
        """The client for ``tenant``'s calls: its own key's, else the server's, else None (no key for it)."""
        return self._tenants.get(tenant, self.default)

    def require(self, tenant: str) -> MonetClient:
        """The client for ``tenant``'s calls (see :meth:`for_tenant`); without one, the ConfigError that says which
        setting gives it one."""
        client = self.for_tenant(tenant)
        if client is not None:
            return client
        if self._tenants:  # some tenants have keys of their own: this one has none, nor has the server
            raise ConfigError(
                f"No Monet API key for tenant {tenant!r}: it has none of its own in the tokens file, and "
                "MONET_API_KEY is not set. Set one of them and restart the server."
            )
        raise ConfigError(NO_KEY)

    @property
    def all(self) -> tuple[MonetClient, ...]:
        """Every distinct client, the server's first."""
        found = [self.default] if self.default is not None else []
        found += self._tenants.values()
        return tuple({id(client): client for client in found}.values())

    @property
    def base_url(self) -> str | None:
        """The API's URL (the same for every client), None when there is no client."""
        clients = self.all
        return clients[0].base_url if clients else None

    @property
    def retry(self) -> RetryPolicy:
        """The retry policy every client shares; ValueError when there is no client."""
        clients = self.all
        if not clients:
            raise ValueError("no Monet client: no key is set")
        return clients[0].retry

    def __repr__(self) -> str:
        own = ", ".join(sorted(self._tenants))
        return f"MonetClients(default={self.default!r}, own_keys=[{own}])"
