"""Small JPEG previews of saved images, made once per version of an image and kept in memory."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable

import anyio
import anyio.to_thread

from nano_banana_mcp.images.decoding import thumbnail
from nano_banana_mcp.storage import ImageStore

__all__ = ["PREVIEWS_KEPT", "Previews"]

PREVIEWS_KEPT = 64  # previews are at most THUMBNAIL_MAX_BYTES (80 KB): ~5 MB in all

PreviewKey = Hashable


class Previews:
    """Previews made once per version of an image and kept in memory (the newest ``size``), by the key its store
    gives that version (a file's path, inode, size and modification time: a file replaced or edited gets a new
    preview; an object's location). One caller makes it while the others wait.

    Memory rather than files in the data dir: nothing to prune or to trust on the way back, and a restart only
    costs one (capped) decode per image shown again. A file that cannot be previewed keeps its reason, so it is
    not decoded again either.
    """

    def __init__(self, size: int) -> None:
        self._size = size
        # key -> (the preview, or None and the reason it cannot be made)
        self._kept: OrderedDict[PreviewKey, tuple[tuple[bytes, str] | None, str]] = OrderedDict()
        self._making: dict[PreviewKey, anyio.Event] = {}

    async def get(self, store: ImageStore, location: str, limiter: anyio.CapacityLimiter) -> tuple[bytes, str]:
        key = await store.version(location)  # a kept preview costs no read of the image
        while (kept := self._kept.get(key)) is None:
            making = self._making.get(key)
            if making is not None:
                await making.wait()  # another call is making this very preview; then look again
                continue
            self._making[key] = done = anyio.Event()
            try:
                try:
                    source = await store.source(location)
                    self._kept[key] = (await anyio.to_thread.run_sync(thumbnail, source, limiter=limiter), "")
                except ValueError as err:
                    self._kept[key] = (None, str(err))
                while len(self._kept) > self._size:
                    self._kept.popitem(last=False)
            finally:  # made, failed or cancelled: the next waiter finds it kept, or makes it
                del self._making[key]
                done.set()
        self._kept.move_to_end(key)
        preview, reason = kept
        if preview is None:
            raise ValueError(reason)
        return preview
