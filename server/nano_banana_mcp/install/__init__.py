"""Host configuration files: register this installation with an MCP host, or take it out again.

The pure functions of ``hosts`` decide what to write: ``server_command`` (this very installation, by absolute path),
``entry_for`` (one host's entry), ``config_path`` (where that host keeps it), ``merge`` and ``remove`` (the file's
new content). ``install`` and ``uninstall`` (``register``) read the file, apply them, keep ``<file>.bak`` and write
the result atomically, under a lock (``config_file``). A file that is not valid JSON is refused, never overwritten;
other servers and other keys are kept.

The API key goes into a file only when the user asks (``key=``); otherwise ``key_advice`` says how the host gets it.
"""

from nano_banana_mcp.install.config_file import read_config
from nano_banana_mcp.install.hosts import (
    DEFAULT_NAME,
    HOSTS,
    KEY_VAR,
    OPENCLAW_REQUEST_TIMEOUT_MS,
    Host,
    config_path,
    entry_for,
    key_advice,
    merge,
    redacted,
    remove,
    server_command,
    servers_in,
)
from nano_banana_mcp.install.register import Change, install, uninstall

__all__ = [
    "DEFAULT_NAME",
    "HOSTS",
    "KEY_VAR",
    "OPENCLAW_REQUEST_TIMEOUT_MS",
    "Change",
    "Host",
    "config_path",
    "entry_for",
    "install",
    "key_advice",
    "merge",
    "read_config",
    "redacted",
    "remove",
    "server_command",
    "servers_in",
    "uninstall",
]
