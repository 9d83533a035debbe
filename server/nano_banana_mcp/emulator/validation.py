"""What a create may ask for: the emulator's own copy of the published model table, and the checks of a create's
body and a list's paging that answer 400 ``VALIDATION_ERROR`` naming the field and what is accepted.

Creates are checked against :data:`MODELS`, not against the product's catalogue, so a catalogue bug shows up as a
refusal instead of being reproduced.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from starlette.requests import Request

from nano_banana_mcp.emulator.wire import invalid

__all__ = ["DEFAULT_MODEL", "MODELS", "ModelRules", "int_param", "parse_create"]


@dataclass(frozen=True, slots=True)
class ModelRules:
    """What the API accepts for one model (the table at the end of ``shared/monet-api.md``)."""

    max_images: int
    aspect_ratios: tuple[str, ...]
    resolutions: tuple[str, ...]
    """Empty: the model takes no ``resolution``."""


_RATIOS_1 = ("1:1", "2:3", "3:2", "4:3", "3:4", "16:9", "9:16")
_RATIOS_PRO = (*_RATIOS_1, "4:5", "5:4", "21:9")
_RATIOS_2 = (*_RATIOS_PRO, "4:1", "1:4", "8:1", "1:8")
MODELS: dict[str, ModelRules] = {
    "nano-banana-1": ModelRules(max_images=5, aspect_ratios=_RATIOS_1, resolutions=()),
    "nano-banana-1-pro": ModelRules(max_images=14, aspect_ratios=_RATIOS_PRO, resolutions=("1K", "2K", "4K")),
    "nano-banana-2": ModelRules(max_images=14, aspect_ratios=_RATIOS_2, resolutions=("1K", "2K", "4K")),
}
"""The emulator's own copy of the published model table; ``prompt`` is required for every model."""
DEFAULT_MODEL = "nano-banana-2"
"""The model of a create that names none (the page's example model)."""
_INPUT_FIELDS = ("model", "prompt", "images", "aspect_ratio", "resolution")


def parse_create(body: Any) -> tuple[str, dict[str, Any]]:
    """The idempotency key and ``input`` of a create body, checked against :data:`MODELS`."""
    if not isinstance(body, dict):
        raise invalid("The request body must be a JSON object with type, input and idempotency_key.")
    if body.get("type") != "image":
        raise invalid(f'type must be "image", got {body.get("type")!r}.')
    key = body.get("idempotency_key")
    if not isinstance(key, str) or not key.strip():
        raise invalid("idempotency_key is required: a unique string per task, reused when the request is retried.")
    task_input = body.get("input")
    if not isinstance(task_input, dict):
        raise invalid("input must be an object with at least a prompt.")
    _check_input(task_input)
    return key, task_input


def _check_input(task_input: dict[str, Any]) -> None:
    """Refuse an ``input`` the published table refuses, naming the field and what is accepted."""
    unknown = sorted(set(task_input) - set(_INPUT_FIELDS))
    if unknown:
        raise invalid(f"input has unknown field(s) {', '.join(unknown)}; accepted: {', '.join(_INPUT_FIELDS)}.")
    prompt = task_input.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise invalid("input.prompt is required: a non-empty string describing the image.")
    for name in ("model", "aspect_ratio", "resolution"):
        if not isinstance(task_input.get(name), str | None):
            raise invalid(f"input.{name} must be a string.")
    images = task_input.get("images") or []
    if not isinstance(images, list) or not all(isinstance(url, str) for url in images):
        raise invalid("input.images must be a list of image URLs.")
    model = task_input.get("model") or DEFAULT_MODEL
    rules = MODELS.get(model)
    if rules is None:
        raise invalid(f"input.model {model!r} is not a supported model; supported: {', '.join(MODELS)}.")
    if len(images) > rules.max_images:
        raise invalid(f"input.images has {len(images)} images; {model} accepts at most {rules.max_images}.")
    aspect_ratio = task_input.get("aspect_ratio")
    if aspect_ratio is not None and aspect_ratio not in rules.aspect_ratios:
        raise invalid(
            f"input.aspect_ratio {aspect_ratio!r} is not supported by {model}; "
            f"supported: {', '.join(rules.aspect_ratios)}."
        )
    resolution = task_input.get("resolution")
    if resolution is not None and not rules.resolutions:
        raise invalid(f"input.resolution is not supported by {model}; omit it.")
    if resolution is not None and resolution not in rules.resolutions:
        raise invalid(
            f"input.resolution {resolution!r} is not supported by {model}; supported: {', '.join(rules.resolutions)}."
        )
    for i, url in enumerate(images):
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise invalid(
                f"input.images[{i}] is not an http(s) URL: {url!r}. Upload local files with "
                "POST /api/v1/files and pass the returned url."
            )


def int_param(request: Request, name: str, default: int) -> int:
    """The integer query parameter ``name`` (``default`` when absent); a 400 when it is not an integer."""
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        return int(raw)
    except ValueError:
        raise invalid(f"{name} must be an integer, got {raw!r}.") from None
