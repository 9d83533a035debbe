"""Named reference sets: a tenant's characters and styles, kept for good and used by name in any later call.

A set is a tenant's named, ordered list of images (at most :data:`MAX_SET_IMAGES`, the largest model's limit). Its
rows live in the ledger's database (table ``reference_sets``, SQLite or PostgreSQL: a set survives restarts, and every
replica on the database sees it); its images' bytes live in the image store (the output folder's ``references``
folder, or the bucket), named by content. Nothing of a set is an upload: each time a set is used, its images are
uploaded from the kept copy unless a still-valid upload of the same bytes is cached (uploads expire after 24 hours).
Another tenant's set answers exactly like one that does not exist.

``nano-banana://sets/{name}`` in ``images`` expands to ``nano-banana://sets/{name}/images/{n}``, one per image in
order (:meth:`ReferenceSets.expand`), before anything is read, uploaded or paid for: a request that the expansion
takes over its model's limit is refused there, naming the set. :mod:`.references` reads each such image back.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio.to_thread
from pydantic import BaseModel

from nano_banana_mcp import catalog
from nano_banana_mcp.catalog import GenerateRequest
from nano_banana_mcp.errors import InvalidRequest
from nano_banana_mcp.images.formats import EXTENSIONS
from nano_banana_mcp.images.reading import ReferenceFile
from nano_banana_mcp.storage import ImageStore
from nano_banana_mcp.tasks.records import now
from nano_banana_mcp.tasks.store import LedgerStore
from nano_banana_mcp.uris import SETS_URI, is_set_uri, parse_set_image_uri, parse_set_uri, set_image_uri, set_uri

__all__ = [
    "FOLDER",
    "MAX_SETS",
    "MAX_SET_IMAGES",
    "NAME_MAX_CHARS",
    "ReferenceSet",
    "ReferenceSets",
    "SetImage",
    "SetList",
    "SetNotFound",
    "SetSummary",
    "set_name",
]

MAX_SETS = 100
"""Sets one tenant keeps."""
MAX_SET_IMAGES = max(model.max_images for model in catalog.MODELS.values())
"""Images one set keeps: the largest model's limit (14)."""
NAME_MAX_CHARS = 32
FOLDER = "references"
"""Where a set's images are kept, below the store's staging folder (the output folder, for the folder store)."""

_NAME = re.compile(rf"[a-z0-9][a-z0-9._-]{{0,{NAME_MAX_CHARS - 1}}}")
_NAME_RULE = f"1 to {NAME_MAX_CHARS} letters a-z, digits, '-', '_' or '.', starting with a letter or digit"


class SetNotFound(InvalidRequest):
    """The tenant has no set of that name (another tenant's set is not told apart from none)."""


def set_name(raw: str, *, shown: str = "Set name") -> str:
    """A set's name as kept: trimmed and case-folded, checked (short, printable, usable in a URI)."""
    name = raw.strip().casefold()
    if not _NAME.fullmatch(name):
        raise InvalidRequest(f"{shown} {raw[:40]!r} is not usable: a set name is {_NAME_RULE}.")
    return name


class SetImage(BaseModel):
    index: int
    uri: str
    sha256: str
    mime_type: str
    size_bytes: int
    added_at: datetime


class ReferenceSet(BaseModel):
    """A set and its images, in the order ``nano-banana://sets/{name}`` expands to."""

    name: str
    uri: str
    images: list[SetImage]


class SetSummary(BaseModel):
    name: str
    uri: str
    size: int
    updated_at: datetime


class SetList(BaseModel):
    sets: list[SetSummary]
    max_sets: int = MAX_SETS
    max_images: int = MAX_SET_IMAGES


@dataclass(frozen=True)
class _Entry:
    position: int
    sha256: str
    mime_type: str
    size_bytes: int
    location: str
    added_at: datetime


_ENTRY = "position, sha256, mime_type, size_bytes, location, added_at"


