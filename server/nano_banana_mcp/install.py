"""Host configuration files: register this installation with an MCP host, or take it out again.

The pure functions decide what to write: ``server_command`` (this very installation, by absolute path),
``entry_for`` (one host's entry), ``config_path`` (where that host keeps it), ``merge`` and ``remove`` (the file's
new content). ``install`` and ``uninstall`` read the file, apply them, keep ``<file>.bak`` and write the result
atomically. A file that is not valid JSON is refused, never overwritten; other servers and other keys are kept.

Writing a host's file is careful of what else is there: its numbers are written back exactly as they were spelled
(``1e999`` stays ``1e999``); text no UTF-8 file can hold (a lone surrogate escape) is refused; installs running at
once take turns through a lock file beside it (``<file>.nano-banana-mcp.lock``) and each reads the file again under
the lock, so none loses another's entry; the new file keeps the old one's owner and mode (root installing into a
user's file leaves it that user's); a symbolic link that points nowhere is refused, and no folder is made for it.

The API key goes into a file only when the user asks (``key=``); otherwise ``key_advice`` says how the host gets it.
"""

from __future__ import annotations

import copy
import json
import os
import stat
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NoReturn, get_args

from filelock import FileLock, Timeout

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

_LOCK_SECONDS = 60.0
"""How long an install waits for another one writing the same file."""


class _Number:
    """A JSON number exactly as the file spells it, so that writing the file back changes no digit (``1e999``
    is not turned into ``Infinity``, ``0.10000000000000000001`` keeps its digits). Equal to the int it spells."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __eq__(self, other: object) -> bool:
        if isinstance(other, _Number):
            return other.text == self.text
        if isinstance(other, int) and not isinstance(other, bool):
            return self.text == str(other)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(self.text)

    def __repr__(self) -> str:
        return self.text


def _not_json(name: str) -> NoReturn:
    raise ValueError(f"{name} is not a JSON number")


def _dumps(value: Any, indent: str = "") -> str:
    """``value`` as ``json.dumps(value, indent=2, ensure_ascii=False)`` writes it, numbers read from a file as
    they were spelled."""
    if isinstance(value, _Number):
        return value.text
    inner = indent + "  "
    if isinstance(value, Mapping):
        if not value:
            return "{}"
        items = (f"{inner}{json.dumps(str(k), ensure_ascii=False)}: {_dumps(v, inner)}" for k, v in value.items())
        return "{\n" + ",\n".join(items) + f"\n{indent}}}"
    if isinstance(value, list | tuple):
        if not value:
            return "[]"
        return "[\n" + ",\n".join(f"{inner}{_dumps(v, inner)}" for v in value) + f"\n{indent}]"
    return json.dumps(value, ensure_ascii=False, allow_nan=False)


def read_config(path: Path) -> dict[str, Any]:
    """The JSON object in ``path`` ({} when the file is missing or blank); ConfigError if it is anything else, or
    holds text a UTF-8 file cannot (a lone surrogate escape). Numbers are kept as spelled (written back unchanged)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as err:
        raise ConfigError(f"Cannot read {path}: {err.strerror or err}. Nothing was changed.") from err
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path} is not UTF-8 text (byte {err.start}); it was left untouched.") from err
    if not text.strip():
        return {}
    try:
        document = json.loads(text, parse_int=_Number, parse_float=_Number, parse_constant=_not_json)
    except json.JSONDecodeError as err:
        raise ConfigError(
            f"{path} is not valid JSON ({err.msg} at line {err.lineno}, column {err.colno}); it was left untouched. "
            "Fix it (or move it away) and run this again, or add the entry below by hand."
        ) from err
    except (ValueError, RecursionError) as err:  # NaN or Infinity; nesting deeper than Python's stack
        raise ConfigError(
            f"{path} is not valid JSON ({err or 'nested too deep'}); it was left untouched. Fix it (or move it "
            "away) and run this again, or add the entry below by hand."
        ) from err
    if not isinstance(document, dict):
        raise ConfigError(f"{path} holds a JSON {type(document).__name__}, not an object; it was left untouched.")
    try:
        _dumps(document).encode("utf-8")
    except UnicodeEncodeError as err:
        raise ConfigError(
            f"{path} holds a lone surrogate escape (\\u{ord(err.object[err.start]):x}), text no UTF-8 file can "
            "hold; it was left untouched. Fix that string by hand and run this again."
        ) from err
    return document


def _target(path: Path) -> Path:
    """The file to write for ``path``: itself, or the file its symbolic link points to. A link that points
    nowhere (or at a link loop) is refused: writing through it would make folders wherever it points. So is
    anything but a regular file (a FIFO would hang the read)."""
    target = path
    if path.is_symlink():
        try:
            target = path.resolve(strict=True)
        except (OSError, RuntimeError) as err:  # RuntimeError: a loop, before Python 3.13
            raise ConfigError(
                f"{path} is a symbolic link to {path.readlink()}, which does not exist; it was left untouched and "
                "no folder was made. Point the link at the host's config file, or remove it, and run this again."
            ) from err
    if target.exists() and not target.is_file():
        shown = path if target == path else f"{path} (a link to {target})"
        raise ConfigError(f"{shown} is not a regular file; it was left untouched.")
    return target


def _owner_for_new(folder: Path) -> tuple[int, int] | None:
    """Who a file or folder made in ``folder`` should belong to: its owner, when root makes it in a user's
    folder; None otherwise (it is then the maker's, as usual)."""
    if os.name != "posix" or os.geteuid() != 0:
        return None
    info = folder.stat()
    return info.st_uid, info.st_gid


