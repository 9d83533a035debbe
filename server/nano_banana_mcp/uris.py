"""The ``nano-banana://`` URIs: the one home of their templates and of their parsing.

A task's resource is ``nano-banana://tasks/{task_id}`` and each of its saved images
``nano-banana://tasks/{task_id}/images/{index}``. Results name their images by the latter (``images[].uri``), the
MCP server serves both as resources, clients listen to them, and ``generate_image`` takes an image URI as a
reference (to edit an earlier result).

A tenant's named reference sets (:mod:`nano_banana_mcp.tasks.sets`) are ``nano-banana://sets`` (the list),
``nano-banana://sets/{name}`` (one set: in ``images`` it expands to its images) and
``nano-banana://sets/{name}/images/{index}`` (one image of a set, as kept).
"""

from __future__ import annotations

import re
from typing import NamedTuple

__all__ = [
    "IMAGE_URI",
    "SETS_URI",
    "SET_IMAGE_URI",
    "SET_URI",
    "TASK_URI",
    "ImageRef",
    "SetImageRef",
    "image_uri",
    "is_set_uri",
    "parse_image_uri",
    "parse_set_image_uri",
    "parse_set_uri",
    "parse_task_uri",
    "set_image_uri",
    "set_uri",
    "task_uri",
]

TASK_URI = "nano-banana://tasks/{task_id}"
"""A task's status and files (an MCP resource template)."""
IMAGE_URI = "nano-banana://tasks/{task_id}/images/{index}"
"""One saved output image, full size (an MCP resource template); what ``generate_image`` takes to edit it."""

# A reference names one of our own images: ids as the server hands them out (a row's key, or the API's task id).
_IMAGE = re.compile(r"nano-banana://tasks/([A-Za-z0-9_-]{1,200})/images/(\d{1,3})")
# A resource a client listens or subscribes to: any id (checked against the ledger afterwards), with or without an
# image, so that a URI the server never handed out is answered "no such resource", not "malformed".
_TASK_OR_IMAGE = re.compile(r"nano-banana://tasks/([^/?#]{1,200})(?:/images/\d{1,3})?")

SETS_URI = "nano-banana://sets"
"""The caller's named reference sets (an MCP resource)."""
SET_URI = "nano-banana://sets/{name}"
"""One set and its images (an MCP resource template); in ``images``, the set's images in order."""
SET_IMAGE_URI = "nano-banana://sets/{name}/images/{index}"
"""One image of a set, as kept (an MCP resource template); usable in ``images`` on its own."""
# The name as written (any case, checked by tasks.sets.set_name), without a slash.
_SET = re.compile(r"nano-banana://sets/([^/?#]{0,200})")
_SET_IMAGE = re.compile(r"nano-banana://sets/([^/?#]{0,200})/images/(\d{1,3})")


class ImageRef(NamedTuple):
    task_id: str
    number: int


class SetImageRef(NamedTuple):
    name: str
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


def set_uri(name: str) -> str:
    return SET_URI.format(name=name)


def set_image_uri(name: str, index: int) -> str:
    return SET_IMAGE_URI.format(name=name, index=index)


def is_set_uri(uri: str) -> bool:
    """Whether ``uri`` names a set or one of its images (``nano-banana://sets/...``)."""
    return uri.startswith(SETS_URI + "/")


def parse_set_uri(uri: str) -> str | None:
    """The name (as written) a whole set's URI names; None when ``uri`` is not one."""
    match = _SET.fullmatch(uri)
    return match.group(1) if match is not None else None


def parse_set_image_uri(uri: str) -> SetImageRef | None:
    """The set (its name as written) and image a set image's URI names; None when ``uri`` is not one."""
    match = _SET_IMAGE.fullmatch(uri)
    return SetImageRef(match.group(1), int(match.group(2))) if match is not None else None
