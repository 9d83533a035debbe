"""The model catalogue: the one place that knows what each Nano Banana model accepts.

The tool's input schema, the validation messages, the tool description, ``list_models`` and the
tables in the docs all come from :data:`MODELS`. Adding a model is one entry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeAlias, get_args

from pydantic import BaseModel, ConfigDict, Field

from nano_banana_mcp.errors import InvalidRequest

__all__ = [
    "ASPECT_RATIOS",
    "DEFAULT",
    "MAX_COUNT",
    "MAX_IMAGES",
    "MAX_PROMPT_CHARS",
    "MODELS",
    "OUTPUT_FORMATS",
    "RESOLUTIONS",
    "AspectRatio",
    "GenerateRequest",
    "Model",
    "ModelInfo",
    "ModelName",
    "OutputFormat",
    "Resolution",
    "check",
    "constrain",
    "markdown_table",
    "schema_rules",
    "summary",
]

_BASE_RATIOS = ("1:1", "2:3", "3:2", "4:3", "3:4", "16:9", "9:16")
_PRO_RATIOS = (*_BASE_RATIOS, "4:5", "5:4", "21:9")
_WIDE_RATIOS = (*_PRO_RATIOS, "4:1", "1:4", "8:1", "1:8")
_RESOLUTIONS = ("1K", "2K", "4K")

MAX_PROMPT_CHARS = 20_000
"""A generous bound: the API documents none, and a runaway prompt is a bug, not a request."""


@dataclass(frozen=True, slots=True)
class Model:
    """What one model accepts."""

    name: str
    title: str
    max_images: int
    aspect_ratios: tuple[str, ...]
    resolutions: tuple[str, ...]
    best_for: str

    @property
    def accepts_resolution(self) -> bool:
        return bool(self.resolutions)


MODELS: dict[str, Model] = {
    m.name: m
    for m in (
        Model(
            name="nano-banana-1",
            title="Nano Banana",
            max_images=5,
            aspect_ratios=_BASE_RATIOS,
            resolutions=(),
            best_for="quick drafts and edits with strong character consistency",
        ),
        Model(
            name="nano-banana-1-pro",
            title="Nano Banana Pro",
            max_images=14,
            aspect_ratios=_PRO_RATIOS,
            resolutions=_RESOLUTIONS,
            best_for="flagship quality: text in images, complex scenes, up to 4K",
        ),
        Model(
            name="nano-banana-2",
            title="Nano Banana 2",
            max_images=14,
            aspect_ratios=_WIDE_RATIOS,
            resolutions=_RESOLUTIONS,
            best_for="the latest model and the default: up to 4K, extreme ratios from 1:8 to 8:1",
        ),
    )
}

DEFAULT = "nano-banana-2"

ASPECT_RATIOS: tuple[str, ...] = tuple(dict.fromkeys(r for m in MODELS.values() for r in m.aspect_ratios))
RESOLUTIONS: tuple[str, ...] = tuple(dict.fromkeys(r for m in MODELS.values() for r in m.resolutions))

# The type-level names come from the data above; pydantic turns them into JSON-schema enums. A type checker
# cannot read a Literal built at run time, so it sees plain strings (pydantic checks the values).
if TYPE_CHECKING:
    ModelName: TypeAlias = str
    AspectRatio: TypeAlias = str
    Resolution: TypeAlias = str
else:
    ModelName = Literal[tuple(MODELS)]
    AspectRatio = Literal[ASPECT_RATIOS]
    Resolution = Literal[RESOLUTIONS]


OutputFormat = Literal["png", "jpeg", "webp"]
OUTPUT_FORMATS: tuple[OutputFormat, ...] = get_args(OutputFormat)
"""What ``output_format`` may ask for; ``None`` keeps what the API delivered."""
MAX_COUNT = 4
"""Tasks one generate call may make at once (``count``); each is its own task, key and charge."""


class GenerateRequest(BaseModel):
    """One image request, in the API's own names."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    prompt: str
    model: ModelName = DEFAULT
    images: tuple[str, ...] = ()
    aspect_ratio: AspectRatio | None = None
    resolution: Resolution | None = None
    output_format: OutputFormat | None = None
    """Ours, not the API's: the saved file is converted to it after download (None: as delivered)."""
    sets: tuple[str, ...] = Field(default=(), exclude_if=lambda sets: not sets)
    """Ours, not the API's: the ``nano-banana://sets/{name}`` URIs ``images`` named, already expanded (provenance)."""

    def api_input(self) -> dict[str, Any]:
        """The ``input`` object of a create request; unset options are left out."""
        data: dict[str, Any] = {"model": self.model, "prompt": self.prompt}
        if self.images:
            data["images"] = list(self.images)
        if self.aspect_ratio is not None:
            data["aspect_ratio"] = self.aspect_ratio
        if self.resolution is not None:
            data["resolution"] = self.resolution
        return data


class ModelInfo(BaseModel):
    """A model as ``list_models`` reports it."""

    name: str
    title: str
    max_reference_images: int
    aspect_ratios: list[str]
    resolutions: list[str] = Field(description="Empty: no resolution option.")
    best_for: str
    default: bool


