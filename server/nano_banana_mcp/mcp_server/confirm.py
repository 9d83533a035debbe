"""Ask the person before a large spend: ``NANO_BANANA_CONFIRM_OVER`` images per call.

A ``generate_image`` call that would make more images than that asks the person first, through form elicitation,
with the SDK's resolver (``Resolve``), which picks the protocol's own way:

- **2026-07-28**: the call answers ``input_required`` carrying the question (``inputRequests``: the form and its
  message, never state alone: some hosts fail on a state-only result); the client asks and calls again with the
  answer. The tool body, and so any row, task or MCP task handle, comes only after the answer: nothing is created
  before it.
- **2025-11-25**: an ``elicitation/create`` request during the call, before the tool body runs.

The person's "no" (decline, cancel, or the box unticked) refuses the call: nothing is written, nothing is paid. A
client that cannot ask (no form elicitation) gets ``NANO_BANANA_CONFIRM_UNASKED``: ``refuse`` (the default: an
operator who set a threshold wants a person to agree) says how many images a call may make without asking;
``proceed`` goes on as if there were no threshold.

The default threshold is none (never ask): a call makes at most 4 images, hosts that can ask are few, and what stops
an agent in a loop is the daily limit (``NANO_BANANA_DAILY_IMAGE_LIMIT``), not a question each call.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from mcp.server.elicitation import AcceptedElicitation, ElicitationResult
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.resolve import Elicit
from pydantic import BaseModel, Field

from nano_banana_mcp.errors import NanoBananaError
from nano_banana_mcp.mcp_server.http import tenant_of
from nano_banana_mcp.spend import DEFAULT_RESOLUTION, Made

if TYPE_CHECKING:
    from nano_banana_mcp.mcp_server.tools import App

__all__ = ["CONFIRM_SETTING", "NOT_ASKED", "SpendConfirmation", "confirm_spend", "confirmed", "question"]

CONFIRM_SETTING = "NANO_BANANA_CONFIRM_OVER"
UNASKED_SETTING = "NANO_BANANA_CONFIRM_UNASKED"


class SpendConfirmation(BaseModel):
    """The form: one box, ticked to go ahead."""

    generate: bool = Field(default=True, title="Generate and pay for these images")


@dataclass(frozen=True)
class _NotAsked:
    """Nothing to ask: under the threshold, or a client that cannot ask on a server set to proceed."""


NOT_ASKED: ElicitationResult[SpendConfirmation] = AcceptedElicitation[Any].model_construct(data=_NotAsked())
"""The outcome when nothing was asked (as the SDK hands a resolver's plain value over; the tool's default)."""


def question(made: Made, over: int) -> str:
    """What the person reads: what the call makes, what it costs (with prices), and why they are asked. The same
    words each round (the SDK matches an answer to the question it was given)."""
    at = "" if made.resolution == DEFAULT_RESOLUTION else f" at {made.resolution}"
    cost = f" for {made.cost:g} {made.unit}" if made.cost is not None and made.unit else ""
    return (
        f"Generate {made.images} images with {made.model}{at}{cost}? Each image is paid for; this server asks before "
        f"a call makes more than {over} ({CONFIRM_SETTING})."
    )


def _can_ask(ctx: Context) -> bool:
    """The client declared form elicitation (a bare ``elicitation: {}``, as before modes existed, counts)."""
    capabilities = ctx.client_capabilities
    elicitation = capabilities.elicitation if capabilities is not None else None
    return elicitation is not None and (elicitation.form is not None or elicitation.url is None)


async def confirm_spend(
    ctx: Context, count: int, model: str, resolution: str | None
) -> _NotAsked | Elicit[SpendConfirmation]:
    """The resolver of ``generate_image``'s confirmation: nothing to ask, the question, or a refusal (ToolError)."""
    app = cast("App", ctx.request_context.lifespan_context)  # annotated plainly: the SDK reads the hints at start
    settings, service = app.settings, app.service
    over = settings.confirm_over
    if over is None or count <= over:
        return _NotAsked()
    try:  # a call the daily limit refuses anyway is refused before the person is asked
        await service.spend.limits.check(service.ledger, tenant_of(), count)
    except NanoBananaError as err:
        raise ToolError(str(err)) from err
    if not _can_ask(ctx):
        if settings.confirm_unasked == "proceed":
            return _NotAsked()
        raise ToolError(
            f"Not generated, nothing was paid: this call makes {count} images, and this server asks the person before "
            f"a call makes more than {over} ({CONFIRM_SETTING}), but this client cannot ask (it has no form "
            f"elicitation). Ask for at most {over} images per call, or have the operator set {UNASKED_SETTING}=proceed."
        )
    prices = service.spend.prices
    made = Made(
        images=count,
        model=model,
        resolution=resolution or DEFAULT_RESOLUTION,
        cost=prices.cost(model, resolution, count),
        unit=prices.unit,
    )
    return Elicit(question(made, over), SpendConfirmation)


def confirmed(outcome: ElicitationResult[SpendConfirmation]) -> None:
    """Go on, or refuse (ToolError) when the person said no: nothing written, nothing paid."""
    if isinstance(outcome, AcceptedElicitation) and isinstance(outcome.data, _NotAsked):
        return  # the SDK hands a resolver's plain value over as accepted
    if isinstance(outcome, AcceptedElicitation) and outcome.data.generate:
        return
    said = "left the box unticked" if isinstance(outcome, AcceptedElicitation) else f"answered {outcome.action}"
    raise ToolError(
        f"Not generated, nothing was paid: the person {said} when asked to confirm. Do not generate again unless "
        "they ask for it."
    )
