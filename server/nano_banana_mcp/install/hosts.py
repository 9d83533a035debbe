"""What to write in each MCP host's config, and where: this installation's command (``server_command``), one host's
entry (``entry_for``), the file the host reads (``config_path``), and the file's new content (``merge``, ``remove``).
Pure functions: reading and writing the file is ``config_file``'s.

The API key goes into an entry only when the user asks (``key=``); otherwise ``key_advice`` says how the host gets it.
"""

from __future__ import annotations

import copy
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, get_args

from nano_banana_mcp.errors import ConfigError

__all__ = [
    "DEFAULT_NAME",
    "HOSTS",
    "HOST_NAMES",
    "KEY_VAR",
    "OPENCLAW_KEY_REFERENCE",
    "OPENCLAW_REQUEST_TIMEOUT_MS",
    "OUTPUT_VAR",
    "Host",
    "config_path",
    "entry_for",
    "key_advice",
    "merge",
    "redacted",
    "remove",
    "server_command",
    "servers_in",
    "servers_path",
]

Host = Literal["claude-desktop", "claude-code", "cursor", "openclaw"]
HOSTS: tuple[Host, ...] = get_args(Host)
DEFAULT_NAME = "nano-banana"
KEY_VAR = "MONET_API_KEY"
OUTPUT_VAR = "NANO_BANANA_OUTPUT_DIR"
OPENCLAW_REQUEST_TIMEOUT_MS = 120_000
"""OpenClaw cuts an MCP request off after 60 s unless the entry says otherwise. generate_image uploads its references,
then waits up to 45 s by default: two minutes leaves room for both."""
OPENCLAW_KEY_REFERENCE = "${" + KEY_VAR + "}"
"""OpenClaw fills ``${VAR}`` in its config from its own environment; left unfilled, the server reads it as no key."""

HOST_NAMES: dict[Host, str] = {
    "claude-desktop": "Claude Desktop",
    "claude-code": "Claude Code",
    "cursor": "Cursor",
    "openclaw": "OpenClaw",
}
"""Each host as its users know it, in reports."""


def server_command(executable: str | None = None, *, platform: str = sys.platform) -> list[str]:
    """The command that starts this installation's server: its console script beside the interpreter, by absolute
    path (no PATH lookup, no PyPI), else ``[python, -m, nano_banana_mcp]`` with the same interpreter."""
    python = Path(executable or sys.executable).absolute()  # not resolve(): a venv's python is a symlink to the base
    script = python.with_name("nano-banana-mcp.exe" if platform == "win32" else "nano-banana-mcp")
    if script.is_file():
        return [str(script)]
    return [str(python), "-m", "nano_banana_mcp"]


def entry_for(
    host: Host, command: Sequence[str], *, offline: bool = False, key: str | None = None, output_dir: str | None = None
) -> dict[str, Any]:
    """The server's entry in ``host``'s config: ``command`` (from ``server_command``), ``--offline`` if asked, and
    the key only when given. OpenClaw gets a ``${MONET_API_KEY}`` reference instead (it starts servers without its
    own environment) and a request timeout above its 60 s default. ``output_dir``: where the server saves images
    (``NANO_BANANA_OUTPUT_DIR``; for OpenClaw, ``install.openclaw.media_folder``)."""
    program, *args = command
    if offline:
        args.append("--offline")
    env: dict[str, str] = {}
    if key is not None:
        env[KEY_VAR] = key
    elif host == "openclaw" and not offline:
        env[KEY_VAR] = OPENCLAW_KEY_REFERENCE
    if output_dir is not None:
        env[OUTPUT_VAR] = output_dir
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


def servers_path(host: Host) -> tuple[str, ...]:
    """The keys, from the top of ``host``'s config, of the object that lists its MCP servers."""
    return ("mcp", "servers") if host == "openclaw" else ("mcpServers",)


def servers_in(document: Mapping[str, Any], host: Host) -> dict[str, Any]:
    """The MCP servers a host's config document lists (empty when it lists none)."""
    node: Any = document
    for key in servers_path(host):
        node = node.get(key, {}) if isinstance(node, Mapping) else {}
    return dict(node) if isinstance(node, Mapping) else {}


def _servers_for_update(document: dict[str, Any], host: Host, *, create: bool) -> dict[str, Any] | None:
    node = document
    path = servers_path(host)
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
