"""The bearer tokens of the HTTP transport, as files hold them: the single token (configured, or made on the first
start and kept in the data folder, mode 600 from the moment the file exists), a tenants' tokens file, and the
tenant names no token may carry.

Every file is read from the one descriptor that was checked; no message ever shows a token or a key.
:mod:`nano_banana_mcp.mcp_server.http` chooses among them and sets up the transport.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import re
import secrets
import shlex
import stat
import unicodedata
from dataclasses import dataclass, field, replace
from pathlib import Path

from pydantic import SecretStr

from nano_banana_mcp.errors import ConfigError
from nano_banana_mcp.tasks import DEFAULT_TENANT

__all__ = [
    "TOKENS_FILE_SETTING",
    "TOKEN_FILE",
    "TOKEN_FILE_SETTING",
    "TOKEN_SETTING",
    "TenantToken",
    "checked_token",
    "kept_token",
    "read_token_file",
    "read_tokens_file",
    "reserved_tenant",
]

log = logging.getLogger(__name__)

TOKEN_FILE = "http-token"  # noqa: S105 - a file name
"""The token made on the first start, in the data folder."""

TOKEN_SETTING = "NANO_BANANA_HTTP_TOKEN / --auth-token"  # noqa: S105 - a setting's name
TOKEN_FILE_SETTING = "NANO_BANANA_HTTP_TOKEN_FILE / --auth-token-file"  # noqa: S105 - a setting's name
TOKENS_FILE_SETTING = "NANO_BANANA_HTTP_TOKENS_FILE / --auth-tokens-file"
_MAX_TENANTS_BYTES = 1024 * 1024
_TENANT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
_KEY_ENV_PREFIX = "MONET_"
"""A tokens file's third field may name only these variables: never another secret of the server's environment."""
_MIN_TOKEN_CHARS = 16
"""A tenant's token (written in the tokens file, not by its digest) has at least this many characters."""
_SHA256 = "sha256:"
_DAILY_IMAGES = "daily_images="
"""A tokens file line's optional last field: the tenant's own daily image limit (``nano_banana_mcp.spend``)."""


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
    daily_images: int | None = None
    """The tenant's own daily image limit (a ``daily_images=N`` field), over NANO_BANANA_DAILY_IMAGE_LIMIT."""

    def matches(self, token: bytes, digest: bytes) -> bool:
        """Whether a presented token (and its SHA-256) is this one, in constant time."""
        return hmac.compare_digest(digest if self.hashed else token, self.secret)


_MAX_FILE_BYTES = 4096


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


_SET_ANOTHER = (
    "Set a long random one (for example the output of `python -c 'import secrets; print(secrets.token_urlsafe(32))'`), "
    "or set none and one is made for you."
)


def checked_token(text: str, setting: str, fix: str = _SET_ANOTHER) -> SecretStr:
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


def read_token_file(path: Path, setting: str, *, private: bool) -> SecretStr:
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
    return checked_token(data.decode("utf-8", errors="replace"), setting, fix)


def kept_token(path: Path) -> SecretStr:
    """The token kept at ``path``, made there on the first start: the file is created mode 600, never wider."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        return read_token_file(path, f"the file {path}", private=True)
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
    variable holding the tenant's own Monet API key, read now: every paid call of that tenant uses it. A last field
    ``daily_images=N`` gives the tenant its own daily image limit (``nano_banana_mcp.spend``).

    A malformed line, a token shorter than 16 characters, a tenant or token given twice, a key variable that is not
    a ``MONET_*`` one or is unset or empty, or a file without tenants is a ConfigError naming the file and the line;
    so is a file other users may read or change (as ssh refuses such a private key: it says which ``chmod``) and
    anything but a regular file (a FIFO is refused, never waited on). No message ever shows a token or a key.
    """
    where = f"the tokens file {path} ({TOKENS_FILE_SETTING})"
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
    """One line's ``tenant token [KEY_ENV_VAR] [daily_images=N]`` (its fields, split on white space); ``at`` names the
    file and line."""
    limits = [f for f in fields[2:] if f.startswith(_DAILY_IMAGES)]
    fields = [f for f in fields if f not in limits]
    daily = _daily_images(limits, at)
    tenant = fields[0]
    if not _TENANT_NAME.fullmatch(tenant):
        raise ConfigError(
            f"{at}: the tenant name must be 1 to 64 letters, digits, '.', '_' or '-' (starting with a letter or "
            f"digit). Write each line as `tenant token`. ({TOKENS_FILE_SETTING})"
        )
    if reserved_tenant(tenant) is not None:
        raise ConfigError(
            f"{at}: the tenant name {tenant!r} is reserved for stdio, the CLI and a single token (they share its "
            f"tasks); give this tenant another name. ({TOKENS_FILE_SETTING})"
        )
    if len(fields) == 1:
        raise ConfigError(f"{at}: one field where `tenant token` was expected (no token).")
    if len(fields) > 3:
        raise ConfigError(
            f"{at}: {len(fields)} fields where `tenant token` or `tenant token KEY_ENV_VAR` was expected (a token has "
            "no spaces)."
        )
    entry = replace(_tenant_token(tenant, fields[1], at), daily_images=daily)
    if len(fields) == 3:
        name = fields[2]
        return replace(entry, key_env=name, key=_tenant_key(name, at))
    return entry


def _daily_images(fields: list[str], at: str) -> int | None:
    """A line's own daily image limit: its one ``daily_images=N`` field (N from 0), else None."""
    if not fields:
        return None
    value = fields[0].removeprefix(_DAILY_IMAGES)
    if len(fields) > 1 or not (value.isascii() and value.isdigit() and len(value) <= 9):
        raise ConfigError(
            f"{at}: write the tenant's own daily image limit once, as daily_images=N with N a whole number from 0 "
            f"(for example daily_images=200). ({TOKENS_FILE_SETTING})"
        )
    return int(value)


def _tenant_key(name: str, at: str) -> SecretStr:
    """The tenant's own Monet API key, from the environment variable a line's third field names (never shown)."""
    if not _ENV_NAME.fullmatch(name) or name.startswith("monet_"):  # monet_...: a key pasted in, not its name
        raise ConfigError(
            f"{at}: the third field must be the name of an environment variable holding the tenant's own Monet API "
            "key (letters, digits and '_', not starting with a digit), never the key itself. Write the line as "
            f"`tenant token KEY_ENV_VAR`. ({TOKENS_FILE_SETTING})"
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
