"""Where an OpenClaw entry saves images: a folder OpenClaw lets the agent attach to its replies.

OpenClaw (2026.9.6) attaches a reply's ``MEDIA:/abs/path`` line only if the file passes the agent's file-read policy
(``docs/reference/rich-output-protocol.md``; ``src/auto-reply/reply/reply-media-paths.ts`` reads it through
``resolveAgentScopedOutboundMediaAccess``, ``src/media/read-capability.ts``). The folders allowed
(``src/media/local-roots.ts``: ``buildMediaLocalRoots``, ``getAgentScopedMediaLocalRoots``,
``getAgentScopedMediaLocalRootsForSources``; ``src/agents/tool-fs-policy.ts``):

- with ``tools.fs.workspaceOnly: true`` (what ``openclaw agent exec`` sets): its temp folder (``/tmp/openclaw``),
  ``<config dir>/media`` and ``<state dir>/media`` (its own media store, pruned), ``<state dir>/canvas``,
  ``<state dir>/workspace`` (unless the session runs in a sandbox) and the agent's workspace;
- by default (``workspaceOnly`` unset or false, and the ``read`` tool allowed): those, plus the folder of each file
  attached, so any file the agent may read.

The default output folder (``~/Pictures/nano-banana``) passes only the second. The agent's workspace passes both, keeps
its files (OpenClaw prunes its media store), and the agent can ``read`` and ``view_image`` them there; so the entry
saves to ``<workspace>/nano-banana``, the workspace resolved as OpenClaw resolves the default agent's
(``src/agents/agent-scope-config.ts`` ``resolveAgentWorkspaceDir``, ``src/agents/workspace-default-path.ts``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["MEDIA_SUBFOLDER", "media_folder", "workspace_folder"]

MEDIA_SUBFOLDER = "nano-banana"


def _home(home: Path, environ: Mapping[str, str]) -> Path:
    """OpenClaw's home: ``OPENCLAW_HOME``, else the user's."""
    configured = environ.get("OPENCLAW_HOME", "").strip()
    return Path(configured).expanduser() if configured else home


def _user_path(text: str, home: Path) -> Path:
    """A path from OpenClaw's config or environment: ``~`` is its home; relative to the current folder otherwise."""
    text = text.strip()
    if text == "~" or text.startswith(("~/", "~\\")):
        return (home / text[2:]).absolute() if len(text) > 1 else home
    return Path(text).absolute()


def workspace_folder(document: Mapping[str, Any], *, home: Path, environ: Mapping[str, str]) -> Path:
    """The default agent's workspace, as OpenClaw finds it: ``agents.defaults.workspace`` in its config, else
    ``OPENCLAW_WORKSPACE_DIR``, else ``workspace`` in its state folder (``OPENCLAW_STATE_DIR``;
    ``~/.openclaw-<profile>`` for ``OPENCLAW_PROFILE``; ``~/.openclaw``)."""
    openclaw_home = _home(home, environ)
    agents = document.get("agents")
    defaults = agents.get("defaults") if isinstance(agents, Mapping) else None
    configured = defaults.get("workspace") if isinstance(defaults, Mapping) else None
    if isinstance(configured, str) and configured.strip():
        return _user_path(configured, openclaw_home)
    if environ.get("OPENCLAW_WORKSPACE_DIR", "").strip():
        return _user_path(environ["OPENCLAW_WORKSPACE_DIR"], openclaw_home)
    if environ.get("OPENCLAW_STATE_DIR", "").strip():
        return _user_path(environ["OPENCLAW_STATE_DIR"], openclaw_home) / "workspace"
    profile = environ.get("OPENCLAW_PROFILE", "").strip()
    if profile and profile.lower() != "default":
        return openclaw_home / f".openclaw-{profile}" / "workspace"
    return openclaw_home / ".openclaw" / "workspace"


def media_folder(document: Mapping[str, Any], *, home: Path, environ: Mapping[str, str]) -> Path:
    """Where the OpenClaw entry saves images: ``nano-banana`` in the default agent's workspace."""
    return workspace_folder(document, home=home, environ=environ) / MEDIA_SUBFOLDER
