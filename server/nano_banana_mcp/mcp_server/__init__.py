"""The MCP face of nano-banana: the server factory, its HTTP app and bearer auth, and the tools' state.

``app`` builds the server, ``tools`` holds the five tools, ``schema`` compacts their JSON schemas, ``http``
secures the HTTP transport (bearer auth, DNS-rebinding protection), ``tokens`` reads and makes its token files,
``stdio`` answers requests the SDK cannot read, ``apps`` serves the MCP Apps viewer (``viewer/``), and ``legacy``
keeps the shims that only 2025-era connections need.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nano_banana_mcp.mcp_server.app import StaticTokenVerifier, create_server, http_app
    from nano_banana_mcp.mcp_server.tools import App, build_tools

__all__ = ["App", "StaticTokenVerifier", "build_tools", "create_server", "http_app"]

_HOMES = {
    "App": "tools",
    "StaticTokenVerifier": "app",
    "build_tools": "tools",
    "create_server": "app",
    "http_app": "app",
}


def __getattr__(name: str) -> Any:
    """The names above, imported on first use: importing a submodule (``http`` to check the tokens before serving)
    does not load the SDK (~0.7 s of CPU), so a start-up refused on a setting says so at once."""
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{home}"), name)
