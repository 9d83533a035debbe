"""The MCP face of nano-banana: the server factory, its HTTP app and bearer auth, and the tools' state.

``app`` builds the server, ``tools`` holds the five tools, ``schema`` compacts their JSON schemas, ``http``
secures the HTTP transport (bearer auth, DNS-rebinding protection), ``tokens`` reads and makes its token files,
``stdio`` answers requests the SDK cannot read, ``apps`` serves the MCP Apps viewer (``viewer/``), and ``legacy``
keeps the shims that only 2025-era connections need.
"""

from nano_banana_mcp.mcp_server.app import StaticTokenVerifier, create_server, http_app
from nano_banana_mcp.mcp_server.tools import App, build_tools

__all__ = ["App", "StaticTokenVerifier", "build_tools", "create_server", "http_app"]
