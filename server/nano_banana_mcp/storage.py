"""Where saved images live: the output folder (the default), or an S3-compatible bucket shared by every replica.

A saved image is recorded in the ledger by its *location*: an absolute path in the output folder, or
``s3://bucket/key``. The ledger is not trusted on the way back: a store reads only locations inside itself
(the output folder; its own bucket and prefix).

The runner downloads and finishes each image in the store's ``staging`` folder (the output folder itself for the
folder store: the file is already where it belongs), then hands it to :meth:`ImageStore.put`. The bucket store
uploads it and removes the local copy, so a replica's disk holds only images being saved.
"""

from __future__ import annotations

import logging
import re
import tempfile
from collections.abc import Hashable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import urlsplit

import anyio
import anyio.to_thread

from nano_banana_mcp.config import Settings
from nano_banana_mcp.errors import ConfigError, NanoBananaError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

__all__ = ["UNAVAILABLE", "BucketStore", "FolderStore", "ImageStore", "StorageError", "image_store"]

log = logging.getLogger(__name__)

_STORAGE_SETTING = "NANO_BANANA_STORAGE_URL / --storage-url"
_OUTPUT_SETTING = "NANO_BANANA_OUTPUT_DIR (or --out)"
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
CONNECT_SECONDS = 3
"""How long a connection to the bucket's endpoint may take to open."""
CHECK_SECONDS = 3
"""How long the check (:meth:`BucketStore.check`) waits for the bucket's answer, once connected."""
STAGING = "staging"
"""The folder in the data dir where a bucket store's images are downloaded and finished before the upload."""


UNAVAILABLE = "storage unavailable"
"""What a tenant is told when the bucket's endpoint cannot be reached: where it is stays in the operator's log."""
_USERINFO = re.compile(r"(?<=://)[^/?#@\s\"'<>]*@")


class StorageError(NanoBananaError):
    """The image store could not be used (the bucket unreachable, access denied, the object missing).

    Its text is for anyone (a tenant reads it): it never names the endpoint. ``detail`` is the operator's: the
    reason as the S3 client gave it, with any ``user:password@`` taken out of the URLs in it.
    """

    def __init__(self, message: str, *, detail: str | None = None) -> None:
        super().__init__(message)
        self.detail = detail or message


def _without_userinfo(text: str) -> str:
    """``text`` with the ``user:password@`` part of every URL in it removed."""
    return _USERINFO.sub("", text)


class ImageStore(Protocol):
    """Where saved images are kept; see the module's docstring."""

    @property
    def where(self) -> str:
        """Shown to people: the folder, or ``s3://bucket/prefix``."""
        ...

    @property
    def staging(self) -> Path:
        """The local folder images are downloaded and finished in, before :meth:`put`."""
        ...

    async def put(self, file: Path, mime_type: str) -> str:
        """Keep a finished image (a file in ``staging``); its location."""
        ...

    async def has(self, location: str) -> bool:
        """Whether the image at ``location`` is kept here (false for a location outside this store)."""
        ...

    async def read(self, location: str, max_bytes: int) -> bytes:
        """The image's bytes. StorageError when it is outside this store, gone, larger than ``max_bytes``, or the
        store cannot be reached."""
        ...

    async def version(self, location: str) -> Hashable:
        """A key naming this version of the image, for the preview cache; cheap (no download)."""
        ...

    async def source(self, location: str) -> Path | bytes:
        """What a preview is made from: the file itself, or the object's bytes."""
        ...

    def link(self, location: str) -> tuple[str, datetime] | None:
        """A time-limited link to the full image and when it expires; None when the store has no links."""
        ...

    @property
    def failure(self) -> str:
        """What ``/healthz`` says when :meth:`check` finds a problem: ``unwritable`` or ``unreachable``."""
        ...

    async def check(self) -> str | None:
        """None when images can be saved now, else why: one sentence naming the folder or bucket, never a
        credential."""
        ...


