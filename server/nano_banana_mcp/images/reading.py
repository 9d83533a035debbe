"""Reading reference images: only from the folders this server may read, never a hidden one, and from the very file
that was checked (a reference is read from the descriptor that was checked, never opened again by its path), then
decoded whole within the pixel cap before it is uploaded.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import stat
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from nano_banana_mcp.errors import ReferenceImageError
from nano_banana_mcp.images.decoding import checked_meta
from nano_banana_mcp.images.formats import EXTENSIONS

__all__ = ["ReferenceFile", "check_reference", "client_root", "reference_from_bytes"]

_KINDS = "PNG, JPEG, WebP or GIF"


@dataclass(frozen=True, slots=True)
class ReferenceFile:
    """A local reference image that passed the checks, read into memory for upload."""

    path: Path | None  # None for an image that came as bytes (a data: URI)
    data: bytes
    mime_type: str
    sha256: str

    @property
    def upload_name(self) -> str:
        # The API sees a neutral name: no part of the user's path leaves the machine.
        return f"reference-{self.sha256[:12]}{EXTENSIONS[self.mime_type]}"


def check_reference(path: str | Path, *, max_bytes: int, roots: Sequence[Path]) -> ReferenceFile:
    """Read a local reference image, or refuse it naming the rule it breaks.

    The path is resolved first (symlinks followed), then it must lie inside one of ``roots`` and not in a hidden
    folder below that root. That very path is then opened without following any link (see :func:`_open_exactly`),
    so a file or folder swapped for a link or a FIFO after the check is refused, not read. The opened descriptor
    must be a regular file of at most ``max_bytes``; only it is read, and its content must decode as an image of
    an allowed format within the pixel cap.
    """
    shown = str(path)[:200]
    if "\x00" in str(path):  # os calls refuse it with a ValueError of their own
        raise ReferenceImageError(
            f"Reference image {shown!r} holds a NUL character, which no file path can. Pass the absolute path of an "
            "existing image file, or an https:// URL."
        )
    try:
        resolved = Path(path).expanduser().resolve(strict=True)
    except (OSError, RuntimeError, ValueError) as err:
        raise ReferenceImageError(
            f"Reference image {shown!r} was not found. Pass the absolute path of an existing image file, "
            "or an https:// URL."
        ) from err
    root = next((r for r in roots if resolved.is_relative_to(r)), None)
    if root is None:
        raise ReferenceImageError(
            f"Reference image {shown!r} is outside the folders this server may read "
            f"({', '.join(str(r) for r in roots)}). Add its folder to NANO_BANANA_ALLOWED_DIRS (or --allowed-dir), "
            "or copy the image into one of them."
        )
    hidden = next((part for part in resolved.relative_to(root).parts if part.startswith(".")), None)
    if hidden is not None:
        raise ReferenceImageError(
            f"Reference image {shown!r} is in or is a hidden item ({hidden}); hidden files and folders such as "
            "~/.ssh are never read. Copy the image somewhere visible."
        )
    not_a_file = ReferenceImageError(f"Reference image {shown!r} is not a regular file.")
    if not resolved.is_file():  # the clear answer for a folder or a device; the descriptor is checked again below
        raise not_a_file
    try:
        fd = _open_exactly(resolved)
    except OSError as err:
        if err.errno in (errno.ELOOP, errno.ENOTDIR, errno.ENOENT, errno.EMLINK):
            raise ReferenceImageError(
                f"Reference image {shown!r} changed while it was being checked (it or a folder above it was moved, "
                "or replaced by a link); it was not read. Pass it again once it stays where it is."
            ) from err
        raise ReferenceImageError(f"Reference image {shown!r} could not be read ({err.strerror}).") from err
    with os.fdopen(fd, "rb") as file:
        info = os.fstat(file.fileno())
        if not stat.S_ISREG(info.st_mode):  # a FIFO or device swapped in: never read (it was opened non-blocking)
            raise not_a_file
        if info.st_size > max_bytes:
            raise ReferenceImageError(
                f"Reference image {shown!r} is {info.st_size / 1e6:.1f} MB; the limit is {max_bytes / 1e6:.0f} MB. "
                "Resize or recompress it first."
            )
        try:
            data = file.read(max_bytes + 1)  # the file may have grown since the size check
        except OSError as err:
            raise ReferenceImageError(f"Reference image {shown!r} could not be read ({err.strerror}).") from err
    if len(data) > max_bytes:
        raise ReferenceImageError(f"Reference image {shown!r} is over the {max_bytes / 1e6:.0f} MB limit.")
    try:
        meta = checked_meta(io.BytesIO(data))
    except ValueError as err:
        raise ReferenceImageError(
            f"Reference image {shown!r} cannot be used: {err} (checked by its content, not its name). "
            f"Pass a {_KINDS} image, resized if it is very large."
        ) from err
    return ReferenceFile(path=resolved, data=data, mime_type=meta.mime_type, sha256=hashlib.sha256(data).hexdigest())


_SPECIAL_FOLDERS = tuple(Path(p) for p in ("/proc", "/sys", "/dev")) if os.name == "posix" else ()
"""The kernel's folders of special files: never a root, nor inside one."""


