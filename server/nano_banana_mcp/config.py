"""Settings from the environment and the command line, built once and passed down."""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from nano_banana_mcp.errors import NO_KEY, ConfigError

__all__ = ["DEFAULT_BASE_URL", "OFFLINE_API_KEY", "Settings", "is_loopback", "normal_host"]

DEFAULT_BASE_URL = "https://monet.vision"
OFFLINE_API_KEY = "monet_offline"
APP_NAME = "nano-banana-mcp"
DEFAULT_DOWNLOAD_HOSTS = ("monet.vision", "*.monet.vision")
_PLACEHOLDER = re.compile(r"\$\{[^}]*\}")


def normal_host(host: str) -> str:
    """One spelling per host: no brackets, lower case, IP addresses in short form (``[0:0::0:1]`` -> ``::1``)."""
    bare = host.strip().strip("[]").lower()
    try:
        return ipaddress.ip_address(bare).compressed
    except ValueError:
        return bare


def is_loopback(host: str) -> bool:
    """True for this machine's own addresses in any spelling: localhost, 127.0.0.0/8, ::1."""
    host = normal_host(host)
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _default_output_dir() -> Path:
    import platformdirs  # noqa: PLC0415 - only when no directory is configured

    return Path(platformdirs.user_pictures_dir()) / "nano-banana"


def _default_data_dir() -> Path:
    import platformdirs  # noqa: PLC0415

    return Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))


def _usable(path: Path, *, recorded: bool = False) -> Path:
    """``path``, if a file system can hold it (and, ``recorded``, the ledger can record the files made in it: UTF-8
    text); a ValueError saying why not otherwise."""
    text = str(path)
    if "\x00" in text:
        raise ValueError(f"{text[:200]!r} holds a NUL character, which no path can hold: give a real path")
    if not recorded:
        return path
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:  # bytes that are not UTF-8 (a name from another system): nothing can record it
        raise ValueError(
            f"{text[:200]!r} is not UTF-8 text (character {err.start + 1}), so it cannot be recorded: rename it, or "
            "give another path"
        ) from None
    return path


Seconds = Annotated[float, Field(ge=0)]
_URL_SETTING = "NANO_BANANA_DATABASE_URL"
_URL_FILE_SETTING = "NANO_BANANA_DATABASE_URL_FILE / --database-url-file"


