"""A real browser, a real server: Debian's Chromium under Playwright shows the MCP Apps view in a test host.

``host.html`` (origin ``https://host.test``) is a minimal MCP Apps host: it finds the view through tools/list, reads
it, and renders it through ``sandbox.html`` (origin ``https://sandbox.test``, served with the spec's default CSP) the
way web hosts do. Its ``window.mcpRelay`` is a Playwright binding that relays the view's tools/call and
resources/read to a real ``nano-banana-mcp serve --http`` process, which talks to the session's emulator over HTTP.
Any other request the page makes fails the test: the view must work without a network.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx2
import pytest
from mcp import Client
from mcp.client.extension import advertise
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp_types import CallToolResult
from playwright.async_api import ConsoleMessage, Frame, Page

if TYPE_CHECKING:
    from tests.conftest import ServerEnv

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
HERE = Path(__file__).parent
HOST = "https://host.test"
SANDBOX = "https://sandbox.test"
# The spec's default CSP for a view that declares no domains (ext-apps specification/2026-01-26/apps.mdx).
VIEW_CSP = (
    "default-src 'none'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; media-src 'self' data:; connect-src 'none'; frame-src 'none'; object-src 'none'; "
    "base-uri 'self'"
)
APPS = advertise("io.modelcontextprotocol/ui", {"mimeTypes": ["text/html;profile=mcp-app"]})
DOCS = HERE.parent.parent / "docs"

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="session")
def chromium() -> Path:
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} is absent: install Debian's chromium package (.ci/run does) to run the browser tests")
    return CHROMIUM


@pytest.fixture(scope="session")
def mcp_url(server_env: ServerEnv, tmp_path_factory: pytest.TempPathFactory, command: str) -> Iterator[str]:
    """A real ``nano-banana-mcp serve --http --no-auth`` process on a free port, using the session's emulator."""
    root = tmp_path_factory.mktemp("browser-server")
    env = server_env(root)
    log = root / "stderr.txt"
    with log.open("w") as err:
        proc = subprocess.Popen(
            [command, "serve", "--http", "--port", "0", "--no-auth"], env=env, stdout=subprocess.DEVNULL, stderr=err
        )
    try:
        deadline = time.monotonic() + 20
        while not (found := re.findall(r"server on (http://\S+/mcp)", text := log.read_text())):
            assert proc.poll() is None, f"the server exited: {text}"
            assert time.monotonic() < deadline, f"no start-up line: {text}"
            time.sleep(0.02)
        yield found[0]
    finally:
        proc.terminate()
        proc.wait(20)


@pytest.fixture(scope="session")
async def browser_context(chromium: Path, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Any]:
    """Debian's Chromium, headless, with a fresh profile; the test host and its sandbox served by routes."""
    from playwright.async_api import async_playwright  # noqa: PLC0415 - only where a browser runs

    async with async_playwright() as playwright:
        context = await playwright.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),
            executable_path=str(chromium),
            args=CHROMIUM_ARGS,
            headless=True,
            viewport={"width": 720, "height": 900},
            device_scale_factor=1,
        )
        await context.grant_permissions(["clipboard-read", "clipboard-write"], origin=HOST)
        await context.grant_permissions(["clipboard-read", "clipboard-write"], origin=SANDBOX)
        yield context
        await context.close()


