"""The settings every command that talks to the API takes as flags (each also read from its environment variable),
and the ``Settings`` they make."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from nano_banana_mcp.errors import ConfigError

if TYPE_CHECKING:
    from nano_banana_mcp.config import Settings

__all__ = ["SETTING_FLAGS", "add_settings_flags", "settings_from"]


def add_settings_flags(parser: argparse.ArgumentParser) -> None:
    """The settings flags, in their own group of ``parser``'s help."""
    g = parser.add_argument_group("settings (each also read from its environment variable)")
    g.add_argument(
        "--allowed-dir",
        dest="allowed_dirs",
        action="append",
        type=Path,
        help="folder reference images may be read from; repeatable (default: your home) [NANO_BANANA_ALLOWED_DIRS]",
    )
    g.add_argument(
        "--download-host",
        dest="download_hosts",
        action="append",
        help="extra host images may be downloaded from; repeatable [NANO_BANANA_DOWNLOAD_HOSTS]",
    )
    g.add_argument(
        "--offline",
        action="store_true",
        default=None,
        help="use the built-in emulator; no key needed [NANO_BANANA_OFFLINE]",
    )
    g.add_argument("--base-url", dest="base_url", help="Monet API base URL [MONET_BASE_URL]")
    g.add_argument(
        "--output-dir",
        "--out",
        dest="output_dir",
        type=Path,
        help="where images are saved [NANO_BANANA_OUTPUT_DIR]",
    )
    g.add_argument("--data-dir", dest="data_dir", type=Path, help="ledger and caches [NANO_BANANA_DATA_DIR]")
    g.add_argument(
        "--database-url-file",
        dest="database_url_file",
        type=Path,
        metavar="PATH",
        help="file holding a postgresql:// URL: the ledger goes to PostgreSQL, shared by a team's replicas (the URL "
        "itself only from the environment, never argv) [NANO_BANANA_DATABASE_URL_FILE, NANO_BANANA_DATABASE_URL]",
    )
    g.add_argument(
        "--storage-url",
        dest="storage_url",
        metavar="S3_URL",
        help="s3://bucket/prefix: keep saved images in this S3-compatible bucket, shared by a team's replicas "
        "(endpoint and credentials from the standard AWS variables) [NANO_BANANA_STORAGE_URL]",
    )
    g.add_argument(
        "--request-timeout",
        dest="request_timeout",
        type=float,
        help="seconds per API request [NANO_BANANA_REQUEST_TIMEOUT]",
    )
    g.add_argument(
        "--max-retries",
        dest="max_retries",
        type=int,
        help="retries of a failed request [NANO_BANANA_MAX_RETRIES]",
    )
    g.add_argument(
        "--emulator-task-seconds",
        dest="emulator_task_seconds",
        type=float,
        help="how long an offline task takes [NANO_BANANA_EMULATOR_TASK_SECONDS]",
    )
    g.add_argument(
        "--log-level",
        default="WARNING",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="log level on stderr (default WARNING)",
    )


SETTING_FLAGS = (
    "http_token",
    "http_token_file",
    "http_tokens_file",
    "allowed_dirs",
    "download_hosts",
    "offline",
    "base_url",
    "output_dir",
    "data_dir",
    "database_url_file",
    "storage_url",
    "oauth_issuer",
    "oauth_audience",
    "oauth_tenant_claim",
    "public_url",
    "request_timeout",
    "max_retries",
    "emulator_task_seconds",
)
"""The ``Settings`` fields a flag may set: these flags' and ``serve``'s own; a flag left out keeps the environment's."""


_FLAGS = {
    "http_token": "--auth-token",
    "http_token_file": "--auth-token-file",
    "http_tokens_file": "--auth-tokens-file",
    "allowed_dirs": "--allowed-dir",
    "download_hosts": "--download-host",
    "output_dir": "--out",
}


def _setting_name(field: str) -> str:
    """How a person sets ``field``: its environment variable, and its flag when it has one."""
    from pydantic import AliasChoices  # noqa: PLC0415

    from nano_banana_mcp.config import Settings  # noqa: PLC0415

    info = Settings.model_fields.get(field)
    alias = info.validation_alias if info is not None else None
    env = str(alias.choices[0]) if isinstance(alias, AliasChoices) else f"NANO_BANANA_{field.upper()}"
    if field not in SETTING_FLAGS:
        return env
    return f"{env} / {_FLAGS.get(field, '--' + field.replace('_', '-'))}"


def settings_from(args: argparse.Namespace) -> Settings:
    """The settings: the flags given in ``args`` over the environment; ConfigError names each invalid one."""
    # the settings' model and pydantic are imported here, by the commands that use them, not by every start of the
    # command (`install`, `models` and --help never do)
    from pydantic import ValidationError  # noqa: PLC0415

    from nano_banana_mcp.config import Settings  # noqa: PLC0415

    overrides = {k: v for k in SETTING_FLAGS if (v := getattr(args, k, None)) is not None}
    try:
        return Settings(**overrides)
    except ValidationError as err:
        problems = "; ".join(
            f"{_setting_name(str(e['loc'][0])) if e['loc'] else 'a setting'}: {e['msg'].removeprefix('Value error, ')}"
            for e in err.errors()
        )
        raise ConfigError(f"Invalid setting {problems}.") from err
