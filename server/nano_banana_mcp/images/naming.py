"""Output names: where each output of a task is saved, a name the server chooses."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

from nano_banana_mcp.images.formats import EXTENSIONS

__all__ = ["output_path"]

_SAFE = re.compile(r"[^A-Za-z0-9]+")


def output_path(output_dir: Path, local_id: str, index: int, mime_type: str | None, when: datetime) -> Path:
    """Where output ``index`` of a task is saved: a name the server chooses, inside ``output_dir``.

    Nothing from the prompt or the API goes into it, only the time and our own request id.
    """
    stamp = when.astimezone(UTC).strftime("%Y%m%d-%H%M%S")
    ident = _SAFE.sub("", local_id)[:12] or "image"
    extension = EXTENSIONS.get(mime_type or "", ".png")
    return output_dir / f"nano-banana-{stamp}-{ident}-{index + 1}{extension}"
