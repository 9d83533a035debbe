"""Reading and writing a host's JSON config file, careful of what else is there.

A file that is not valid JSON is refused, never overwritten. Its numbers are written back exactly as they were spelled
(``1e999`` stays ``1e999``); text no UTF-8 file can hold (a lone surrogate escape) is refused; edits running at once
take turns through a lock file beside it (``<file>.nano-banana-mcp.lock``) and each reads the file again under the
lock, so none loses another's entry; the new file replaces the old one atomically, keeps its owner and mode (root
installing into a user's file leaves it that user's), and the old one is kept as ``<file>.bak``; a symbolic link that
points nowhere is refused, and no folder is made for it.
"""

from __future__ import annotations

import json
import os
import stat
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any, NoReturn

from filelock import FileLock, Timeout

from nano_banana_mcp.errors import ConfigError

__all__ = ["dumps", "edit", "read_config"]

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


def dumps(value: Any, indent: str = "") -> str:
    """``value`` as ``json.dumps(value, indent=2, ensure_ascii=False)`` writes it, numbers read from a file as
    they were spelled."""
    if isinstance(value, _Number):
        return value.text
    inner = indent + "  "
    if isinstance(value, Mapping):
        if not value:
            return "{}"
        items = (f"{inner}{json.dumps(str(k), ensure_ascii=False)}: {dumps(v, inner)}" for k, v in value.items())
        return "{\n" + ",\n".join(items) + f"\n{indent}}}"
    if isinstance(value, list | tuple):
        if not value:
            return "[]"
        return "[\n" + ",\n".join(f"{inner}{dumps(v, inner)}" for v in value) + f"\n{indent}]"
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
        dumps(document).encode("utf-8")
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
    data = (dumps(document) + "\n").encode("utf-8")
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


def edit(
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
