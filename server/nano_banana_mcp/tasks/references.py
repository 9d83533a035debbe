"""Reference images: what ``generate_image`` and ``upload_reference`` take, each checked before anything is paid
for, and uploaded once.

A reference is an https:// URL (passed on), a URL of this API's own uploads, a ``data:image/...;base64`` URI, the
``nano-banana://tasks/{id}/images/{n}`` URI of an earlier result of this server, an image of one of the tenant's
sets (``nano-banana://sets/{name}/images/{n}``, read from its kept copy: :mod:`.sets`), or a local path read only
from the allowed folders. Every one is checked before the first is uploaded, and an upload is cached by content per
tenant for a day (the API keeps uploads 24 hours), so the same image is not uploaded twice.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from urllib.parse import urlsplit

import anyio
import anyio.to_thread
from pydantic import BaseModel

from nano_banana_mcp.config import Settings
from nano_banana_mcp.errors import DownloadError, HostNotAllowed, InvalidRequest, ReferenceImageError
from nano_banana_mcp.images.reading import ReferenceFile, check_reference, client_root, reference_from_bytes
from nano_banana_mcp.monet import MonetClients
from nano_banana_mcp.storage import STAGING, ImageStore
from nano_banana_mcp.tasks.records import now
from nano_banana_mcp.tasks.saving import read_saved
from nano_banana_mcp.tasks.sets import ReferenceSets
from nano_banana_mcp.tasks.store import LedgerStore
from nano_banana_mcp.uris import is_set_uri, parse_image_uri, parse_set_image_uri

__all__ = ["UPLOAD_LIFETIME", "References", "RootsProvider", "UploadedReference"]

log = logging.getLogger(__name__)

RootsProvider = Callable[[], Awaitable[list[Path]]]
"""Folders the MCP client declared as its roots; asked only when a local file is to be read. Given only on a
connection that shares the server's machine (stdio): over HTTP, a client's roots never name the server's folders."""

UPLOAD_LIFETIME = timedelta(hours=24)
UPLOAD_REUSE_MARGIN = timedelta(hours=1)


class UploadedReference(BaseModel):
    url: str
    expires_at: datetime
    sha256: str
    mime_type: str
    size_bytes: int


_DATA_URI = re.compile(r"(?i:data:image/(png|jpeg|jpg|webp|gif);base64),(.*)", re.DOTALL)


def _usable_roots(declared: Sequence[Path]) -> list[Path]:
    """The client's roots that the reading rules allow as a whole (:func:`~nano_banana_mcp.images.reading.client_root`),
    resolved; each other one is logged and not read from."""
    usable = []
    for root in declared:
        try:
            usable.append(client_root(root))
        except ReferenceImageError as why:
            log.warning("Not reading from the MCP client's root: %s.", why)
    return usable


