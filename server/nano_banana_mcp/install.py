"""Host configuration files: register this installation with an MCP host, or take it out again.

The pure functions decide what to write: ``server_command`` (this very installation, by absolute path),
``entry_for`` (one host's entry), ``config_path`` (where that host keeps it), ``merge`` and ``remove`` (the file's
new content). ``install`` and ``uninstall`` read the file, apply them, keep ``<file>.bak`` and write the result
atomically. A file that is not valid JSON is refused, never overwritten; other servers and other keys are kept.

The API key goes into a file only when the user asks (``key=``); otherwise ``key_advice`` says how the host gets it.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

from nano_banana_mcp.errors import ConfigError

__all__ = [
    "DEFAULT_NAME",
    "HOSTS",
    "KEY_VAR",
    "OPENCLAW_REQUEST_TIMEOUT_MS",
    "Change",
    "Host",
    "config_path",
    "entry_for",
    "install",
    "key_advice",
    "merge",
    "read_config",
    "redacted",
    "remove",
    "server_command",
    "servers_in",
    "uninstall",
]

Host = Literal["claude-desktop", "claude-code", "cursor", "openclaw"]
HOSTS: tuple[Host, ...] = get_args(Host)
DEFAULT_NAME = "nano-banana"
KEY_VAR = "MONET_API_KEY"
OPENCLAW_REQUEST_TIMEOUT_MS = 120_000
"""OpenClaw cuts an MCP request off after 60 s unless the entry says otherwise. generate_image uploads its references,
then waits up to 45 s by default: two minutes leaves room for both."""
OPENCLAW_KEY_REFERENCE = "${" + KEY_VAR + "}"
"""OpenClaw fills ``${VAR}`` in its config from its own environment; left unfilled, the server reads it as no key."""

_HOST_NAMES: dict[Host, str] = {
    "claude-desktop": "Claude Desktop",
    "claude-code": "Claude Code",
    "cursor": "Cursor",
    "openclaw": "OpenClaw",
}


# -- what to write ---------------------------------------------------------------------------------


def server_command(executable: str | None = None, *, platform: str = sys.platform) -> list[str]:
    """The command that starts this installation's server: its console script beside the interpreter, by absolute
    path (no PATH lookup, no PyPI), else ``[python, -m, nano_banana_mcp]`` with the same interpreter."""
    python = Path(executable or sys.executable).absolute()  # not resolve(): a venv's python is a symlink to the base
    script = python.with_name("nano-banana-mcp.exe" if platform == "win32" else "nano-banana-mcp")
    if script.is_file():
        return [str(script)]
    return [str(python), "-m", "nano_banana_mcp"]


def entry_for(host: Host, command: Sequence[str], *, offline: bool = False, key: str | None = None) -> dict[str, Any]:
    """The server's entry in ``host``'s config: ``command`` (from ``server_command``), ``--offline`` if asked, and
    the key only when given. OpenClaw gets a ``${MONET_API_KEY}`` reference instead (it starts servers without its
    own environment) and a request timeout above its 60 s default."""
    program, *args = command
    if offline:
        args.append("--offline")
    env: dict[str, str] = {}
    if key is not None:
        env[KEY_VAR] = key
    elif host == "openclaw" and not offline:
        env[KEY_VAR] = OPENCLAW_KEY_REFERENCE
    entry: dict[str, Any] = {"type": "stdio"} if host == "claude-code" else {}
    entry |= {"command": program, "args": args}
    if env or host == "claude-code":  # `claude mcp add` always writes an env object
        entry["env"] = env
    if host == "openclaw":
        entry["requestTimeoutMs"] = OPENCLAW_REQUEST_TIMEOUT_MS
    return entry


def config_path(host: Host, *, home: Path, platform: str, environ: Mapping[str, str]) -> Path:
    """The file ``host`` reads its user-wide MCP servers from, on ``platform`` for a user whose home is ``home``."""
    if host == "claude-desktop":
        if platform == "win32":
            appdata = Path(environ["APPDATA"]) if environ.get("APPDATA") else home / "AppData" / "Roaming"
            return appdata / "Claude" / "claude_desktop_config.json"
        if platform == "darwin":
            return home / "Library" / "Application Support" / "Claude" / "claude_desktop_config.json"
        config_home = Path(environ["XDG_CONFIG_HOME"]) if environ.get("XDG_CONFIG_HOME") else home / ".config"
        return config_home / "Claude" / "claude_desktop_config.json"
    if host == "claude-code":  # user scope, as `claude mcp add -s user` writes it
        folder = Path(environ["CLAUDE_CONFIG_DIR"]) if environ.get("CLAUDE_CONFIG_DIR") else home
        return folder / ".claude.json"
    if host == "cursor":
        return home / ".cursor" / "mcp.json"
    if environ.get("OPENCLAW_CONFIG_PATH"):
        return Path(environ["OPENCLAW_CONFIG_PATH"]).expanduser()
    if environ.get("OPENCLAW_STATE_DIR"):
        return Path(environ["OPENCLAW_STATE_DIR"]).expanduser() / "openclaw.json"
    openclaw_home = Path(environ["OPENCLAW_HOME"]).expanduser() if environ.get("OPENCLAW_HOME") else home
    return openclaw_home / ".openclaw" / "openclaw.json"


def _servers_path(host: Host) -> tuple[str, ...]:
    return ("mcp", "servers") if host == "openclaw" else ("mcpServers",)


def servers_in(document: Mapping[str, Any], host: Host) -> dict[str, Any]:
    """The MCP servers a host's config document lists (empty when it lists none)."""
    node: Any = document
    for key in _servers_path(host):
        node = node.get(key, {}) if isinstance(node, Mapping) else {}
    return dict(node) if isinstance(node, Mapping) else {}


