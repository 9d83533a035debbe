"""What guards the streamable-HTTP transport: the bearer token every client sends, and DNS-rebinding protection.

Every HTTP server requires a bearer token, as Jupyter does: the one configured (``NANO_BANANA_HTTP_TOKEN``, or
the file named by ``NANO_BANANA_HTTP_TOKEN_FILE`` / ``--auth-token-file``), or else one made on the first
start and kept in the data folder (mode 600 from the moment the file exists) for the next. Only ``--no-auth``
on a loopback address serves without one, for local tools that cannot send headers. With
``NANO_BANANA_OAUTH_ISSUER`` the bearer token is instead an access token of the team's identity provider
(:mod:`nano_banana_mcp.mcp_server.oauth`); it excludes every other kind.

On loopback, the Host and Origin headers must name this server (a foreign Host is answered 421, a foreign
Origin 403). The SDK turns that on by itself only for the exact strings ``127.0.0.1``, ``localhost`` and
``::1`` (mcp 2.3, ``mcp/server/lowlevel/server.py``, ``streamable_http_app``), so the settings are built
here from the normalised host, for every spelling of loopback.

The token files themselves (reading, making, the tenants' tokens file, reserved tenant names) are
:mod:`nano_banana_mcp.mcp_server.tokens`.
"""

from __future__ import annotations

import shlex
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING

from nano_banana_mcp.config import Settings, is_loopback, normal_host
from nano_banana_mcp.errors import ConfigError
from nano_banana_mcp.mcp_server.tokens import (
    TOKEN_FILE,
    TOKEN_FILE_SETTING,
    TOKEN_SETTING,
    TOKENS_FILE_SETTING,
    TenantToken,
    checked_token,
    kept_token,
    read_token_file,
    read_tokens_file,
)
from nano_banana_mcp.sockets import listening_socket
from nano_banana_mcp.tasks import DEFAULT_TENANT

if TYPE_CHECKING:
    from mcp.server.transport_security import TransportSecuritySettings
    from pydantic import SecretStr

    from nano_banana_mcp.mcp_server.oauth import OAuthConfig

__all__ = [
    "HttpAuth",
    "TenantToken",  # re-exported: app.py imports it from here
    "bind",
    "http_auth",
    "tenant_of",
    "transport_security",
]

_NO_AUTH = "--no-auth"


@dataclass(frozen=True)
class HttpAuth:
    """The bearer token HTTP clients must send (None only with ``--no-auth``) and where it came from."""

    token: SecretStr | None
    source: str
    """``NANO_BANANA_HTTP_TOKEN``, ``--auth-token``, the path of the token file, or ``--no-auth``."""
    made_here: bool = False
    """The token was made by this server and kept in the data folder: the start-up line shows it."""
    tenants: tuple[TenantToken, ...] = ()
    """With a tokens file (``token`` is then None): each tenant's token; a request is its token's tenant's."""
    oauth: OAuthConfig | None = None
    """With an identity provider (``token`` is then None): its JWT access tokens; the tenant is their subject."""

    @property
    def tenant_keys(self) -> dict[str, SecretStr]:
        """The Monet key of each tenant that has its own (a tokens file's third field); the others use the server's."""
        return {entry.tenant: entry.key for entry in self.tenants if entry.key is not None}

    @property
    def required(self) -> bool:
        """Whether clients must send a bearer token (false only with ``--no-auth``)."""
        return self.token is not None or bool(self.tenants) or self.oauth is not None

    def start_message(self, url: str) -> str:
        """What the server prints on stderr at start: where it is, and the exact line that connects a client.

        The token itself is shown only when this server made it; a token the user set is named by where it is.
        """
        command = f"claude mcp add -s user --transport http nano-banana {url}"
        if self.oauth is not None:
            return (
                f"nano-banana MCP server on {url}; clients sign in through {self.oauth.issuer} (audience "
                f"{self.oauth.audience}, tenant claim {self.oauth.tenant_claim}). Connect with:\n  {command}"
            )
        if self.tenants:
            own = len(self.tenant_keys)
            keys = f", {own} with {'its' if own == 1 else 'their'} own Monet key" if own else ""
            return (
                f"nano-banana MCP server on {url} for {len(self.tenants)} tenant{'s' * (len(self.tenants) != 1)} "
                f"({self.source}{keys}); each client sends its tenant's bearer token. Connect with:\n"
                f'  {command} --header "Authorization: Bearer <your tenant\'s token>"'
            )
        if self.token is None:
            return f"nano-banana MCP server on {url}, without authentication ({_NO_AUTH}). Connect with:\n  {command}"
        if self.made_here:
            where, value = f"kept in {self.source}", self.token.get_secret_value()
        elif self.source == "NANO_BANANA_HTTP_TOKEN":
            where, value = f"from {self.source}", "$NANO_BANANA_HTTP_TOKEN"
        elif self.source.startswith("-"):
            where, value = f"from {self.source}", f"<the {self.source} value>"
        else:
            where, value = f"in {self.source}", f"$(cat {shlex.quote(self.source)})"
        return (
            f"nano-banana MCP server on {url}; clients send the bearer token {where}. Connect with:\n"
            f'  {command} --header "Authorization: Bearer {value}"'
        )


