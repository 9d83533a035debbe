"""Saving a finished task's image: downloaded to a part file, checked, finished (format, provenance) in place, and
renamed once to its final name."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import anyio

from nano_banana_mcp.errors import TaskNotFound, UnsavableImage
from nano_banana_mcp.images.decoding import ImageMeta, image_meta
from nano_banana_mcp.images.finishing import finish_in_place
from nano_banana_mcp.images.naming import output_path
from nano_banana_mcp.images.provenance import Provenance
from nano_banana_mcp.monet import MonetClient
from nano_banana_mcp.observability import metrics, traces
from nano_banana_mcp.storage import ImageStore, StorageError
from nano_banana_mcp.tasks.records import SavedImage, TaskRecord

__all__ = ["Saver", "fetch", "read_saved", "verified_meta"]


async def fetch(
    client: MonetClient, record: TaskRecord, index: int, url: str, out_dir: Path, *, max_bytes: int
) -> tuple[Path, ImageMeta]:
    """Download output ``index`` into ``out_dir``, check it is a whole image and finish it (format, provenance)
    under its temporary name, then rename it once: written once under its final name."""
    dest = output_path(out_dir, record.key, index, "image/png", record.created_at)  # names the part file
    provenance = Provenance(
        prompt=record.request.prompt,
        model=record.request.model,
        task_id=record.handle,
        created_at=record.created_at,
        offline=record.offline,
        reference_sets=record.request.sets,
    )
    finished: list[ImageMeta] = []  # filled by the finish of the part file, in a worker thread

    def finish(part: Path, finished: list[ImageMeta] = finished) -> Path:
        verified_meta(part)
        try:  # the request's output format, and what made the image written into the file
            meta = finish_in_place(part, output_format=record.request.output_format, provenance=provenance)
        except ValueError as err:
            raise UnsavableImage(f"The image could not be finished ({err}).") from err
        finished.append(meta)
        return output_path(out_dir, record.key, index, meta.mime_type, record.created_at)

    got = await client.download(url, dest, max_bytes=max_bytes, check=finish)
    [meta] = finished
    return got.path, meta


def verified_meta(path: Path) -> ImageMeta:
    """The image's type and size (run on the part file, before it is finished and renamed).

    Raises UnsavableImage unless it is a whole image of an allowed format that decodes within the pixel cap
    (``image_meta``): the same bytes would fail again, so the task ends instead of downloading them forever.
    """
    try:
        return image_meta(path, verify=True)
    except ValueError as err:
        raise UnsavableImage(f"The API sent a file that is not an image this server accepts: {err}.") from err


class Saver:
    """Saves every image of a finished task into the store (the output folder, or a bucket), each once.

    An image downloaded and finished whose store did not take it yet (a bucket down) is kept for the next try, so
    the API's URL is not needed again.
    """

    def __init__(self, store: ImageStore, max_bytes: int) -> None:
        self._store = store
        self._max_bytes = max_bytes
        self._staged: dict[tuple[str, int], tuple[Path, ImageMeta]] = {}

    async def save(
        self,
        record: TaskRecord,
        client: Callable[[], MonetClient],
        saved: Callable[[TaskRecord], Awaitable[None]],
    ) -> None:
        """Save the images of ``record`` not in the store yet, calling ``saved`` after each (it writes the row)."""
        out_dir = self._store.staging  # the output folder, or where a bucket's images are made before the upload
        await anyio.Path(out_dir).mkdir(parents=True, exist_ok=True)
        for index, image in enumerate(record.images):
            if image.path is not None and await self._store.has(image.path):
                continue
            staged = self._staged.get((record.key, index))
            if staged is not None and await anyio.Path(staged[0]).is_file():
                final, meta = staged  # made on an earlier try whose upload failed
            else:
                final, meta = await fetch(client(), record, index, image.url, out_dir, max_bytes=self._max_bytes)
                self._staged[record.key, index] = (final, meta)
            size = (await anyio.Path(final).stat()).st_size
            with traces.span("nano_banana.store", **{"nano_banana.image.bytes": size}):
                location = await self._store.put(final, meta.mime_type)
            metrics.image_saved(record.request.model, size)
            del self._staged[record.key, index]
            record.saved(
                index,
                SavedImage(
                    path=location,
                    url=image.url,
                    mime_type=meta.mime_type,
                    width=meta.width,
                    height=meta.height,
                    size_bytes=size,
                ),
            )
            await saved(record)

    def forget(self, key: str) -> None:
        """Drop what is kept of a row this process no longer works."""
        for staged in [s for s in self._staged if s[0] == key]:
            del self._staged[staged]


async def read_saved(store: ImageStore, handle: str, index: int, images: Sequence[SavedImage], max_bytes: int) -> bytes:
    """Saved image ``index`` of a task's ``images``, read from the store, and only from inside it (the output folder,
    or the bucket and prefix): the ledger is not trusted."""
    if not 0 <= index < len(images):
        raise TaskNotFound(f"Task {handle} has no image {index}.")
    location = images[index].path
    if location is None:
        raise TaskNotFound(f"Image {index} of task {handle} is not saved yet; try get_task first.")
    try:
        return await store.read(location, max_bytes)
    except StorageError as err:
        raise TaskNotFound(f"Image {index} of task {handle} cannot be served: {err}") from err
