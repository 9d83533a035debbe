"""What a host shows the model of an image result: the first text block, and whether an inline preview goes with it.

Hosts drop the server's ``instructions`` and some turn every block into JSON text (OpenClaw's Tool Search), so the
first text block of a result is complete on its own and short: the status, each saved path with its ``uri``, and the
next step. ``structuredContent`` repeats it for programs (not for OpenClaw: see ``clients``), and carries no image
data.

The inline JPEG preview is left out for OpenClaw (``clients.is_openclaw``): with Tool Search, on by default there,
an image block reaches the model as base64 text (45 KB for a preview of an emulator image, paid in tokens, never seen
as an image, and cut off with the rest past 20,000 characters), and with Tool Search off a text-only model loses it.
Its agent looks at the saved file with its ``view_image`` tool instead. The ``preview`` setting overrides the choice
(``on``/``off``). Clients that merely declare no capabilities keep the preview: most hosts show an image block as an
image, whatever they declare.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mcp.server.mcpserver import Context

from nano_banana_mcp.mcp_server.clients import is_openclaw
from nano_banana_mcp.tasks import OFFLINE_NOTE, TaskResult

__all__ = ["DEFAULT_VIEW", "HostView", "host_view", "summary_text"]


@dataclass(frozen=True)
class HostView:
    """How to shape results for the host on the other end."""

    preview: bool = True
    """Send each image's inline preview."""
    media_lines: bool = False
    """The host attaches files named by ``MEDIA:<path>`` lines in the reply (OpenClaw): say so in the next step."""


DEFAULT_VIEW = HostView()
"""A client nothing is known of: previews, no ``MEDIA:`` advice."""


def host_view(ctx: Context[Any], preview: str = "auto") -> HostView:
    """The view for this request's client under the ``preview`` setting (``auto``, ``on`` or ``off``)."""
    openclaw = is_openclaw(ctx.request_context.session)
    shown = preview == "on" or (preview == "auto" and not openclaw)
    return HostView(preview=shown, media_lines=openclaw)


def _size(n: int | None) -> str:
    if n is None:
        return "size unknown"
    return f"{n / 1e6:.1f} MB" if n >= 1e6 else f"{n / 1e3:.0f} KB"


def summary_text(result: TaskResult, view: HostView = DEFAULT_VIEW, clamped: str | None = None) -> str:
    """The first text block: complete and short. ``clamped``: the note of a wait that was shortened."""
    lines: list[str] = []
    saved = [i for i in result.images if i.path]
    if result.status == "success" and saved and len(saved) == len(result.images):
        tasks = f"tasks {', '.join(result.task_ids)}" if len(result.task_ids) > 1 else f"task {result.task_id}"
        count = len(saved)
        lines.append(f"Saved {count} image{'s' * (count != 1)} from {result.model} ({tasks}):")
        lines += [f"- {i.path} ({i.width}x{i.height}, {_size(i.size_bytes)}) uri {i.uri}" for i in saved]
        if result.error:  # a batch where some tasks failed
            lines.append(result.error)
        if result.made is not None:  # what was paid for, where the agent reads
            lines.append(f"Made {result.made}.")
        if result.offline:
            lines.append(OFFLINE_NOTE)
        if view.media_lines:
            media = "\n".join(f"MEDIA:{i.path}" for i in saved)
            them = "them" if count > 1 else "it"
            lines.append(f"Next: to send {them} to the chat, end your reply with (alone on its line, no Markdown):")
            lines.append(media)
        else:
            lines.append("Next: show the saved file to the user.")
        lines.append("To edit an image, pass its uri in generate_image's images.")
    else:
        lines.append(result.summary())
    if clamped:
        lines.append(clamped)
    return "\n".join(lines)
