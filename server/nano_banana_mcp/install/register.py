"""``install`` and ``uninstall``: this installation's entry in one host's config file, put there or taken out, and
the ``Change`` made (or, with ``dry_run``, that would be)."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from nano_banana_mcp.errors import ConfigError
from nano_banana_mcp.install.config_file import dumps, edit
from nano_banana_mcp.install.hosts import (
    DEFAULT_NAME,
    HOST_NAMES,
    Host,
    config_path,
    entry_for,
    merge,
    redacted,
    remove,
    server_command,
    servers_in,
    servers_path,
)
from nano_banana_mcp.install.openclaw import media_folder

__all__ = ["Change", "install", "uninstall"]


@dataclass(frozen=True)
class Change:
    """What ``install`` or ``uninstall`` did to one host's file, or with ``dry_run`` would do."""

    host: Host
    path: Path
    name: str
    action: Literal["added", "replaced", "unchanged", "removed", "absent"]
    entry: dict[str, Any] | None
    """The server's entry as written (install), or as it was (uninstall)."""
    backup: Path | None
    dry_run: bool

    def report(self) -> str:
        """Lines for a person: what changed where, the entry with any key redacted, and the backup."""
        where = ".".join((*servers_path(self.host), self.name))
        verb = {
            "added": "would add" if self.dry_run else "added",
            "replaced": "would replace" if self.dry_run else "replaced",
            "unchanged": "already has",
            "removed": "would remove" if self.dry_run else "removed",
            "absent": "has no",
        }[self.action]
        lines = [f"{HOST_NAMES[self.host]}: {self.path} {verb} `{where}`"]
        if self.entry is not None and self.action != "absent":
            lines.append(dumps({self.name: redacted(self.entry)}))
        if self.backup is not None:
            lines.append(f"backup of the previous file: {self.backup}")
        if self.dry_run and self.action in ("added", "replaced", "removed"):
            lines.append("(dry run: nothing was written)")
        return "\n".join(lines)


def _where(host: Host, home: Path | None, platform: str | None, environ: Mapping[str, str] | None) -> Path:
    return config_path(
        host,
        home=Path.home() if home is None else home,
        platform=sys.platform if platform is None else platform,
        environ=os.environ if environ is None else environ,
    )


def install(
    host: Host,
    *,
    name: str = DEFAULT_NAME,
    offline: bool = False,
    key: str | None = None,
    dry_run: bool = False,
    command: Sequence[str] | None = None,
    home: Path | None = None,
    platform: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> Change:
    """Register this installation (or ``command``) as server ``name`` in ``host``'s user-wide config file."""
    path = _where(host, home, platform, environ)
    program = server_command() if command is None else command
    entry = entry_for(host, program, offline=offline, key=key)

    def add(document: dict[str, Any]) -> tuple[dict[str, Any] | None, Any]:
        nonlocal entry
        if host == "openclaw":  # images go where OpenClaw lets the agent attach them: its workspace
            folder = media_folder(
                document, home=Path.home() if home is None else home, environ=os.environ if environ is None else environ
            )
            entry = entry_for(host, program, offline=offline, key=key, output_dir=str(folder))
        existing = servers_in(document, host).get(name)
        try:
            updated = merge(document, host, name, entry)
        except ConfigError as err:
            raise ConfigError(f"{path}: {err} It was left untouched.") from err
        return (None if existing == entry else updated), existing

    changed, existing, backup = edit(path, add, dry_run=dry_run, private=key is not None)
    if not changed:
        return Change(host, path, name, "unchanged", entry, None, dry_run)
    action: Literal["added", "replaced"] = "added" if existing is None else "replaced"
    return Change(host, path, name, action, entry, backup, dry_run)


def uninstall(
    host: Host,
    *,
    name: str = DEFAULT_NAME,
    dry_run: bool = False,
    home: Path | None = None,
    platform: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> Change:
    """Take server ``name`` out of ``host``'s config file; every other server and key stays."""
    path = _where(host, home, platform, environ)

    def take_out(document: dict[str, Any]) -> tuple[dict[str, Any] | None, Any]:
        existing = servers_in(document, host).get(name)
        try:
            updated, removed = remove(document, host, name)
        except ConfigError as err:
            raise ConfigError(f"{path}: {err} It was left untouched.") from err
        return (updated if removed else None), existing

    changed, existing, backup = edit(path, take_out, dry_run=dry_run, private=False)
    if not changed:
        return Change(host, path, name, "absent", None, None, dry_run)
    return Change(host, path, name, "removed", existing, backup, dry_run)