def _make_folders(folder: Path) -> None:
    """``folder`` and the folders above it that are missing, owned as the nearest existing one (``_owner_for_new``);
    a dangling link on the way is refused, never followed."""
    missing: list[Path] = []
    here = folder
    while not here.exists():
        if here.is_symlink():
            raise ConfigError(
                f"{here} is a symbolic link to {here.readlink()}, which does not exist; nothing was written and no "
                "folder was made. Point the link at an existing folder, or remove it, and run this again."
            )
        missing.append(here)
        here = here.parent
    owner = _owner_for_new(here)
    for each in reversed(missing):
        try:
            each.mkdir()
        except FileExistsError:
            continue  # made by a concurrent install
        except OSError as err:
            raise ConfigError(f"Cannot make the folder {each}: {err.strerror or err}. Nothing was written.") from err
        if owner is not None:
            os.chown(each, *owner)


@contextmanager
def _locked(target: Path) -> Iterator[None]:
    """Hold the lock of ``target`` (an OS lock on ``<file>.nano-banana-mcp.lock`` beside it): one install or
    uninstall at a time reads and writes the file."""
    lock_path = target.with_name(target.name + ".nano-banana-mcp.lock")
    owner = _owner_for_new(target.parent)
    try:
        with FileLock(lock_path, timeout=_LOCK_SECONDS):
            if owner is not None:  # root: leave the user a lock file the user can take
                with suppress(OSError):
                    os.chown(lock_path, *owner)
            yield
    except Timeout as err:
        raise ConfigError(
            f"Another install has been writing {target} for {_LOCK_SECONDS:.0f} s (it holds {lock_path}); nothing was "
            "written. Run this again once it is done."
        ) from err


def _replace(target: Path, data: bytes, mode: int, owner: tuple[int, int] | None) -> None:
    """Write ``data`` to ``target`` through a new file in the same folder, given ``mode`` and ``owner`` before it
    takes the name: the name always holds the old file or the complete new one, never a link followed."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            if os.name == "posix":
                made = os.fstat(handle.fileno())
                if owner is not None and owner != (made.st_uid, made.st_gid):
                    try:
                        os.fchown(handle.fileno(), *owner)
                    except PermissionError as err:
                        raise ConfigError(
                            f"{target} belongs to uid {owner[0]} (group {owner[1]}), and this user cannot make a "
                            "file with that owner; it was left untouched. Run this as the file's owner."
                        ) from err
                os.fchmod(handle.fileno(), mode)  # after fchown, which may clear set-id bits
            os.fsync(handle.fileno())
        tmp.replace(target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _write_atomically(target: Path, document: Mapping[str, Any], *, private: bool) -> Path | None:
    """Write ``document`` to ``target`` (a file, not a link: see ``_target``), keeping its owner and mode (600 when
    ``private``), and the previous file as ``<file>.bak`` (same owner and mode). Returns the backup's path."""
    data = (_dumps(document) + "\n").encode("utf-8")
    try:
        info: os.stat_result | None = target.stat()
    except FileNotFoundError:
        info = None
    backup: Path | None = None
    if info is not None:
        owner: tuple[int, int] | None = (info.st_uid, info.st_gid)
        mode = stat.S_IMODE(info.st_mode)
        backup = target.with_name(target.name + ".bak")
        _replace(backup, target.read_bytes(), mode, owner)
    else:
        owner, mode = _owner_for_new(target.parent), 0o600
    _replace(target, data, 0o600 if private else mode, owner)
    return backup


def _edit(
    path: Path,
    edit: Callable[[dict[str, Any]], tuple[dict[str, Any] | None, Any]],
    *,
    dry_run: bool,
    private: bool,
) -> tuple[bool, Any, Path | None]:
    """Apply ``edit`` (a document -> the new document, or None when nothing changes; and the entry as it was) to
    the file at ``path``: whether it changed, the entry as it was, and the backup.

    The file is read and checked first, so a file that is refused makes no folder and no lock file; then again
    under the lock, so that an install that wrote meanwhile is not undone."""
    target = _target(path)
    updated, before = edit(read_config(target))
    if updated is None or dry_run:
        return updated is not None, before, None
    _make_folders(target.parent)
    try:
        with _locked(target):
            updated, before = edit(read_config(target))
            if updated is None:
                return False, before, None
            return True, before, _write_atomically(target, updated, private=private)
    except OSError as err:  # a folder we cannot write in, a full disk: the file is as it was
        raise ConfigError(f"Cannot write {target}: {err.strerror or err}; it was left as it was.") from err


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
            lines.append(_dumps({self.name: redacted(self.entry)}))
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

    def add(document: dict[str, Any]) -> tuple[dict[str, Any] | None, Any]:
        existing = servers_in(document, host).get(name)
        try:
            updated = merge(document, host, name, entry)
        except ConfigError as err:
            raise ConfigError(f"{path}: {err} It was left untouched.") from err
        return (None if existing == entry else updated), existing

    changed, existing, backup = _edit(path, add, dry_run=dry_run, private=key is not None)
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

    changed, existing, backup = _edit(path, take_out, dry_run=dry_run, private=False)
    if not changed:
        return Change(host, path, name, "absent", None, None, dry_run)
    return Change(host, path, name, "removed", existing, backup, dry_run)
