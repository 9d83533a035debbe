"""A task's life in one place: its record, its phases, the public status, and every transition.

Phases are our side of the story; the public status is what agents see. ``status_of`` is the only
mapping between them (``status_at_api`` for tasks made elsewhere), and the ledger stores its value in a
column so that lists filter in SQL::

    phase        meaning                                   status
    submitting   row written, create not yet confirmed     pending
    created      the API named the task (task_id known)    pending, then running once the API says so
    succeeded    finished at the API, images not saved     running
    downloaded   every image saved on disk                 success
    failed       the task failed, the create was refused   failed
                 (nothing made), or an image can never be
                 saved (its URL is kept)
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, Field

from nano_banana_mcp.catalog import GenerateRequest
from nano_banana_mcp.errors import MonetError, monet_error_class
from nano_banana_mcp.monet import Task

__all__ = [
    "CALL_ID_BYTES",
    "DEFAULT_TENANT",
    "FINISHED_PHASES",
    "MAX_OUTPUTS",
    "MAX_STREAMS_PER_KEY",
    "STATUSES",
    "UNFINISHED_PHASES",
    "Call",
    "CreateLog",
    "Endpoint",
    "Phase",
    "SavedImage",
    "Status",
    "TaskRecord",
    "now",
    "status_at_api",
    "status_of",
]

Phase = Literal["submitting", "created", "succeeded", "downloaded", "failed"]
Status = Literal["pending", "running", "success", "failed"]
Endpoint = Literal["sync", "async"]
"""Where a row's create went: ``/tasks/sync`` (streamed) or ``/tasks/async`` (polled). A key goes to one only."""

MAX_OUTPUTS = 4
"""Images kept per task. The API documents one output per task (one per model); a peer that lists hundreds
does not get hundreds of files written."""
STATUSES: tuple[Status, ...] = ("pending", "running", "success", "failed")
UNFINISHED_PHASES: tuple[Phase, ...] = ("submitting", "created", "succeeded")
FINISHED_PHASES: tuple[Phase, ...] = ("downloaded", "failed")
DEFAULT_TENANT = "default"
"""The tenant of stdio, of the CLI, of a single HTTP token, and of a server without auth."""


log = logging.getLogger(__name__)


def now() -> datetime:
    return datetime.now(UTC)


def status_of(phase: Phase, api_status: str | None) -> Status:
    """The public status of a task in ``phase`` whose API status is ``api_status``."""
    if phase == "downloaded":
        return "success"
    if phase == "failed":
        return "failed"
    if phase == "succeeded":
        return "running"  # finished at the API, not saved yet (``error`` says why, if it is stuck)
    if phase == "submitting" or api_status in (None, "pending"):
        return "pending"
    return "running"


def status_at_api(api_status: str) -> Status:
    """The public status of a task made elsewhere (no row here): the API's status alone decides."""
    if api_status in ("pending", "success", "failed"):
        return api_status  # type: ignore[return-value]  # narrowed by the membership test
    return "running"  # processing, or any status the API adds later: not over


class SavedImage(BaseModel):
    path: str | None = Field(description="Path or s3:// key, once saved")
    url: str = Field(description="API URL or presigned link")
    url_expires_at: datetime | None = None  # the presigned link's end; null for an API URL (its lifetime is unknown)
    mime_type: str | None = None
    width: int | None = None
    height: int | None = None
    size_bytes: int | None = None
    uri: str | None = None  # nano-banana://tasks/{id}/images/{n}: what generate_image takes to edit this image


class Refusal(BaseModel):
    """How the API refused a create for good, kept so that the caller gets the refusal as the error it was."""

    kind: str
    """The class of the :class:`MonetError` raised (``AuthError``, ``NotFound``, ...)."""
    status_code: int | None = None
    code: str | None = None

    @classmethod
    def of(cls, err: BaseException | None) -> Refusal | None:
        if not isinstance(err, MonetError):
            return None
        return cls(kind=type(err).__name__, status_code=err.status_code, code=err.code)

    def error(self, message: str) -> MonetError:
        return monet_error_class(self.kind)(message, status_code=self.status_code, code=self.code)


class CreateLog(BaseModel):
    """What the row's creates learned before the API named the task: how many were answered with a stream, and when
    (on the API's clock where it told) the task was made. Enough to find the task through ``GET /tasks/list`` when no
    answer named it, in this process or the next."""

    streams: int = 0
    """Creates of this key answered with a stream (the API took them): at most ``MAX_STREAMS_PER_KEY``."""
    first_sent: datetime | None = None
    """When the first create of this key was sent, on this machine's clock (its answer may have been lost)."""
    earliest: datetime | None = None
    latest: datetime | None = None
    refusal: Refusal | None = None
    """How the API refused the create, when it did (the row is then failed with nothing made)."""

    def took(self, earliest: datetime, latest: datetime, *, stream: bool) -> None:
        """The API took a create made between ``earliest`` and ``latest``; the first one made the task."""
        self.streams += int(stream)
        self.earliest = min(self.earliest or earliest, earliest)
        self.latest = self.latest or latest