@dataclass
class ReferenceSets:
    """A tenant's sets: rows in the ledger's database, bytes in the image store (see the module's docstring)."""

    ledger: LedgerStore
    store: ImageStore
    max_bytes: int
    """The largest image a set keeps (the reference limit, NANO_BANANA_MAX_REFERENCE_BYTES)."""

    # -- reading -------------------------------------------------------------------------------

    async def list_sets(self, tenant: str) -> SetList:
        """The tenant's sets by name, each with its size."""
        rows = await self._sql(
            "SELECT name, count(*), max(added_at) FROM reference_sets WHERE tenant = ? GROUP BY name ORDER BY name",
            tenant,
        )
        return SetList(
            sets=[
                SetSummary(name=name, uri=set_uri(name), size=int(size), updated_at=self._when(added))
                for name, size, added in rows
            ]
        )

    async def get(self, name: str, tenant: str) -> ReferenceSet:
        """The tenant's set and its images; :class:`SetNotFound` when it has none of that name."""
        name = set_name(name)
        entries = await self._entries(name, tenant)
        if not entries:
            raise self._unknown(name)
        return self._shown(name, entries)

    async def names(self, prefix: str, tenant: str) -> list[str]:
        """The tenant's set names that start with ``prefix`` (case-folded), at most 100: for completion."""
        start = prefix.strip().casefold()
        rows = await self._sql("SELECT DISTINCT name FROM reference_sets WHERE tenant = ? ORDER BY name", tenant)
        return [name for (name,) in rows if name.startswith(start)][:100]

    async def image(self, name: str, index: int, tenant: str) -> bytes:
        """The kept bytes of image ``index`` of the tenant's set (read only from inside the image store)."""
        name = set_name(name)
        entries = await self._entries(name, tenant)
        if not entries:
            raise self._unknown(name)
        if not 0 <= index < len(entries):
            raise InvalidRequest(
                f"Set {name!r} has {len(entries)} image{'s' * (len(entries) != 1)} (numbered from 0): no image {index}."
            )
        return await self.store.read(entries[index].location, self.max_bytes)

    # -- changing ------------------------------------------------------------------------------

    @staticmethod
    def check_name(name: str) -> str:
        """The name as kept (see :func:`set_name`), or its one-line refusal."""
        return set_name(name)

    async def add(self, name: str, ref: ReferenceFile, tenant: str) -> tuple[ReferenceSet, int]:
        """Keep ``ref`` at the end of the tenant's set (made if new); the set and the image's index. An image already
        in the set is not added again (its index is returned). Bounded: :data:`MAX_SETS`, :data:`MAX_SET_IMAGES`,
        ``max_bytes``, each refused in one line before anything is kept."""
        name = set_name(name)
        if len(ref.data) > self.max_bytes:
            raise InvalidRequest(
                f"The image is {len(ref.data) / 1e6:.1f} MB; a set keeps images of at most {self.max_bytes / 1e6:.0f} "
                "MB. Resize or recompress it first."
            )
        for _ in range(5):  # another call adding to the same set at the same moment: read again, then insert again
            entries = await self._entries(name, tenant)
            same = next((i for i, e in enumerate(entries) if e.sha256 == ref.sha256), None)
            if same is not None:
                return self._shown(name, entries), same
            self._check_room(name, entries, await self._count_sets(tenant))
            location = await self._keep(ref)  # the bytes first: a row never names bytes that are not kept
            added = await self._sql(
                "INSERT INTO reference_sets (tenant, name, position, sha256, mime_type, size_bytes, location, "
                "added_at) SELECT ?, ?, coalesce(max(position) + 1, 0), ?, ?, ?, ?, ? FROM reference_sets "
                "WHERE tenant = ? AND name = ? HAVING count(*) < ? ON CONFLICT DO NOTHING RETURNING position",
                tenant,
                name,
                ref.sha256,
                ref.mime_type,
                len(ref.data),
                location,
                now(),
                tenant,
                name,
                MAX_SET_IMAGES,
            )
            if added:
                entries = await self._entries(name, tenant)
                index = next(i for i, e in enumerate(entries) if e.sha256 == ref.sha256)
                return self._shown(name, entries), index
        raise InvalidRequest(f"Set {name!r} is being changed by other calls right now; try again.")

    async def remove(self, name: str, index: int | None, tenant: str) -> ReferenceSet | None:
        """Remove image ``index`` of the tenant's set, or (None) the whole set; the set as it is left (None: gone).

        The kept bytes stay in the image store (another set, or tenant, may keep the same image)."""
        name = set_name(name)
        if index is None:
            gone = await self._sql(
                "DELETE FROM reference_sets WHERE tenant = ? AND name = ? RETURNING position", tenant, name
            )
            if not gone:
                raise self._unknown(name)
            return None
        if index < 0:
            raise InvalidRequest(f"Image numbers start at 0; got {index}.")
        gone = await self._sql(
            "DELETE FROM reference_sets WHERE tenant = ? AND name = ? AND position = (SELECT position FROM "
            "reference_sets WHERE tenant = ? AND name = ? ORDER BY position LIMIT 1 OFFSET ?) RETURNING position",
            tenant,
            name,
            tenant,
            name,
            index,
        )
        entries = await self._entries(name, tenant)
        if not gone:
            if not entries:
                raise self._unknown(name)
            raise InvalidRequest(
                f"Set {name!r} has {len(entries)} image{'s' * (len(entries) != 1)} (numbered from 0): no image {index}."
            )
        return self._shown(name, entries) if entries else None

    # -- using ---------------------------------------------------------------------------------

    async def expand(self, request: GenerateRequest, tenant: str) -> GenerateRequest:
        """``request`` with each ``nano-banana://sets/{name}`` in ``images`` replaced by its images' URIs in order, and
        the sets it names in ``sets``; refused (naming the set, its size and the model's limit) when that takes it
        over the model's limit. Reads the ledger only: nothing is uploaded or paid for here."""
        if not any(is_set_uri(ref) for ref in request.images):
            return request
        images: list[str] = []
        used: dict[str, tuple[int, int]] = {}  # name -> (its size, times named whole)
        for position, ref in enumerate(request.images):
            whole = parse_set_uri(ref)
            if whole is None:
                one = parse_set_image_uri(ref)
                if one is not None:
                    used.setdefault(set_name(one.name, shown=f"images[{position}]: the set"), (0, 0))
                images.append(ref)
                continue
            name = set_name(whole, shown=f"images[{position}]: the set")
            entries = await self._entries(name, tenant)
            if not entries:
                raise self._unknown(name, f"images[{position}] names set {name!r}, which does not exist")
            images.extend(set_image_uri(name, i) for i in range(len(entries)))
            used[name] = (len(entries), used.get(name, (0, 0))[1] + 1)
        _check_limit(request.model, images, used)
        return request.model_copy(update={"images": tuple(images), "sets": tuple(set_uri(n) for n in used)})

    # -- helpers -------------------------------------------------------------------------------

    def _check_room(self, name: str, entries: Sequence[_Entry], sets: int) -> None:
        if len(entries) >= MAX_SET_IMAGES:
            raise InvalidRequest(
                f"Set {name!r} is full: it has {len(entries)} images, the most a set keeps (the largest model's "
                f"limit). Remove one first (nano-banana-mcp sets remove {name} INDEX), or start another set."
            )
        if not entries and sets >= MAX_SETS:
            raise InvalidRequest(
                f"You have {sets} sets, the most kept for one user: add to one of them, or remove one first "
                "(nano-banana-mcp sets remove NAME)."
            )

    async def _keep(self, ref: ReferenceFile) -> str:
        """Keep the image's bytes in the store, named by their content; its location."""
        folder = self.store.staging / FOLDER
        path = folder / f"ref-{ref.sha256}{EXTENSIONS[ref.mime_type]}"
        await anyio.to_thread.run_sync(_write_once, path, ref.data)
        return await self.store.put(path, ref.mime_type)

    async def _entries(self, name: str, tenant: str) -> list[_Entry]:
        rows = await self._sql(
            f"SELECT {_ENTRY} FROM reference_sets WHERE tenant = ? AND name = ? ORDER BY position", tenant, name
        )
        return [_Entry(int(p), sha, mime, int(size), loc, self._when(at)) for p, sha, mime, size, loc, at in rows]

    async def _count_sets(self, tenant: str) -> int:
        [(count,)] = await self._sql("SELECT count(DISTINCT name) FROM reference_sets WHERE tenant = ?", tenant)
        return int(count)

    def _shown(self, name: str, entries: Sequence[_Entry]) -> ReferenceSet:
        return ReferenceSet(
            name=name,
            uri=set_uri(name),
            images=[
                SetImage(
                    index=i,
                    uri=set_image_uri(name, i),
                    sha256=e.sha256,
                    mime_type=e.mime_type,
                    size_bytes=e.size_bytes,
                    added_at=e.added_at,
                )
                for i, e in enumerate(entries)
            ],
        )

    @staticmethod
    def _unknown(name: str, what: str | None = None) -> SetNotFound:
        return SetNotFound(
            f"{what or f'There is no set {name!r}'}: read {SETS_URI} for your sets, or make it with "
            f"upload_reference(path, set={name!r}) or `nano-banana-mcp sets add {name} IMAGE`."
        )

    async def _sql(self, query: str, *params: Any) -> list[tuple[Any, ...]]:
        """One statement, written with ``?`` (the ledger spells it, and the times in it, for its database)."""
        return await self.ledger.run_sql(query, params)

    @staticmethod
    def _when(value: object) -> datetime:
        moment = datetime.fromisoformat(value) if isinstance(value, str) else value
        assert isinstance(moment, datetime)
        return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _check_limit(model: str, images: Sequence[str], used: dict[str, tuple[int, int]]) -> None:
    """Refuse a request the sets took over ``model``'s limit, naming each set and its size."""
    limit = catalog.MODELS[model].max_images
    if len(images) <= limit:
        return
    named = ", ".join(
        f"set {name!r} has {size} image{'s' * (size != 1)}" + (f" (named {times} times)" if times > 1 else "")
        for name, (size, times) in used.items()
        if times
    )
    others = len(images) - sum(size * times for size, times in used.values())
    extra = f", with {others} other reference{'s' * (others != 1)}" if others else ""
    roomier = [m.name for m in catalog.MODELS.values() if m.max_images >= len(images)]
    hint = f"use {' or '.join(roomier)}, or fewer references" if roomier else "use fewer references"
    raise InvalidRequest(
        f"images: {named}{extra}: {len(images)} references in all, and {model} takes at most {limit}; {hint}."
    )


def _write_once(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` whole (a part file renamed), unless the same bytes are there already."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        if path.stat().st_size == len(data) and path.read_bytes() == data:
            return
    except OSError:
        pass
    part = path.with_name(f".{path.name}.{secrets.token_hex(4)}.part")
    try:
        part.write_bytes(data)
        part.replace(path)
    finally:
        part.unlink(missing_ok=True)