def http_auth(settings: Settings, host: str, *, no_auth: bool = False) -> HttpAuth:
    """The token the HTTP transport on ``host`` requires: configured, or made once and kept in the data folder.

    ``no_auth`` serves without one, only on loopback and only when no token is configured.
    """
    given = (
        (TOKEN_SETTING, settings.http_token),
        (TOKEN_FILE_SETTING, settings.http_token_file),
        (TOKENS_FILE_SETTING, settings.http_tokens_file),
    )
    configured = [setting for setting, value in given if value is not None]  # an empty token is set, and refused
    oauth = None
    if settings.oauth_issuer is not None or settings.oauth_audience is not None:  # it loads the SDK: only when asked
        from nano_banana_mcp.mcp_server.oauth import ISSUER_SETTING, oauth_config  # noqa: PLC0415 - no cycle at import

        oauth = oauth_config(settings)
    if oauth is not None:
        if no_auth or configured:
            other = _NO_AUTH if no_auth else configured[0]
            raise ConfigError(
                f"Both {ISSUER_SETTING} and {other} are set: with an identity provider, clients sign in there and "
                "send its access tokens; unset the other."
            )
        return HttpAuth(token=None, source=ISSUER_SETTING, oauth=oauth)
    if no_auth:
        if not is_loopback(host):
            raise ConfigError(
                f"Refusing --no-auth on {host}: anyone who can reach that address could read your images and "
                "generate on your account. Serve on 127.0.0.1, or drop --no-auth (a bearer token is then required)."
            )
        if configured:
            raise ConfigError(f"--no-auth and a bearer token ({configured[0]}) are both set: choose one.")
        return HttpAuth(token=None, source=_NO_AUTH)
    if len(configured) > 1:
        raise ConfigError(f"Both {configured[0]} and {configured[1]} are set: set only one of them.")
    if settings.http_tokens_file is not None:
        path = settings.http_tokens_file
        return HttpAuth(token=None, source=str(path), tenants=read_tokens_file(path))
    if settings.http_token is not None:
        token = checked_token(settings.http_token.get_secret_value(), TOKEN_SETTING)
        return HttpAuth(token=token, source="NANO_BANANA_HTTP_TOKEN")
    if settings.http_token_file is not None:
        path = settings.http_token_file
        return HttpAuth(token=read_token_file(path, f"{path} ({TOKEN_FILE_SETTING})", private=False), source=str(path))
    path = settings.data_dir / TOKEN_FILE
    return HttpAuth(token=kept_token(path), source=str(path), made_here=True)


def tenant_of() -> str:
    """The tenant of the request being served: its bearer token's (the verifier puts it in the access token's
    ``subject``), else ``default`` (stdio, a single token, no auth).

    Read from the SDK's per-request auth context and handed to the service explicitly, never kept anywhere.
    """
    from mcp.server.auth.middleware.auth_context import get_access_token  # noqa: PLC0415 - see transport_security

    token = get_access_token()
    return token.subject if token is not None and token.subject else DEFAULT_TENANT


def transport_security(host: str, port: int) -> TransportSecuritySettings:
    """DNS-rebinding protection for a server on ``host:port``.

    On loopback (any spelling), the Host header must be this server's ``host:port`` or another loopback name
    with that port, and an Origin header the matching ``http://`` origin. Off loopback the names clients use
    are not known here, so the check is off and the bearer token guards the server.
    """
    # The SDK is imported where it is used, not with this module: a start-up refused for its token or tokens file
    # (http_auth) says so before the SDK is loaded (~0.7 s of CPU).
    from mcp.server.transport_security import TransportSecuritySettings  # noqa: PLC0415

    if not is_loopback(host):
        return TransportSecuritySettings(enable_dns_rebinding_protection=False)
    names = dict.fromkeys(
        f"[{name}]" if ":" in name else name
        for name in (normal_host(host), host.strip().strip("[]").lower(), "127.0.0.1", "localhost", "::1")
    )
    hosts = [f"{name}:{port}" for name in names]
    if port == 80:  # clients leave out the default port
        hosts += names
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=hosts,
        allowed_origins=[f"http://{h}" for h in hosts],
    )


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (0: a free port), so the app can be built for the port served."""
    host = normal_host(host)
    try:
        return listening_socket(host, port)
    except OSError as err:
        raise ConfigError(
            f"Cannot listen on {host} port {port}: {err.strerror or err}. Choose another --port."
        ) from err