@dataclass
class References:
    """Resolves and uploads a tenant's reference images (see the module's docstring)."""

    settings: Settings
    ledger: LedgerStore
    clients: MonetClients
    tenants: bool
    """Several tenants share the server: none reads the output folder by path (it holds every tenant's images)."""
    store: ImageStore
    """Where saved outputs are kept: an earlier result used as a reference is read only from inside it."""
    sets: ReferenceSets = field(init=False, repr=False)
    """The tenants' named sets, kept in the ledger's database and the same store."""

    def __post_init__(self) -> None:
        self.sets = ReferenceSets(self.ledger, self.store, self.settings.max_reference_bytes)

    async def resolve(self, images: Sequence[str], client_roots: RootsProvider | None, tenant: str) -> tuple[str, ...]:
        """Every reference as a URL the API takes: each checked first, then the images among them uploaded (once)."""
        resolved = await self._resolve(images, client_roots, tenant)
        return tuple([ref if isinstance(ref, str) else await self.upload_cached(ref, tenant) for ref in resolved])

    async def upload(
        self, path: str, client_roots: RootsProvider | None, tenant: str, *, into: str | None = None
    ) -> UploadedReference:
        """Upload one local reference image (checked first); reuse a still-valid earlier upload of this tenant. With
        ``into``, ``path`` may be any reference, kept in the tenant's set of that name too (:meth:`keep`)."""
        if into is not None:
            return await self.keep(path, into, client_roots, tenant)
        self.clients.require(tenant)  # no key for this tenant: say so before reading anything
        roots = await self._roots(client_roots)
        ref = await anyio.to_thread.run_sync(self._check_one, path, roots)
        return await self.uploaded(ref, tenant)

    async def uploaded(self, ref: ReferenceFile, tenant: str) -> UploadedReference:
        """Upload a checked image (reusing a still-valid earlier upload of this tenant): its URL and expiry."""
        url = await self.upload_cached(ref, tenant)
        expires = await self.ledger.cached_upload(ref.sha256, tenant=tenant)
        assert expires is not None
        return UploadedReference(
            url=url, expires_at=expires[1], sha256=ref.sha256, mime_type=ref.mime_type, size_bytes=len(ref.data)
        )

    async def keep(self, ref: str, set_name: str, client_roots: RootsProvider | None, tenant: str) -> UploadedReference:
        """Keep any one reference (a file, an https:// URL, a data: URI, an earlier result) in the tenant's set of that
        name (made if new; see :mod:`.sets`), and upload it as :meth:`upload` does."""
        self.sets.check_name(set_name)  # a bad name, or no key for this tenant: said before reading anything
        self.clients.require(tenant)
        image = await self.read_one(ref, client_roots, tenant)
        await self.sets.add(set_name, image, tenant)
        return await self.uploaded(image, tenant)

    async def read_one(self, ref: str, client_roots: RootsProvider | None, tenant: str) -> ReferenceFile:
        """Any one reference as a checked image in memory, to be kept (in a set): a local path, a ``data:`` URI, an
        earlier result or set image, or an https:// URL (downloaded, from an allowed host only)."""
        if ref.startswith("https://") or self._is_own_upload(ref):
            return await self._fetched(_checked_url(0, ref), tenant)
        [item] = await self._resolve([ref], client_roots, tenant)
        assert not isinstance(item, str)
        return item

    async def _fetched(self, url: str, tenant: str) -> ReferenceFile:
        """The image at ``url``, downloaded (from the download allowlist's hosts only: a server does not fetch what
        anyone names) and checked."""
        client = self.clients.require(tenant)
        limit = self.settings.max_reference_bytes
        folder = self.settings.data_dir / STAGING
        await anyio.Path(folder).mkdir(parents=True, exist_ok=True)
        dest = folder / f"fetched-{secrets.token_hex(8)}"
        shown = url.split("?", 1)[0][:120]
        try:
            await client.download(url, dest, max_bytes=limit)
            data = await anyio.Path(dest).read_bytes()
        except HostNotAllowed:
            raise InvalidRequest(
                f"{shown} is not fetched: its host is not on the download allowlist. Add it to "
                "NANO_BANANA_DOWNLOAD_HOSTS if you trust it, or pass the image as a local file or data: URI."
            ) from None
        except DownloadError as err:
            raise InvalidRequest(f"{shown} could not be fetched: {err}") from err
        finally:
            await anyio.Path(dest).unlink(missing_ok=True)
        return await anyio.to_thread.run_sync(partial(reference_from_bytes, data, max_bytes=limit, shown=shown))

    def _check_one(self, path: str, roots: Sequence[Path]) -> ReferenceFile:
        """A local reference, read only from ``roots``; with tenants, never from the output folder or the data folder
        (where a bucket's images are made) by path: they hold every tenant's images, and each tenant reaches its own
        through their ``nano-banana://`` URIs."""
        try:
            resolved: Path | None = Path(path).expanduser().resolve()
        except (OSError, RuntimeError, ValueError):  # a NUL character, a link loop: check_reference says which
            resolved = None
        shared = (self.settings.output_dir, self.settings.data_dir)
        if resolved is not None and self.tenants and any(resolved.is_relative_to(folder) for folder in shared):
            raise InvalidRequest(
                f"{path[:200]!r} is in the server's output folder or data folder, which are not read by path here: "
                "pass an image's nano-banana://tasks/{task_id}/images/{n} URI (each result's images[].uri) instead."
            )
        return check_reference(path, max_bytes=self.settings.max_reference_bytes, roots=roots)

    async def _roots(self, client_roots: RootsProvider | None) -> list[Path]:
        extra = await client_roots() if client_roots is not None else []
        return [*self.settings.reference_roots(), *await anyio.to_thread.run_sync(_usable_roots, extra)]

    async def _resolve(
        self, images: Sequence[str], client_roots: RootsProvider | None, tenant: str
    ) -> list[str | ReferenceFile]:
        """Each reference as a URL to pass on, or an image to upload; every one is checked before any is uploaded.

        https:// URLs (and this API's own upload URLs) pass as they are; a ``data:image/...;base64`` URI is decoded
        and checked like a file (the API takes URLs only, so it is uploaded); ``nano-banana://tasks/{id}/images/{n}``
        is the saved file of an earlier result of this server; anything else is a local path, read only from the
        allowed folders.
        """
        resolved: list[str | ReferenceFile] = []
        roots: list[Path] | None = None
        for index, ref in enumerate(images):
            if ref.startswith("https://") or self._is_own_upload(ref):
                resolved.append(_checked_url(index, ref))
            elif ref[:5].lower() == "data:":
                resolved.append(await anyio.to_thread.run_sync(self._data_reference, index, ref))
            elif is_set_uri(ref):
                resolved.append(await self._set_reference(index, ref, tenant))
            elif ref.startswith("nano-banana:"):
                resolved.append(await self._result_reference(index, ref, tenant))
            elif "://" in ref or ref.startswith("file:"):
                raise InvalidRequest(
                    f"images[{index}] {ref[:80]!r} is not usable: pass an https:// URL, a URL from upload_reference, "
                    "a data:image/...;base64 URI, a nano-banana://tasks/{task_id}/images/{n} URI of an earlier result, "
                    "or a local file path."
                )
            else:
                if roots is None:
                    roots = await self._roots(client_roots)
                resolved.append(await anyio.to_thread.run_sync(self._check_one, ref, roots))
        return resolved

    def _data_reference(self, index: int, uri: str) -> ReferenceFile:
        """A ``data:`` URI's image, decoded and checked like a file of the same size limit."""
        limit = self.settings.max_reference_bytes
        match = _DATA_URI.fullmatch(uri)
        if match is None:
            raise InvalidRequest(
                f"images[{index}] is a data: URI that is not a base64 PNG, JPEG, WebP or GIF image; write it as "
                "data:image/png;base64,... (or image/jpeg, image/webp, image/gif)."
            )
        declared, payload = f"image/{match.group(1).lower()}", match.group(2)
        if len(payload) * 3 // 4 > limit + 3:
            raise InvalidRequest(
                f"images[{index}] is a data: URI of about {len(payload) * 3 / 4 / 1e6:.1f} MB; the limit is "
                f"{limit / 1e6:.0f} MB. Resize or recompress the image."
            )
        try:
            data = base64.b64decode("".join(payload.split()), validate=True)
        except (binascii.Error, ValueError) as err:
            raise InvalidRequest(f"images[{index}] is a data: URI whose base64 cannot be decoded ({err}).") from err
        ref = reference_from_bytes(data, max_bytes=limit, shown=f"images[{index}] (a data: URI)")
        if ref.mime_type != ("image/jpeg" if declared == "image/jpg" else declared):
            raise InvalidRequest(
                f"images[{index}] is a data: URI that says {declared} but holds {ref.mime_type}; say what it is."
            )
        return ref

    async def _result_reference(self, index: int, uri: str, tenant: str) -> ReferenceFile:
        """The saved file of an earlier result of this server, checked like any reference and uploaded.

        The API documents no lifetime for its output URLs, so whether one is still valid cannot be known without
        asking; the saved file is uploaded instead (once: uploads are cached by content for 23 hours).
        """
        named = parse_image_uri(uri)
        if named is None:
            raise InvalidRequest(
                f"images[{index}] {uri[:120]!r} is not a result URI; they read nano-banana://tasks/{{task_id}}/images/{{n}}"
                " (each result's images[].uri)."
            )
        handle, number = named
        record = await self.ledger.find(handle, tenant=tenant)
        if record is None:
            raise InvalidRequest(
                f"images[{index}] names task {handle!r}, which this server did not make: a nano-banana:// URI must "
                "come from one of its own results (list_tasks shows them)."
            )
        if record.phase != "downloaded":
            raise InvalidRequest(
                f"images[{index}] names task {record.handle}, which is {record.status}"
                + (f" ({record.error})" if record.error else "")
                + ": only a finished task's image can be used. Collect it with get_task first."
            )
        if not 0 <= number < len(record.images):
            raise InvalidRequest(
                f"images[{index}] asks for image {number} of task {record.handle}, which has "
                f"{len(record.images)} (numbered from 0)."
            )
        data = await read_saved(self.store, record.handle, number, record.images, self.settings.max_download_bytes)
        shown = f"images[{index}] ({uri})"
        limit = self.settings.max_reference_bytes
        return await anyio.to_thread.run_sync(partial(reference_from_bytes, data, max_bytes=limit, shown=shown))

    async def _set_reference(self, index: int, uri: str, tenant: str) -> ReferenceFile:
        """An image of one of the tenant's sets, read from its kept copy and checked like any reference (a whole set
        was expanded before: :meth:`~nano_banana_mcp.tasks.sets.ReferenceSets.expand`)."""
        found = parse_set_image_uri(uri)
        if found is None:
            raise InvalidRequest(
                f"images[{index}] {uri[:120]!r} is not usable here: name a whole set (nano-banana://sets/{{name}}) in "
                "generate_image's images, or one of its images as nano-banana://sets/{name}/images/{n}."
            )
        data = await self.sets.image(found.name, found.number, tenant)
        limit = self.settings.max_reference_bytes
        shown = f"images[{index}] ({uri})"
        return await anyio.to_thread.run_sync(partial(reference_from_bytes, data, max_bytes=limit, shown=shown))

    def _is_own_upload(self, ref: str) -> bool:
        # The offline emulator serves plain http on loopback; its upload URLs are fine to pass back.
        base_url = self.clients.base_url
        return base_url is not None and ref.startswith(base_url + "/")

    async def upload_cached(self, ref: ReferenceFile, tenant: str) -> str:
        cached = await self.ledger.cached_upload(ref.sha256, tenant=tenant)
        if cached is not None and cached[1] - UPLOAD_REUSE_MARGIN > now():
            return cached[0]
        client = self.clients.require(tenant)  # the tenant's own key when it has one
        uploaded = await client.upload_file(ref.data, ref.upload_name, ref.mime_type)
        await self.ledger.remember_upload(ref.sha256, uploaded.url, now() + UPLOAD_LIFETIME, tenant=tenant)
        return uploaded.url


MAX_URL_LENGTH = 2048


def _checked_url(index: int, url: str) -> str:
    """A reference URL passed on as it is, once it names a host and holds nothing a URL cannot (checked here, before
    anything is paid, rather than refused by the API)."""
    try:
        host = urlsplit(url).hostname
    except ValueError:  # a malformed IPv6 host, say
        host = None
    if not host or len(url) > MAX_URL_LENGTH or any(c.isspace() or not c.isprintable() for c in url):
        raise InvalidRequest(
            f"images[{index}] {url[:80]!r} is not a usable URL: it needs a host, at most {MAX_URL_LENGTH} characters "
            "and no spaces (percent-encode them)."
        )
    return url