class Settings(BaseSettings):
    """Every setting has an environment variable (shown in each field's alias) and a CLI flag."""

    model_config = SettingsConfigDict(env_prefix="NANO_BANANA_", extra="ignore", populate_by_name=True)

    api_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("MONET_API_KEY", "api_key"),
        description="Monet API key (monet_...). Get one at https://monet.vision.",
    )
    base_url: str = Field(
        default=DEFAULT_BASE_URL,
        validation_alias=AliasChoices("MONET_BASE_URL", "base_url"),
        description="Monet API base URL.",
    )
    output_dir: Path = Field(default_factory=_default_output_dir, description="Where images are saved.")
    data_dir: Path = Field(default_factory=_default_data_dir, description="Ledger and caches.")
    offline: bool = Field(default=False, description="Use the built-in emulator; no key needed.")
    preview: Literal["auto", "on", "off"] = Field(
        default="auto",
        description="A small JPEG preview in each image result: on, off, or auto (on, except for OpenClaw, whose "
        "Tool Search hands images to the model as base64 text: its agent looks with view_image instead).",
    )

    # What the server may touch.
    allowed_dirs: Annotated[list[Path], NoDecode] = Field(
        default_factory=list,
        description="Folders reference images may be read from (separated by the OS path separator); "
        "default: your home folder. The output folder and, on stdio, the MCP client's roots are always allowed.",
    )
    download_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Extra hosts images may be downloaded from over https (comma-separated; *.example.com "
        "matches subdomains). Monet's hosts and the API's own host are always allowed.",
    )
    http_token: SecretStr | None = Field(
        default=None,
        description="Bearer token HTTP clients must send (default: one made on first start, kept in the data dir).",
    )
    metrics_token: SecretStr | None = Field(
        default=None,
        description="Bearer token for GET /metrics on the HTTP server (default: the server's one token). Required "
        "to read /metrics with a tokens file or an identity provider: a tenant's token does not open it.",
    )
    http_token_file: Path | None = Field(
        default=None, description="File holding the bearer token HTTP clients must send (instead of http_token)."
    )
    http_tokens_file: Path | None = Field(
        default=None,
        description="File of `tenant token` lines (token may be sha256:<hex>): one bearer token per tenant, each "
        "tenant seeing only its own tasks, images and uploads (instead of http_token).",
    )
    oauth_issuer: str | None = Field(
        default=None,
        description="Your identity provider's issuer URL (https://...): HTTP clients sign in there, and the server "
        "accepts the JWT access tokens it signs (RS256/ES256) for oauth_audience (instead of http_token).",
    )
    oauth_audience: str | None = Field(
        default=None, description="The audience (aud) this server's access tokens carry; required with oauth_issuer."
    )
    oauth_tenant_claim: str = Field(
        default="sub", description="The access-token claim that names the tenant (default: sub, the subject)."
    )
    public_url: str | None = Field(
        default=None,
        description="The URL clients reach this HTTP server at, before /mcp (https://mcp.example.com behind a proxy "
        "or load balancer): the protected-resource metadata names it (default: http://host:port as served).",
    )
    database_url: SecretStr | None = Field(
        default=None,
        description="postgresql://user:password@host:port/database: keep the ledger in PostgreSQL, shared by every "
        "replica of a team server (default: SQLite in the data dir). A secret: environment or file, never argv.",
    )
    database_url_file: Path | None = Field(
        default=None, description="File holding the PostgreSQL URL (instead of database_url)."
    )
    storage_url: str | None = Field(
        default=None,
        description="s3://bucket/prefix: keep saved images in this S3-compatible bucket (AWS, MinIO, R2; endpoint and "
        "credentials from the standard AWS variables) instead of the output folder, so that every replica of a team "
        "server serves them; results give a presigned link (default: the output folder).",
    )
    storage_link_seconds: int = Field(
        default=3600, ge=60, le=7 * 24 * 3600, description="How long a presigned image link stays valid."
    )
    max_response_bytes: int = Field(default=8 * 1024 * 1024, ge=1024, description="Largest API answer read.")
    stream_stall_seconds: float = Field(
        default=120.0, gt=0, description="Leave an event stream that reports no change for this long."
    )

    # Network behaviour.
    request_timeout: float = Field(default=30.0, gt=0, description="Timeout of one API request.")
    max_retries: int = Field(default=5, ge=0, le=20, description="Retries of a failed request.")
    retry_base_delay: Seconds = Field(default=0.5, description="First retry delay; doubles each time.")
    retry_max_delay: Seconds = Field(default=8.0, description="Cap on one retry delay.")
    max_retry_after: Seconds = Field(default=60.0, description="Longest Retry-After that is honoured.")
    poll_interval: float = Field(default=1.0, gt=0, description="First polling interval when streaming fails.")
    poll_max_interval: float = Field(default=5.0, gt=0, description="Longest polling interval.")
    task_timeout: Seconds = Field(
        default=1800.0,
        description="Give up following a task the API has not finished (or named) after this long in one process; "
        "saving a finished task's images is never given up.",
    )
    max_streams: int = Field(
        default=100,
        ge=0,
        description="Tasks created with an event stream at once; the rest are created through /tasks/async and polled "
        "(0: never stream, e.g. behind a proxy that breaks event streams).",
    )
    sweep_interval: float = Field(
        default=5.0, gt=0, description="How often unfinished tasks of stopped processes are picked up."
    )
    max_download_bytes: int = Field(default=100 * 1024 * 1024, ge=1, description="Largest image download.")
    max_reference_bytes: int = Field(default=20 * 1024 * 1024, ge=1, description="Largest reference image.")

    # Spend (nano_banana_mcp.spend; docs/deploy.md).
    prices: Path | None = Field(
        default=None,
        description="TOML file of the price of one image per model and resolution, in your own unit: results and "
        "usage show cost (default: everything is counted in images).",
    )
    daily_image_limit: int | None = Field(
        default=None,
        ge=0,
        description="Images each tenant may request per UTC day (a tokens file line's daily_images=N overrides it "
        "for that tenant); a call that would pass it is refused before anything is paid (default: no limit).",
    )
    confirm_over: int | None = Field(
        default=None,
        ge=0,
        description="Ask the person (form elicitation) before a call makes more images than this (default: never ask; "
        "a call makes at most 4, and the daily limit is what stops a loop).",
    )
    confirm_unasked: Literal["refuse", "proceed"] = Field(
        default="refuse",
        description="What a call over confirm_over does on a client that cannot ask the person: refuse it (saying "
        "how many images are allowed without asking), or proceed.",
    )

    # The built-in emulator (offline mode).
    emulator_task_seconds: Seconds = Field(default=4.0, description="How long an offline task takes.")

    @field_validator("output_dir", "data_dir", mode="after")
    @classmethod
    def _expand(cls, value: Path) -> Path:
        return _usable(value, recorded=True).expanduser().resolve()

    @field_validator("http_token_file", "http_tokens_file", "database_url_file", "prices", mode="after")
    @classmethod
    def _expand_file(cls, value: Path | None) -> Path | None:
        return None if value is None else _usable(value).expanduser().resolve()

    @model_validator(mode="before")
    @classmethod
    def _unset_placeholders(cls, data: object) -> object:
        """A host that leaves ``${user_config.x}`` unfilled means "not set", not that literal text."""
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if not (isinstance(v, str) and _PLACEHOLDER.fullmatch(v.strip()))}
        return data

    @field_validator("allowed_dirs", mode="before")
    @classmethod
    def _split_dirs(cls, value: object) -> object:
        if isinstance(value, str):
            return [part for part in value.split(os.pathsep) if part.strip()]
        return value

    @field_validator("allowed_dirs", mode="after")
    @classmethod
    def _expand_dirs(cls, value: list[Path]) -> list[Path]:
        return [_usable(v).expanduser().resolve() for v in value]

    @field_validator("download_hosts", mode="before")
    @classmethod
    def _split_hosts(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip().lower() for part in value.split(",") if part.strip()]
        return value

    def reference_roots(self) -> list[Path]:
        """Where reference images may be read from (before the MCP client's own roots are added)."""
        return [*(self.allowed_dirs or [Path.home().resolve()]), self.output_dir]

    @field_validator("base_url", mode="after")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        if not value.startswith(("https://", "http://")):
            raise ValueError("MONET_BASE_URL must start with https:// (or http:// for a local emulator)")
        if "@" in value.split("://", 1)[1].split("/", 1)[0]:  # it would be in every message naming the API
            raise ValueError("MONET_BASE_URL must not hold a user name or password; the key goes in MONET_API_KEY")
        return value.rstrip("/")

    def database(self) -> SecretStr | None:
        """The PostgreSQL URL the ledger lives at, from the environment or its file; None for SQLite.

        Checked here rather than by pydantic, whose errors repeat the value (and the password in it).
        """
        url = self.database_url if self.database_url and self.database_url.get_secret_value().strip() else None
        where = _URL_SETTING
        if self.database_url_file is not None:
            if url is not None:
                raise ConfigError(f"Both {_URL_SETTING} and {_URL_FILE_SETTING} are set: set only one of them.")
            where = f"{self.database_url_file} ({_URL_FILE_SETTING})"
            try:
                url = SecretStr(self.database_url_file.read_text(encoding="utf-8").strip())
            except (OSError, UnicodeDecodeError) as err:
                raise ConfigError(f"The database URL file {where} cannot be read ({err}).") from err
        if url is None:
            return None
        if not url.get_secret_value().startswith(("postgresql://", "postgres://")):
            raise ConfigError(
                f"The database URL in {where} must start with postgresql:// (for example "
                "postgresql://user:password@db.example:5432/nano_banana); unset it to keep the ledger in SQLite."
            )
        return url

    def require_key(self) -> SecretStr:
        """The API key, or a ConfigError that says how to get one."""
        if self.api_key is None or not self.api_key.get_secret_value().strip():
            raise ConfigError(NO_KEY)
        return self.api_key
