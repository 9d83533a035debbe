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
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import secrets
import shlex
import socket
import stat
import unicodedata
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.transport_security import TransportSecuritySettings
from pydantic import SecretStr

from nano_banana_mcp.config import Settings, is_loopback, normal_host
from nano_banana_mcp.errors import ConfigError
from nano_banana_mcp.sockets import listening_socket
from nano_banana_mcp.tasks import DEFAULT_TENANT

if TYPE_CHECKING:
    from nano_banana_mcp.mcp_server.oauth import OAuthConfig

__all__ = [
    "TOKEN_FILE",
    "HttpAuth",
    "TenantToken",
    "bind",
    "http_auth",
    "read_tokens_file",
    "reserved_tenant",
    "tenant_of",
    "transport_security",
]

log = logging.getLogger(__name__)

TOKEN_FILE = "http-token"  # noqa: S105 - a file name
"""The token made on the first start, in the data folder."""

_TOKEN_SETTING = "NANO_BANANA_HTTP_TOKEN / --auth-token"  # noqa: S105 - a setting's name
_FILE_SETTING = "NANO_BANANA_HTTP_TOKEN_FILE / --auth-token-file"
_TENANTS_SETTING = "NANO_BANANA_HTTP_TOKENS_FILE / --auth-tokens-file"
_MAX_TENANTS_BYTES = 1024 * 1024
_TENANT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
_KEY_ENV_PREFIX = "MONET_"
"""A tokens file's third field may name only these variables: never another secret of the server's environment."""
_MIN_TOKEN_CHARS = 16
"""A tenant's token (written in the tokens file, not by its digest) has at least this many characters."""
_SHA256 = "sha256:"


@dataclass(frozen=True)
class TenantToken:
    """One tenant's bearer token, as the verifier compares it: the token's bytes, or (``hashed``) its SHA-256; and
    the tenant's own Monet key when its line names one (``key_env``, the environment variable it was read from)."""

    tenant: str
    secret: bytes = field(repr=False)
    hashed: bool = False
    key_env: str | None = None
    """The environment variable holding the tenant's own Monet API key (a third field), else None: the server's."""
    key: SecretStr | None = field(default=None, repr=False, compare=False)
    """That key, read when the file was read; never shown."""

    def matches(self, token: bytes, digest: bytes) -> bool:
        """Whether a presented token (and its SHA-256) is this one, in constant time."""
        return hmac.compare_digest(digest if self.hashed else token, self.secret)


_MAX_FILE_BYTES = 4096
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
        (_TOKEN_SETTING, settings.http_token),
        (_FILE_SETTING, settings.http_token_file),
        (_TENANTS_SETTING, settings.http_tokens_file),
    )
    configured = [setting for setting, value in given if value is not None]  # an empty token is set, and refused
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
        token = _checked(settings.http_token.get_secret_value(), _TOKEN_SETTING)
        return HttpAuth(token=token, source="NANO_BANANA_HTTP_TOKEN")
    if settings.http_token_file is not None:
        path = settings.http_token_file
        return HttpAuth(token=_read_token(path, f"{path} ({_FILE_SETTING})", private=False), source=str(path))
    path = settings.data_dir / TOKEN_FILE
    return HttpAuth(token=_kept_token(path), source=str(path), made_here=True)


def tenant_of() -> str:
    """The tenant of the request being served: its bearer token's (the verifier puts it in the access token's
    ``subject``), else ``default`` (stdio, a single token, no auth).

    Read from the SDK's per-request auth context and handed to the service explicitly, never kept anywhere.
    """
    token = get_access_token()
    return token.subject if token is not None and token.subject else DEFAULT_TENANT


_UNPRINTABLE = frozenset(("Cc", "Cf", "Zl", "Zp"))
"""Unicode categories of control, invisible-format and line-breaking characters."""


def reserved_tenant(name: str) -> str | None:
    """Why ``name`` may not be the tenant of a token (a tokens file's line, an OAuth claim), else None.

    ``default`` (in any case) is the tenant of stdio, the CLI and a single token: a token of that tenant would list
    and read what they made. An empty name, or one with control, invisible or line-breaking characters, could pass
    for another tenant in a log, a key or a ledger column.
    """
    if not name.strip():
        return "an empty tenant name"
    if name.strip().casefold() == DEFAULT_TENANT:
        return f"the reserved tenant {DEFAULT_TENANT!r} (that of stdio, the CLI and a single token)"
    if any(unicodedata.category(c) in _UNPRINTABLE for c in name):
        return "a tenant name with control or invisible characters"
    return None


def transport_security(host: str, port: int) -> TransportSecuritySettings:
    """DNS-rebinding protection for a server on ``host:port``.

    On loopback (any spelling), the Host header must be this server's ``host:port`` or another loopback name
    with that port, and an Origin header the matching ``http://`` origin. Off loopback the names clients use
    are not known here, so the check is off and the bearer token guards the server.
    """
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


_SET_ANOTHER = (
    "Set a long random one (for example the output of `python -c 'import secrets; print(secrets.token_urlsafe(32))'`), "
    "or set none and one is made for you."
)


