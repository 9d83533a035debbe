"""Saving a finished task's image: downloaded to a part file, checked, finished (format, provenance) in place, and
renamed once to its final name."""

from __future__ import annotations

from pathlib import Path

from nano_banana_mcp.errors import UnsavableImage
from nano_banana_mcp.images.decoding import ImageMeta, image_meta
from nano_banana_mcp.images.finishing import finish_in_place
from nano_banana_mcp.images.naming import output_path
from nano_banana_mcp.images.provenance import Provenance
from nano_banana_mcp.monet import MonetClient
from nano_banana_mcp.tasks.records import TaskRecord

__all__ = ["fetch", "verified_meta"]


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