def _servers_for_update(document: dict[str, Any], host: Host, *, create: bool) -> dict[str, Any] | None:
    node = document
    path = _servers_path(host)
    for depth, key in enumerate(path):
        if key not in node:
            if not create:
                return None
            node[key] = {}
        child = node[key]
        if not isinstance(child, dict):
            where = ".".join(path[: depth + 1])
            raise ConfigError(f"`{where}` is a JSON {type(child).__name__}, not an object: fix it by hand first.")
        node = child
    return node


def merge(document: Mapping[str, Any], host: Host, name: str, entry: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``document`` with ``entry`` as server ``name``; every other server and key is kept."""
    result = copy.deepcopy(dict(document))
    servers = _servers_for_update(result, host, create=True)
    assert servers is not None
    servers[name] = copy.deepcopy(dict(entry))
    return result


def remove(document: Mapping[str, Any], host: Host, name: str) -> tuple[dict[str, Any], bool]:
    """A copy of ``document`` without server ``name``, and whether it was there; nothing else changes."""
    result = copy.deepcopy(dict(document))
    servers = _servers_for_update(result, host, create=False)
    if servers is None or name not in servers:
        return result, False
    del servers[name]
    return result, True


def redacted(entry: Mapping[str, Any]) -> dict[str, Any]:
    """The entry as it may be printed: a literal key replaced by a marker (a ``${...}`` reference is kept)."""
    shown = copy.deepcopy(dict(entry))
    env = shown.get("env")
    if isinstance(env, dict) and isinstance(env.get(KEY_VAR), str) and not env[KEY_VAR].startswith("${"):
        env[KEY_VAR] = "monet_…(redacted)"
    return shown


def key_advice(host: Host, path: Path, *, offline: bool, key_written: bool) -> str:
    """How the server registered in ``path`` gets its API key on this host (what the user does next, if anything)."""
    if offline:
        return (
            "Offline entry: no key needed; images are labelled placeholders from the built-in emulator. With a key, "
            f"run `nano-banana-mcp install {host}` again without --offline."
        )
    if key_written:
        private = " (made readable only by you)" if os.name == "posix" else ""
        return f"The key from {KEY_VAR} is stored in the entry's env, in {path}{private}."
    by_hand = f'"env": {{"{KEY_VAR}": "monet_..."}}'
    if host == "claude-desktop":
        return (
            "Claude Desktop starts servers without your shell's environment, so this entry has no key yet: run "
            f"`nano-banana-mcp install claude-desktop --key-from-env` to copy ${KEY_VAR} into it, or add {by_hand} "
            f"to the entry in {path} by hand. (The .mcpb bundle keeps the key in the OS keychain instead.)"
        )
    if host == "claude-code":
        return (
            f"Claude Code passes the environment it is started from to the server: `export {KEY_VAR}=monet_...` "
            f"before running `claude`, or run `nano-banana-mcp install claude-code --key-from-env` to store it in "
            f"{path}."
        )
    if host == "cursor":
        return (
            f"Run `nano-banana-mcp install cursor --key-from-env` to store ${KEY_VAR} in {path}, or add "
            f'"env": {{"{KEY_VAR}": "${{env:{KEY_VAR}}}"}} to the entry by hand so Cursor fills it from the '
            "environment it is started from."
        )
    return (
        "OpenClaw starts MCP servers with only a few base variables plus the entry's env, so the entry passes "
        f'"{KEY_VAR}": "{OPENCLAW_KEY_REFERENCE}", which OpenClaw fills from its own environment: put '
        f"{KEY_VAR}=monet_... in ~/.openclaw/.env (or under env.vars in {path.name}) and restart the gateway. "
        "Until then the server answers with a clear no-key error."
    )


# -- reading and writing the file ---------------------------------------------------------------------------


def read_config(path: Path) -> dict[str, Any]:
    """The JSON object in ``path`` ({} when the file is missing or blank); ConfigError if it is anything else."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"Cannot read {path}: {err}. Nothing was changed.") from err
    if not text.strip():
        return {}
    try:
        document = json.loads(text)
    except json.JSONDecodeError as err:
        raise ConfigError(
            f"{path} is not valid JSON ({err.msg} at line {err.lineno}, column {err.colno}); it was left untouched. "
            "Fix it (or move it away) and run this again, or add the entry below by hand."
        ) from err
    if not isinstance(document, dict):
        raise ConfigError(f"{path} holds a JSON {type(document).__name__}, not an object; it was left untouched.")
    return document


def _write_atomically(path: Path, document: Mapping[str, Any], *, private: bool) -> Path | None:
    """Write ``document`` to ``path`` through a temporary file in the same folder; keep ``<file>.bak`` first.

    A symlinked config file is written through (its target is replaced, the link stays). Returns the backup's path.
    """
    target = path.resolve() if path.is_symlink() else path
    target.parent.mkdir(parents=True, exist_ok=True)
    backup: Path | None = None
    if target.exists():
        backup = target.with_name(target.name + ".bak")
        shutil.copy2(target, backup)
    text = json.dumps(document, indent=2, ensure_ascii=False) + "\n"
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        if backup is not None:
            shutil.copymode(backup, tmp)
        if private and os.name == "posix":
            tmp.chmod(0o600)
        tmp.replace(target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return backup


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
        where = ".".join((*_servers_path(self.host), self.name))
        verb = {
            "added": "would add" if self.dry_run else "added",
            "replaced": "would replace" if self.dry_run else "replaced",
            "unchanged": "already has",
            "removed": "would remove" if self.dry_run else "removed",
            "absent": "has no",
        }[self.action]
        lines = [f"{_HOST_NAMES[self.host]}: {self.path} {verb} `{where}`"]
        if self.entry is not None and self.action != "absent":
            lines.append(json.dumps({self.name: redacted(self.entry)}, indent=2, ensure_ascii=False))
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
    entry = entry_for(host, server_command() if command is None else command, offline=offline, key=key)
    document = read_config(path)
    existing = servers_in(document, host).get(name)
    try:
        updated = merge(document, host, name, entry)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err} It was left untouched.") from err
    if existing == entry:
        return Change(host, path, name, "unchanged", entry, None, dry_run)
    action: Literal["added", "replaced"] = "added" if existing is None else "replaced"
    backup = None if dry_run else _write_atomically(path, updated, private=key is not None)
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
    document = read_config(path)
    existing = servers_in(document, host).get(name)
    try:
        updated, removed = remove(document, host, name)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err} It was left untouched.") from err
    if not removed:
        return Change(host, path, name, "absent", None, None, dry_run)
    backup = None if dry_run else _write_atomically(path, updated, private=False)
    return Change(host, path, name, "removed", existing, backup, dry_run)