def client_root(path: str | Path) -> Path:
    """A folder an MCP client declared as a root (stdio only), resolved; else ReferenceImageError saying why it is
    not read from.

    The rules for a file inside a root hold for the root itself: links are followed first and the folder they lead
    to is what is judged; it must be a folder (not a file, a FIFO or a device), with no hidden folder on its path
    (``~/.cache``, or anything inside it, names nothing readable); and it may not be the whole disk, a folder above
    the home folder (``/``, ``/home``) or a folder of the kernel's special files (``/proc``, ``/sys``, ``/dev``).
    """
    shown = str(path)[:200]
    try:
        resolved = Path(path).expanduser().resolve(strict=True)
    except (OSError, RuntimeError, ValueError) as err:
        raise ReferenceImageError(f"the root {shown!r} does not exist") from err
    if not resolved.is_dir():
        raise ReferenceImageError(f"the root {shown!r} is not a folder")
    hidden = next((part for part in resolved.parts if part.startswith(".")), None)
    if hidden is not None:
        raise ReferenceImageError(f"the root {shown!r} is or is inside a hidden folder ({hidden})")
    try:
        home: Path | None = Path.home().resolve()
    except (OSError, RuntimeError):  # no home folder known: only the whole disk is too wide
        home = None
    if resolved.parent == resolved or (home is not None and resolved != home and home.is_relative_to(resolved)):
        raise ReferenceImageError(f"the root {shown!r} holds the whole disk or every user's home folder")
    if any(resolved.is_relative_to(folder) for folder in _SPECIAL_FOLDERS):
        raise ReferenceImageError(f"the root {shown!r} is a folder of the system's special files")
    return resolved


if sys.platform == "win32":

    def _open_exactly(path: Path) -> int:
        """``path`` opened for reading, only if the opened file's final path is ``path`` itself.

        Windows has no O_NOFOLLOW: the file is opened, then the handle's final path (links and junctions resolved)
        must be the path that was checked.
        """
        fd = os.open(path, os.O_RDONLY | os.O_BINARY)
        try:
            final = _final_path(fd)
        except OSError:
            os.close(fd)
            raise
        if os.path.normcase(final) != os.path.normcase(str(path)):
            os.close(fd)
            raise OSError(errno.ELOOP, f"the path now leads to {final}")
        return fd

    def _final_path(fd: int) -> str:
        """The final path of an open file (GetFinalPathNameByHandleW), without the ``\\\\?\\`` prefix."""
        import ctypes  # noqa: PLC0415
        import msvcrt  # noqa: PLC0415
        from ctypes import wintypes  # noqa: PLC0415

        get = ctypes.windll.kernel32.GetFinalPathNameByHandleW
        get.argtypes = (wintypes.HANDLE, wintypes.LPWSTR, wintypes.DWORD, wintypes.DWORD)
        get.restype = wintypes.DWORD
        buffer = ctypes.create_unicode_buffer(32_768)
        length = get(msvcrt.get_osfhandle(fd), buffer, len(buffer), 0)  # FILE_NAME_NORMALIZED, VOLUME_NAME_DOS
        if not 0 < length < len(buffer):
            raise ctypes.WinError()
        final = buffer.value
        if final.startswith("\\\\?\\UNC\\"):
            return "\\\\" + final[8:]
        return final.removeprefix("\\\\?\\")

else:
    _FOLDER = os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_PATH", os.O_RDONLY)  # O_PATH: no read right needed
    _FILE = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY

    def _open_exactly(path: Path) -> int:
        """``path`` (absolute, resolved) opened one name at a time from ``/``, following no link on the way.

        Each folder is opened relative to the one before (``dir_fd``) with O_NOFOLLOW, and the file with
        O_NOFOLLOW and O_NONBLOCK (a FIFO opens at once instead of waiting for a writer): a name swapped for a link
        since the path was checked fails with ELOOP or ENOTDIR, so what is opened is what was checked.
        """
        anchor, *folders, name = path.parts
        fd = os.open(anchor, _FOLDER)
        try:
            for folder in folders:
                inner = os.open(folder, _FOLDER, dir_fd=fd)
                os.close(fd)
                fd = inner
            return os.open(name, _FILE, dir_fd=fd)
        finally:
            os.close(fd)


def reference_from_bytes(data: bytes, *, max_bytes: int, shown: str) -> ReferenceFile:
    """A reference image given as bytes (a ``data:`` URI), checked like a file: size, then a capped decode."""
    if len(data) > max_bytes:
        raise ReferenceImageError(
            f"Reference image {shown} is {len(data) / 1e6:.1f} MB; the limit is {max_bytes / 1e6:.0f} MB. "
            "Resize or recompress it first."
        )
    try:
        meta = checked_meta(io.BytesIO(data))
    except ValueError as err:
        raise ReferenceImageError(
            f"Reference image {shown} cannot be used: {err}. Pass a {_KINDS} image, resized if it is very large."
        ) from err
    return ReferenceFile(path=None, data=data, mime_type=meta.mime_type, sha256=hashlib.sha256(data).hexdigest())