def image_store(settings: Settings) -> ImageStore:
    """The store these settings name: the bucket of ``storage_url``, else the output folder."""
    url = (settings.storage_url or "").strip()
    if not url:
        return FolderStore(settings.output_dir)
    parts = urlsplit(url)
    bucket, prefix = parts.netloc, parts.path.strip("/")
    if parts.scheme != "s3" or not _BUCKET.fullmatch(bucket) or parts.query or parts.fragment or ".." in prefix:
        shown = "a URL with credentials in it (they come from the AWS variables)" if "@" in url else repr(url[:120])
        raise ConfigError(
            f"{_STORAGE_SETTING} must read s3://bucket or s3://bucket/prefix (a bucket name of 3 to 63 lower-case "
            f"letters, digits, '.' or '-'), got {shown}; unset it to keep images in the output folder."
        )
    try:
        import boto3  # noqa: PLC0415 - the team extra, only when used
        from botocore.config import Config  # noqa: PLC0415
        from botocore.exceptions import BotoCoreError  # noqa: PLC0415
    except ImportError as err:
        raise ConfigError(
            f"Object storage is set ({_STORAGE_SETTING}), but its client is not installed ({err}). Install the team "
            "extra: pip install 'nano-banana-mcp[team]', or unset it to keep images in the output folder."
        ) from err
    # Endpoint, credentials and region come from the standard AWS variables and files (AWS_ENDPOINT_URL for MinIO
    # or R2); links are signed with SigV4, which every S3-compatible service takes.
    config = Config(
        signature_version="s3v4",
        retries={"mode": "standard", "max_attempts": 3},
        max_pool_connections=20,
        connect_timeout=CONNECT_SECONDS,
    )
    # The check (at start, and /healthz) asks once and waits little: a silent endpoint is a setting to fix, said at
    # once, not after boto3's four attempts of a minute each (4 minutes, measured, at start).
    quick = config.merge(
        Config(
            retries={"mode": "standard", "total_max_attempts": 1},
            connect_timeout=CONNECT_SECONDS,
            read_timeout=CHECK_SECONDS,
        )
    )
    try:
        session = boto3.session.Session()
        client = session.client("s3", config=config)
        probe = session.client("s3", config=quick)
    except (ValueError, BotoCoreError) as err:  # a bad endpoint (ValueError), region or profile
        raise ConfigError(
            f"The S3 client for {_STORAGE_SETTING} cannot be made ({type(err).__name__}: "
            f"{_without_userinfo(str(err))[:200]}). Check AWS_ENDPOINT_URL, AWS_DEFAULT_REGION and AWS_PROFILE."
        ) from None
    endpoint = urlsplit(client.meta.endpoint_url)
    if endpoint.username is not None or endpoint.password is not None:
        # boto3 would copy it into every presigned link a tenant is given, and into its connection errors
        raise ConfigError(
            "The S3 endpoint (AWS_ENDPOINT_URL, or endpoint_url in the AWS config) has a user name or password in "
            "it: remove them. Requests are signed with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or a profile)."
        )
    return BucketStore(
        client=client,
        probe=probe,
        bucket=bucket,
        prefix=f"{prefix}/" if prefix else "",
        staging=settings.data_dir / STAGING,
        link_seconds=settings.storage_link_seconds,
        max_bytes=settings.max_download_bytes,
    )


# -- the output folder ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FolderStore:
    """Images in the output folder: downloaded straight into it, served only from inside it."""

    folder: Path

    @property
    def where(self) -> str:
        return str(self.folder)

    @property
    def staging(self) -> Path:
        return self.folder

    async def put(self, file: Path, mime_type: str) -> str:
        return str(file)

    async def has(self, location: str) -> bool:
        path = await self._inside(location)
        return path is not None and await anyio.Path(path).is_file()

    async def read(self, location: str, max_bytes: int) -> bytes:
        path = await self._served(location)
        try:
            async with await anyio.open_file(path, "rb") as file:
                data = await file.read(max_bytes + 1)
        except OSError as err:
            raise StorageError(f"The saved image {path.name} cannot be read ({err.strerror or err}).") from err
        if len(data) > max_bytes:
            raise StorageError(f"The saved image {path.name} is over {max_bytes / 1e6:.0f} MB; it is not served.")
        return data

    async def version(self, location: str) -> Hashable:
        path = await self._served(location)
        info = await anyio.Path(path).stat()  # a file replaced or edited gets a new preview
        return (str(path), info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)

    async def source(self, location: str) -> Path | bytes:
        return await self._served(location)

    def link(self, location: str) -> tuple[str, datetime] | None:
        return None

    @property
    def failure(self) -> str:
        return "unwritable"

    async def check(self) -> str | None:
        return await anyio.to_thread.run_sync(_unwritable, self.folder)

    async def _inside(self, location: str) -> Path | None:
        if not location or location.startswith("s3://"):
            return None
        resolved = Path(await anyio.Path(location).resolve())
        return resolved if resolved.is_relative_to(self.folder) else None

    async def _served(self, location: str) -> Path:
        path = await self._inside(location)
        if path is None:
            raise StorageError("The image is not in the output folder; it is not served.")
        return path