def model_info() -> list[ModelInfo]:
    return [
        ModelInfo(
            name=m.name,
            title=m.title,
            max_reference_images=m.max_images,
            aspect_ratios=list(m.aspect_ratios),
            resolutions=list(m.resolutions),
            best_for=m.best_for,
            default=m.name == DEFAULT,
        )
        for m in MODELS.values()
    ]


def _models_accepting(attr: str, value: str) -> list[str]:
    return [m.name for m in MODELS.values() if value in getattr(m, attr)]


def check(
    model: str,
    *,
    prompt: str,
    image_count: int = 0,
    aspect_ratio: str | None = None,
    resolution: str | None = None,
) -> Model:
    """Refuse a request the model cannot take, naming what it accepts; return the model otherwise.

    Every problem is reported at once, so one correction fixes the call.
    """
    spec = MODELS.get(model)
    if spec is None:
        raise InvalidRequest(f"Unknown model {model!r}. Choose one of: {', '.join(MODELS)}.")
    problems: list[str] = []
    if not prompt.strip():
        problems.append("prompt is empty: describe the image you want.")
    elif len(prompt) > MAX_PROMPT_CHARS:
        problems.append(f"prompt is {len(prompt):,} characters; the limit is {MAX_PROMPT_CHARS:,}.")
    if image_count > spec.max_images:
        problems.append(
            f"{spec.name} takes at most {spec.max_images} reference images, got {image_count}."
            + _elsewhere("max_images", image_count)
        )
    if aspect_ratio is not None and aspect_ratio not in spec.aspect_ratios:
        others = _models_accepting("aspect_ratios", aspect_ratio)
        hint = f" ({', '.join(others)} accept it.)" if others else ""
        problems.append(
            f"{spec.name} does not accept aspect_ratio {aspect_ratio!r}; it accepts "
            f"{', '.join(spec.aspect_ratios)}.{hint}"
        )
    if resolution is not None and resolution not in spec.resolutions:
        if spec.resolutions:
            problems.append(
                f"{spec.name} does not accept resolution {resolution!r}; it accepts {', '.join(spec.resolutions)}."
            )
        else:
            others = [m.name for m in MODELS.values() if resolution in m.resolutions]
            problems.append(
                f"{spec.name} takes no resolution option: leave resolution out, or use "
                f"{' or '.join(others)} for {resolution}."
            )
    if problems:
        raise InvalidRequest("Request refused before anything was sent: " + " ".join(problems))
    return spec


def _elsewhere(attr: str, count: int) -> str:
    others = [m.name for m in MODELS.values() if getattr(m, attr) >= count]
    return f" ({', '.join(others)} accept {count}.)" if others else ""


MAX_IMAGES = max(m.max_images for m in MODELS.values())


def schema_rules() -> list[dict[str, Any]]:
    """JSON-schema ``allOf`` entries that tie each model to its own limits (``if``/``then`` on ``model``).

    The schema's own enums already hold the union of every model's values, so a rule only narrows what
    its model does not accept, and a model that accepts everything needs no rule.
    """
    rules: list[dict[str, Any]] = []
    for m in MODELS.values():
        narrower: dict[str, Any] = {}
        if set(m.aspect_ratios) != set(ASPECT_RATIOS):
            narrower["aspect_ratio"] = {"enum": [*m.aspect_ratios, None]}
        if m.max_images < MAX_IMAGES:
            narrower["images"] = {"maxItems": m.max_images}  # applies to arrays only, so null still passes
        if set(m.resolutions) != set(RESOLUTIONS):
            narrower["resolution"] = {"enum": [*m.resolutions, None]}
        if not narrower:
            continue
        condition: dict[str, Any] = {"properties": {"model": {"const": m.name}}}
        if m.name != DEFAULT:
            condition["required"] = ["model"]  # an absent model means the default
        rules.append({"if": condition, "then": {"properties": narrower}})
    return rules


def constrain(schema: dict[str, Any]) -> dict[str, Any]:
    """Add the catalogue's limits to a generate_image input schema (reference count, per-model rules)."""
    schema["properties"]["images"]["maxItems"] = MAX_IMAGES
    if rules := schema_rules():
        schema["allOf"] = rules
    return schema


def summary() -> str:
    """A compact per-model summary for tool descriptions: each model's limits, ratios as added to the last."""
    lines: list[str] = []
    previous: tuple[str, ...] = ()
    for m in MODELS.values():
        added = [r for r in m.aspect_ratios if r not in previous]
        ratios = " ".join(added) if not previous else "also " + " ".join(added)
        res = "/".join(m.resolutions) if m.resolutions else "no resolution"
        default = " (default)" if m.name == DEFAULT else ""
        lines.append(f"{m.name}{default}: <={m.max_images} references, {res}, ratios {ratios}.")
        previous = m.aspect_ratios
    return "\n".join(lines)


def markdown_table() -> str:
    """The per-model table as it appears in README.md and SKILL.md."""
    rows = [
        "| model | name | reference images | aspect_ratio | resolution |",
        "|---|---|---|---|---|",
    ]
    for m in MODELS.values():
        res = " ".join(m.resolutions) if m.resolutions else "not accepted"
        rows.append(f"| `{m.name}` | {m.title} | up to {m.max_images} | {' '.join(m.aspect_ratios)} | {res} |")
    return "\n".join(rows)