def _checked(text: str, setting: str, fix: str = _SET_ANOTHER) -> SecretStr:
    """A token as a header can carry it; an empty or blank one is refused."""
    token = text.strip()
    if not token:
        raise ConfigError(f"The HTTP bearer token in {setting} is empty. {fix}")
    if not all(33 <= ord(c) < 127 for c in token):
        raise ConfigError(
            f"The HTTP bearer token in {setting} has spaces or characters an HTTP header cannot carry: use letters, "
            f"digits and - . _ ~ + / = only. {fix}"
        )
    return SecretStr(token)


def _read_capped(path: Path, limit: int) -> tuple[bytes, os.stat_result]:
    """A secrets file's bytes (at most ``limit`` + 1, so a caller can tell it is too long) and its status, both from
    the one descriptor that was opened."""
    with path.open("rb") as file:
        return file.read(limit + 1), os.fstat(file.fileno())


def _read_regular(path: Path, limit: int) -> tuple[bytes | None, os.stat_result]:
    """Like ``_read_capped``, but only from a regular file: the file is opened without blocking (a FIFO with no
    writer would otherwise hang the open) and its status taken from that descriptor; anything else reads as None."""
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_BINARY", 0)
    fd = os.open(path, flags)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            return None, info
        with os.fdopen(fd, "rb", closefd=False) as file:
            return file.read(limit + 1), info
    finally:
        os.close(fd)


def _kind(info: os.stat_result) -> str:
    """What a file that is not a regular one is, for a message."""
    kinds = (
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISFIFO, "a named pipe"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    )
    return next((name for test, name in kinds if test(info.st_mode)), "not a file")


def _read_token(path: Path, setting: str, *, private: bool) -> SecretStr:
    """The token in a file; ``private`` (the one we keep): refuse it if other users can read it, as they must not."""
    try:
        data, info = _read_capped(path, _MAX_FILE_BYTES)
    except OSError as err:
        raise ConfigError(f"Cannot read the HTTP bearer token in {setting}: {err.strerror or err}.") from err
    if len(data) > _MAX_FILE_BYTES:
        raise ConfigError(f"The HTTP bearer token in {setting} is over {_MAX_FILE_BYTES} bytes: it holds one token.")
    if os.name == "posix" and stat.S_ISREG(info.st_mode):
        shared = info.st_mode & 0o077 or info.st_uid != os.getuid()
        if private and shared:
            raise ConfigError(
                f"The HTTP bearer token file {path} is not yours alone (mode {stat.S_IMODE(info.st_mode):o}, owner "
                f"uid {info.st_uid}): other users of this machine may know it. Delete it (a new token is made at the "
                "next start), or make it yours with mode 600."
            )
        if info.st_mode & 0o077:
            log.warning("The HTTP bearer token file %s can be read by other users; `chmod 600` it.", path)
    fix = f"Delete {path}: a new token is made at the next start." if private else _SET_ANOTHER
    return _checked(data.decode("utf-8", errors="replace"), setting, fix)