def _unwritable(folder: Path) -> str | None:
    """Why no file can be made in ``folder`` (made if missing) right now, or None."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".healthz-"):
            pass
    except OSError as err:
        reason = "it is a file, not a folder" if folder.exists() and not folder.is_dir() else err.strerror or err
        return (
            f"the output folder {folder} cannot be written ({reason}); set {_OUTPUT_SETTING} to a folder you can write"
        )
    return None


# -- a bucket -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BucketStore:
    """Images in an S3-compatible bucket, under ``prefix``: every replica reads what any replica saved.

    boto3 blocks, so each call runs in a worker thread; its client is thread-safe. Its own retries (standard mode)
    cover a dropped connection; anything longer is the runner's: a failed upload is retried with its backoff.
    """

    client: S3Client = field(repr=False)
    probe: S3Client = field(repr=False)
    """The same bucket with one attempt and short timeouts: :meth:`check`'s."""
    bucket: str
    prefix: str
    staging: Path
    link_seconds: int
    max_bytes: int

    @property
    def where(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    async def put(self, file: Path, mime_type: str) -> str:
        key = f"{self.prefix}{file.name}"
        data = await anyio.Path(file).read_bytes()  # one PUT: images are far below S3's 5 GB for a single request
        upload = partial(self.client.put_object, Bucket=self.bucket, Key=key, Body=data, ContentType=mime_type)
        await self._call(upload, f"The image could not be stored in {self.where}")
        await anyio.Path(file).unlink(missing_ok=True)  # kept in the bucket now; the replica's disk holds no copy
        return f"s3://{self.bucket}/{key}"

    async def has(self, location: str) -> bool:
        key = self._key(location)
        if key is None:
            return False
        try:
            await self._call(partial(self.client.head_object, Bucket=self.bucket, Key=key), "")
        except StorageError:
            return False
        return True

    async def read(self, location: str, max_bytes: int) -> bytes:
        key = self._served(location)
        name = key.rsplit("/", 1)[-1]
        answer = await self._call(
            partial(self.client.get_object, Bucket=self.bucket, Key=key), f"The saved image {name} cannot be read"
        )
        body = answer["Body"]
        try:
            if int(answer.get("ContentLength") or 0) > max_bytes:
                raise StorageError(f"The saved image {name} is over {max_bytes / 1e6:.0f} MB; it is not served.")
            data: bytes = await anyio.to_thread.run_sync(body.read, max_bytes + 1)
        finally:
            body.close()
        if len(data) > max_bytes:
            raise StorageError(f"The saved image {name} is over {max_bytes / 1e6:.0f} MB; it is not served.")
        return data

    async def version(self, location: str) -> Hashable:
        # Objects are never rewritten (each name is a task's key and an index): the location names the version.
        return self._served(location)

    async def source(self, location: str) -> bytes:
        return await self.read(location, self.max_bytes)

    def link(self, location: str) -> tuple[str, datetime] | None:
        key = self._key(location)
        if key is None:
            return None
        expires = datetime.now(UTC) + timedelta(seconds=self.link_seconds)
        url = self.client.generate_presigned_url(  # signed here, without a request
            "get_object", Params={"Bucket": self.bucket, "Key": key}, ExpiresIn=self.link_seconds
        )
        return str(url), expires

    @property
    def failure(self) -> str:
        return "unreachable"

    async def check(self) -> str | None:
        try:
            # The reason goes back to the caller (start-up says it, /healthz logs it), not to the log a second time.
            await self._call(
                partial(self.probe.head_bucket, Bucket=self.bucket), f"The bucket {self.bucket}", log_reason=False
            )
        except StorageError as err:
            return f"{err.detail} ({_STORAGE_SETTING}; the endpoint and credentials come from the AWS variables)"
        return None

    def _key(self, location: str) -> str | None:
        """The object key of a location inside this bucket and prefix, else None (the ledger is not trusted)."""
        own = f"s3://{self.bucket}/{self.prefix}"
        if not location.startswith(own):
            return None
        key = location[len(f"s3://{self.bucket}/") :]
        name = key[len(self.prefix) :]
        return key if name and "/" not in name and name not in (".", "..") else None

    def _served(self, location: str) -> str:
        key = self._key(location)
        if key is None:
            raise StorageError(f"The image is not in {self.where}; it is not served.")
        return key

    async def _call(self, call: partial[Any], doing: str, *, log_reason: bool = True) -> Any:
        """One blocking boto3 call in a worker thread; its failures as StorageError, with no credential in them.

        An endpoint that cannot be reached is :data:`UNAVAILABLE` to whoever reads the error, and its reason (which
        names the endpoint) goes to the log (``log_reason``), and to the error's ``detail`` in any case.
        """
        from botocore.exceptions import BotoCoreError, ClientError  # noqa: PLC0415

        try:
            return await anyio.to_thread.run_sync(call)
        except ClientError as err:
            error = err.response.get("Error", {})
            code = error.get("Code", "error")
            reason = {"403": "access denied", "AccessDenied": "access denied", "404": "not found"}.get(code, code)
            raise StorageError(f"{doing}: {reason}" if doing else reason) from None
        except (BotoCoreError, OSError) as err:  # botocore's messages name the endpoint: the operator's to read
            reason = _without_userinfo(str(err))[:300] or type(err).__name__
            if doing and log_reason:
                log.warning("storage: %s: %s", doing, reason)
            told = f"{doing}: {UNAVAILABLE}; the server's log has the reason" if doing else UNAVAILABLE
            raise StorageError(told, detail=f"{doing}: {reason}" if doing else reason) from None
