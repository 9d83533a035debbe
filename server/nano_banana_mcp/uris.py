"""The ``nano-banana://`` URIs: the one home of their templates and of their parsing.

A task's resource is ``nano-banana://tasks/{task_id}`` and each of its saved images
``nano-banana://tasks/{task_id}/images/{index}``. Results name their images by the latter (``images[].uri``), the
MCP server serves both as resources, clients listen to them, and ``generate_image`` takes an image URI as a
reference (to edit an earlier result).
"""

from __future__ import annotations

import re
from typing import NamedTuple

__all__ = ["IMAGE_URI", "TASK_URI", "ImageRef", "image_uri", "parse_image_uri", "parse_task_uri", "task_uri"]

TASK_URI = "nano-banana://tasks/{task_id}"
"""A task's status and files (an MCP resource template)."""
IMAGE_URI = "nano-banana://tasks/{task_id}/images/{index}"
"""One saved output image, full size (an MCP resource template); what ``generate_image`` takes to edit it."""

# A reference names one of our own images: ids as the server hands them out (a row's key, or the API's task id).
_IMAGE = re.compile(r"nano-banana://tasks/([A-Za-z0-9_-]{1,200})/images/(\d{1,3})")
# A resource a client listens or subscribes to: any id (checked against the ledger afterwards), with or without an
# image, so that a URI the server never handed out is answered "no such resource", not "malformed".
_TASK_OR_IMAGE = re.compile(r"nano-banana://tasks/([^/?#]{1,200})(?:/images/\d{1,3})?")


class ImageRef(NamedTuple):
    task_id: str
    number: int


def task_uri(task_id: str) -> str:
    return TASK_URI.format(task_id=task_id)


def image_uri(task_id: str, index: int) -> str:
    return IMAGE_URI.format(task_id=task_id, index=index)


def parse_image_uri(uri: str) -> ImageRef | None:
    """The task and image an image URI names; None when ``uri`` is not one."""
    match = _IMAGE.fullmatch(uri)
    return ImageRef(match.group(1), int(match.group(2))) if match is not None else None


def parse_task_uri(uri: str) -> str | None:
    """The task a task's or image's URI names (to listen or subscribe to); None when ``uri`` is neither."""
    match = _TASK_OR_IMAGE.fullmatch(uri)
    return match.group(1) if match is not None else None