def _kept_token(path: Path) -> SecretStr:
    """The token kept at ``path``, made there on the first start: the file is created mode 600, never wider."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        return _read_token(path, f"the file {path}", private=True)
    except OSError as err:
        raise ConfigError(f"Cannot keep the HTTP bearer token in {path}: {err.strerror or err}.") from err
    token = secrets.token_urlsafe(32)
    with os.fdopen(fd, "wb") as file:
        file.write(f"{token}\n".encode())
        file.flush()
        os.fsync(file.fileno())
    log.info("Made an HTTP bearer token, kept in %s", path)
    return SecretStr(token)


def read_tokens_file(path: Path) -> tuple[TenantToken, ...]:
    """The tenants of a tokens file: one ``tenant token [KEY_ENV_VAR]`` line each (the token may be
    ``sha256:<hex>``, its digest); blank lines and ``#`` comments are skipped. A third field names the environment
    variable holding the tenant's own Monet API key, read now: every paid call of that tenant uses it.

    A malformed line, a token shorter than 16 characters, a tenant or token given twice, a key variable that is not
    a ``MONET_*`` one or is unset or empty, or a file without tenants is a ConfigError naming the file and the line;
    so is a file other users may read or change (as ssh refuses such a private key: it says which ``chmod``) and
    anything but a regular file (a FIFO is refused, never waited on). No message ever shows a token or a key.
    """
    where = f"the tokens file {path} ({_TENANTS_SETTING})"
    try:
        data, info = _read_regular(path, _MAX_TENANTS_BYTES)
    except OSError as err:
        raise ConfigError(f"Cannot read {where}: {err.strerror or err}.") from err
    if data is None:
        raise ConfigError(f"{where} is not a regular file ({_kind(info)}): point the setting at the file itself.")
    if os.name == "posix" and info.st_mode & 0o077:  # as ssh refuses a private key others can read
        raise ConfigError(
            f"{where} can be read or changed by other users of this machine (mode {stat.S_IMODE(info.st_mode):o}): "
            f"run `chmod 600 {shlex.quote(str(path))}` and start the server again."
        )
    if len(data) > _MAX_TENANTS_BYTES:
        raise ConfigError(f"{where} is over {_MAX_TENANTS_BYTES // 1024} KB; it holds one line per tenant.")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{where} is not UTF-8 text (byte {err.start}).") from err
    entries: list[TenantToken] = []
    tenant_lines: dict[str, int] = {}
    digest_lines: dict[bytes, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields or fields[0].startswith("#"):
            continue
        at = f"{path} line {number}"
        entry = _tenant_line(fields, at)
        tenant = entry.tenant
        if tenant in tenant_lines:
            raise ConfigError(f"{at}: this tenant is already given on line {tenant_lines[tenant]}.")
        digest = entry.secret if entry.hashed else hashlib.sha256(entry.secret).digest()
        if digest in digest_lines:
            first = digest_lines[digest]
            raise ConfigError(f"{at}: this token is also the token of line {first}; each tenant needs its own.")
        tenant_lines[tenant] = number
        digest_lines[digest] = number
        entries.append(entry)
    if not entries:
        raise ConfigError(f"{where} holds no tenant: write one `tenant token` line per tenant.")
    return tuple(entries)


def _tenant_line(fields: list[str], at: str) -> TenantToken:
    """One line's ``tenant token [KEY_ENV_VAR]`` (its fields, split on white space); ``at`` names the file and line."""
    tenant = fields[0]
    if not _TENANT_NAME.fullmatch(tenant):
        raise ConfigError(
            f"{at}: the tenant name must be 1 to 64 letters, digits, '.', '_' or '-' (starting with a letter or "
            f"digit). Write each line as `tenant token`. ({_TENANTS_SETTING})"
        )
    if reserved_tenant(tenant) is not None:
        raise ConfigError(
            f"{at}: the tenant name {tenant!r} is reserved for stdio, the CLI and a single token (they share its "
            f"tasks); give this tenant another name. ({_TENANTS_SETTING})"
        )
    if len(fields) == 1:
        raise ConfigError(f"{at}: one field where `tenant token` was expected (no token).")
    if len(fields) > 3:
        raise ConfigError(
            f"{at}: {len(fields)} fields where `tenant token` or `tenant token KEY_ENV_VAR` was expected (a token has "
            "no spaces)."
        )
    entry = _tenant_token(tenant, fields[1], at)
    if len(fields) == 3:
        name = fields[2]
        return replace(entry, key_env=name, key=_tenant_key(name, at))
    return entry


def _tenant_key(name: str, at: str) -> SecretStr:
    """The tenant's own Monet API key, from the environment variable a line's third field names (never shown)."""
    if not _ENV_NAME.fullmatch(name) or name.startswith("monet_"):  # monet_...: a key pasted in, not its name
        raise ConfigError(
            f"{at}: the third field must be the name of an environment variable holding the tenant's own Monet API "
            "key (letters, digits and '_', not starting with a digit), never the key itself. Write the line as "
            f"`tenant token KEY_ENV_VAR`. ({_TENANTS_SETTING})"
        )
    if not name.startswith(_KEY_ENV_PREFIX):  # a line must not send another secret of the server's as a Monet key
        raise ConfigError(
            f"{at}: the third field names {name}, but a tenant's key may come only from a variable whose name starts "
            f"with {_KEY_ENV_PREFIX} (for example {_KEY_ENV_PREFIX}KEY_ALICE): set one for the server and name it here."
        )
    value = os.environ.get(name)
    if value is None or not value.strip():
        state = "is not set" if value is None else "is empty"
        raise ConfigError(
            f"{at}: the environment variable {name}, which should hold this tenant's own Monet API key, {state}. "
            "Set it for the server's process, or drop the third field so the tenant uses MONET_API_KEY."
        )
    key = value.strip()
    if not all(33 <= ord(c) < 127 for c in key):
        raise ConfigError(
            f"{at}: the Monet API key in the environment variable {name} has spaces or characters an HTTP header "
            "cannot carry; check its value."
        )
    return SecretStr(key)


def _tenant_token(tenant: str, token: str, at: str) -> TenantToken:
    """One line's token: ``sha256:`` and 64 hex digits (its digest), or the token itself as a header carries it."""
    if token[: len(_SHA256)].lower() == _SHA256:
        hexdigest = token[len(_SHA256) :]
        if not re.fullmatch(r"[0-9A-Fa-f]{64}", hexdigest):
            raise ConfigError(f"{at}: a sha256: token must be followed by 64 hex digits (its SHA-256 in hex).")
        return TenantToken(tenant, bytes.fromhex(hexdigest), hashed=True)
    if not all(33 <= ord(c) < 127 for c in token):
        raise ConfigError(
            f"{at}: the token has characters an HTTP header cannot carry: use letters, digits and - . _ ~ + / = only."
        )
    if len(token) < _MIN_TOKEN_CHARS:
        raise ConfigError(
            f"{at}: the token is shorter than {_MIN_TOKEN_CHARS} characters, short enough to guess. Give the tenant a "
            "long random one (for example the output of "
            "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`)."
        )
    return TenantToken(tenant, token.encode(), hashed=False)