MAX_STREAMS_PER_KEY = 2
"""``/tasks/sync`` posts of one key answered with a stream. A second post is the documented retry of a stream that
broke before saying anything; it cannot teach a format that could not be read, so there is no third: the task is
found through ``GET /tasks/list`` instead."""


class TaskRecord(BaseModel):
    """One logical request, keyed by the idempotency key made before anything was sent."""

    key: str
    request: GenerateRequest
    tenant: str = DEFAULT_TENANT
    """Who the row belongs to: the HTTP token's tenant, or ``default`` (stdio, one token, no auth)."""
    phase: Phase = "submitting"
    endpoint: Endpoint | None = None
    task_id: str | None = None
    api_status: str | None = None
    progress: float | None = None
    images: list[SavedImage] = Field(default_factory=list)
    error: str | None = None
    offline: bool = False
    create_log: CreateLog = Field(default_factory=CreateLog)
    created_at: datetime = Field(default_factory=now)
    updated_at: datetime = Field(default_factory=now)

    @property
    def status(self) -> Status:
        return status_of(self.phase, self.api_status)

    @property
    def finished(self) -> bool:
        return self.phase in FINISHED_PHASES

    @property
    def handle(self) -> str:
        """The id an agent uses: the API's task id once known, our own key until then."""
        return self.task_id or self.key

    # -- transitions ---------------------------------------------------------------------------
    # Each returns True when the change must be written to the ledger (progress alone is not).

    def send_to(self, endpoint: Endpoint) -> bool:
        """Fix the endpoint before the first send: every resend of this key goes to the same one."""
        if self.endpoint is not None:
            return False
        self.endpoint = endpoint
        return True

    def observe(self, task: Task, *, partial: bool = False) -> bool:
        """Take in what the API said about the task: its id, status, progress, outputs, failure.

        ``partial``: the task as a stream event told it, which may leave out the outputs; a success without them is
        then read again through ``GET /tasks/{id}`` rather than taken as a success with no image.
        """
        before = (self.phase, self.task_id, self.api_status)
        if self.phase == "submitting":
            self.phase, self.task_id, self.error = "created", task.id, None
        if task.progress is not None and task.progress != self.progress:  # a change, even if it is not written
            self.progress, self.updated_at = task.progress, now()  # (tasks/get's lastUpdatedAt moves with it)
        self.api_status = task.status
        if self.phase == "created" and task.status == "success" and not (partial and not task.urls):
            urls = task.urls
            if len(urls) > MAX_OUTPUTS:
                log.warning(
                    "task %s: the API listed %d images; only the first %d are kept", task.id, len(urls), MAX_OUTPUTS
                )
            self.images = [SavedImage(path=None, url=url) for url in urls[:MAX_OUTPUTS]]
            if self.images:
                self.phase = "succeeded"
            else:
                self.phase, self.error = "failed", "The task succeeded but the API returned no image URL."
        elif self.phase == "created" and task.status == "failed":
            self.phase = "failed"
            self.error = task.error_message() or "The task failed at Monet; no reason was given."
        return (self.phase, self.task_id, self.api_status) != before

    def refused(self, reason: str, err: BaseException | None = None) -> None:
        """The API refused the create for good (``err``, kept as a :class:`Refusal`): no task was made, nothing was
        charged."""
        self.phase, self.error = "failed", reason
        self.create_log.refusal = Refusal.of(err)

    def lost(self, reason: str) -> None:
        """The API no longer knows the task: it cannot be finished."""
        self.phase, self.error = "failed", reason

    def unsavable(self, reason: str) -> None:
        """An image that can never be saved (refused host, too large, not an image): the task ends failed."""
        self.phase, self.error = "failed", reason

    def saved(self, index: int, image: SavedImage) -> None:
        self.images[index] = image
        if all(i.path for i in self.images):
            self.phase, self.error = "downloaded", None

    def gave_up(self, reason: str) -> None:
        """Followed for ``task_timeout`` without the API finishing the task (or naming it): the row ends."""
        self.phase, self.error = "failed", reason

    def trouble(self, reason: str) -> None:
        """A problem that does not end the task (it is retried); shown until it clears."""
        self.error = reason


CALL_ID_BYTES = 24
"""Random bytes in a call's id (192 bits, ``secrets.token_urlsafe``): nobody can guess another caller's."""


class Call(BaseModel):
    """A call whose rows are followed under an id of their own: an MCP task (``mcp_server.tasks_extension``).

    The id is random (:data:`CALL_ID_BYTES`), never the API's nor a row's key, and bound to the caller's tenant: a
    look-up by another tenant finds nothing, exactly as for an id that does not exist. ``keys`` are the call's rows,
    in order (``count`` > 1: several). ``cancelled_at``: the caller cancelled it (the rows go on: the API has no
    cancel, and a paid image is never lost).
    """

    id: str
    keys: list[str]
    tenant: str = "default"
    created_at: datetime = Field(default_factory=now)
    cancelled_at: datetime | None = None