@dataclass
class TestHost:
    """The test host page in a browser, relaying to the server with an SDK client that negotiated MCP Apps."""

    page: Page
    client: Client
    calls: list[tuple[str, str | None]] = field(default_factory=list)
    """Every request the view (or the host) relayed: (method, tool name)."""
    foreign: list[str] = field(default_factory=list)
    """Requests to anywhere but the host and its sandbox (none are expected)."""
    console_errors: list[str] = field(default_factory=list)

    async def open(
        self, tool: str = "generate_image", theme: str = "light", variables: dict[str, str] | None = None
    ) -> Frame:
        """Load the host with the view of ``tool``; return the view's frame once it has initialized."""
        import json  # noqa: PLC0415
        from urllib.parse import urlencode  # noqa: PLC0415

        query = urlencode({"tool": tool, "theme": theme, "variables": json.dumps(variables or {})})
        await self.page.goto(f"{HOST}/?{query}")
        await self.page.evaluate("host.ready")
        return self.view

    @property
    def view(self) -> Frame:
        """The view's frame: the sandbox proxy's inner iframe."""
        [sandbox] = self.page.main_frame.child_frames
        [view] = sandbox.child_frames
        return view

    async def tool_input(self, arguments: dict[str, Any]) -> None:
        await self.page.evaluate("args => host.toolInput(args)", arguments)

    async def tool_result(self, result: CallToolResult) -> None:
        await self.page.evaluate("result => host.toolResult(result)", wire(result))

    async def call(self, name: str, arguments: dict[str, Any]) -> CallToolResult:
        """The agent's own call (not the view's), as a host makes it before showing the view."""
        return await self.client.call_tool(name, arguments)

    def count(self, method: str, tool: str | None = None) -> int:
        return sum(1 for m, t in self.calls if m == method and (tool is None or t == tool))


def wire(result: Any) -> dict[str, Any]:
    """An SDK result in its JSON-RPC wire form."""
    dumped: dict[str, Any] = result.model_dump(mode="json", by_alias=True, exclude_none=True)
    return dumped


@pytest.fixture
async def host(browser_context: Any, mcp_url: str) -> AsyncIterator[TestHost]:
    """A fresh page with the test host, connected to the server; checked afterwards for stray requests and errors."""
    async with (
        httpx2.AsyncClient(timeout=60) as http,
        Client(
            streamable_http_client(mcp_url, http_client=http), mode="legacy", extensions=[APPS], read_timeout_seconds=60
        ) as client,
    ):
        page = await browser_context.new_page()
        test_host = TestHost(page=page, client=client)

        async def relay(source: dict[str, Any], method: str, params: dict[str, Any]) -> dict[str, Any]:
            if source["frame"] != page.main_frame:  # only the host page itself may reach the server
                return {"error": {"code": -32600, "message": "not from the host"}}
            test_host.calls.append((method, params.get("name")))
            try:
                if method == "tools/call":
                    result: Any = await client.call_tool(params["name"], params.get("arguments") or {})
                elif method == "resources/read":
                    result = await client.read_resource(params["uri"])
                elif method == "tools/list":
                    result = await client.list_tools()
                else:
                    return {"error": {"code": -32601, "message": f"Method not found: {method}"}}
            except MCPError as err:
                return {"error": {"code": err.error.code, "message": err.error.message}}
            return {"result": wire(result)}

        async def route(route: Any) -> None:
            url = route.request.url
            if url.split("?")[0] in (HOST, f"{HOST}/"):
                await route.fulfill(content_type="text/html", body=(HERE / "host.html").read_text())
            elif url == f"{SANDBOX}/sandbox.html":
                body = (HERE / "sandbox.html").read_text()
                await route.fulfill(content_type="text/html", body=body, headers={"Content-Security-Policy": VIEW_CSP})
            else:
                test_host.foreign.append(url)
                await route.abort()

        def on_console(message: ConsoleMessage) -> None:
            if message.type == "error":
                test_host.console_errors.append(message.text)

        page.on("console", on_console)
        page.on("pageerror", lambda error: test_host.console_errors.append(str(error)))
        await page.route("**/*", route)
        await page.expose_binding("mcpRelay", relay)
        try:
            yield test_host
        finally:
            await page.close()
    assert test_host.foreign == [], "the page asked the network for something"
    assert test_host.console_errors == [], "the page logged errors (a CSP violation, an exception)"


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the tests that show each view save a screenshot: a temporary folder, or the README's ``docs/`` when
    NANO_BANANA_SCREENSHOTS=docs (run once by hand when the view changes; CI leaves docs/ alone)."""
    if os.environ.get("NANO_BANANA_SCREENSHOTS") == "docs":
        return DOCS
    return tmp_path_factory.mktemp("screenshots")
