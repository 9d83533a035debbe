"""The floor for start-up: a minimal MCPServer with one tool, over stdio."""

from mcp.server.mcpserver import MCPServer

mcp = MCPServer("minimal")


@mcp.tool()
def echo(text: str) -> str:
    """Echo the text."""
    return text


if __name__ == "__main__":
    mcp.run()
