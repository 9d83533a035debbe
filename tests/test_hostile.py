"""Hostile input from both sides: any tool arguments an agent can send, any answer the API can give."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.from_thread
import httpx
import pytest
from anyio.from_thread import BlockingPortal
from hypothesis import HealthCheck, example, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from mcp import Client
from mcp_types import CallToolResult, TextContent

from nano_banana_mcp import catalog
from nano_banana_mcp.config import Settings
from nano_banana_mcp.emulator import Emulator
from nano_banana_mcp.errors import ReferenceImageError
from nano_banana_mcp.images.reading import check_reference
from nano_banana_mcp.mcp_server import create_server

if TYPE_CHECKING:
    from tests.conftest import MakeSettings, TextOf

# -- tool arguments (property-based) -------------------------------------------------------------

PATH_TRICKS = [
    "../../../../etc/passwd",
    "/etc/shadow",
    "~/.ssh/id_ed25519",
    "~/.aws/credentials",
    "/proc/self/environ",
    "/dev/zero",
    "C:\\Windows\\System32\\config\\SAM",
    "\\\\server\\share\\x.png",
    "file:///etc/passwd",
    "http://169.254.169.254/latest/meta-data/",
    "https://",
    "data:image/png;base64,iVBORw0KGgo=",
    "a\x00b.png",
    "/" + "a" * 5000,
    "%2e%2e%2f%2e%2e%2fetc%2fpasswd",
]
odd_text = st.one_of(
    st.text(max_size=50),
    st.text(alphabet=st.characters(codec="utf-8", categories=["Cc", "Cf", "Zs", "So", "Mn"]), max_size=30),
    st.sampled_from(PATH_TRICKS),
    st.sampled_from(["", " ", "\u202e", "\ufeff", "🍌" * 1000, "x" * 100_000, "null", "{}", "[]"]),
)
any_value = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**70), max_value=2**70),
        st.floats(allow_nan=True, allow_infinity=True),
        odd_text,
    ),
    lambda inner: st.one_of(st.lists(inner, max_size=20), st.dictionaries(st.text(max_size=5), inner, max_size=4)),
    max_leaves=30,
)
PARAMS = {
    "generate_image": {
        "prompt": odd_text,
        "model": st.one_of(st.sampled_from(list(catalog.MODELS)), odd_text),
        "aspect_ratio": st.one_of(st.sampled_from(list(catalog.ASPECT_RATIOS)), odd_text),
        "resolution": st.one_of(st.sampled_from(list(catalog.RESOLUTIONS)), odd_text),
        "images": st.one_of(st.lists(st.sampled_from(PATH_TRICKS), max_size=20), any_value),
        "wait_seconds": st.one_of(st.floats(min_value=-10, max_value=2), any_value),
        "request_id": st.one_of(odd_text, any_value),
    },
    "upload_reference": {"path": st.one_of(st.sampled_from(PATH_TRICKS), any_value)},
    "get_task": {"task_id": st.one_of(odd_text, any_value), "wait_seconds": st.one_of(st.floats(-1, 0.2), any_value)},
    "list_tasks": {
        "page": st.one_of(st.integers(-5, 10**6), any_value),
        "page_size": st.one_of(st.integers(-5, 500), any_value),
        "status": st.one_of(st.sampled_from(["success", "failed", "running"]), odd_text),
    },
    "list_models": {},
}


@st.composite
def tool_calls(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    name = draw(st.sampled_from(sorted(PARAMS)))
    params = PARAMS[name]
    chosen = draw(st.lists(st.sampled_from(sorted(params)), unique=True)) if params else []
    args = {key: draw(params[key]) for key in chosen}
    if draw(st.booleans()):
        args[draw(st.text(min_size=1, max_size=10))] = draw(any_value)  # an argument nobody asked for
    return name, args


@pytest.fixture(scope="module")
def live(
    emulator_server: Emulator, tmp_path_factory: pytest.TempPathFactory, make_settings: MakeSettings
) -> Iterator[tuple[BlockingPortal, Client]]:
    """One server for every generated case, driven from a blocking portal (hypothesis runs synchronously)."""
    settings = make_settings(emulator_server.base_url, tmp_path_factory.mktemp("hostile"))
    with (
        anyio.from_thread.start_blocking_portal() as portal,
        portal.wrap_async_context_manager(Client(create_server(settings))) as client,
    ):
        yield portal, client


@given(call=tool_calls())
# Cases it found on some runs, now tried on every run: a path with a NUL character crashed both tools with a raw
# ValueError (os calls refuse such a path).
@example(call=("upload_reference", {"path": "a\x00b.png"}))
@example(call=("generate_image", {"prompt": "x", "images": ["a\x00b.png"]}))
@example(call=("generate_image", {"prompt": "x", "images": ["/tmp/\x00/x.png", "\x00"]}))
@hypothesis_settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow]
)
def test_any_arguments_get_an_answer_never_a_crash(
    live: tuple[BlockingPortal, Client], emulator: Emulator, call: tuple[str, dict[str, Any]]
) -> None:
    """Whatever an agent sends, the server answers (a result or a clear error) and makes no task for bad input."""
    portal, client = live
    name, args = call
    creates_before = emulator.creates
    result: CallToolResult = portal.call(client.call_tool, name, args)
    if result.is_error:
        assert isinstance(result.content[0], TextContent)
        text = result.content[0].text
        assert text.strip()
        assert text != f"Error executing tool {name}"  # that bare text means an unexpected crash
        assert "Traceback" not in text
        assert len(text) < 20_000  # huge input is not echoed back whole
        assert emulator.creates == creates_before
    else:
        assert result.structured_content is not None
        if name == "generate_image" and result.structured_content["status"] in ("pending", "running"):
            # Collected before the next case: its create, sent in the background, must not land in another's count.
            task_id = result.structured_content["task_id"]
            portal.call(client.call_tool, "get_task", {"task_id": task_id, "wait_seconds": 10})
    assert not portal.call(client.call_tool, "list_models", {}).is_error  # still up


# -- hostile answers from the API ----------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["malformed_json", "missing_fields", "wrong_types", "huge_body", "html_error"])
async def test_a_garbled_create_answer_still_makes_one_task(
    settings: Settings, emulator: Emulator, kind: str, text_of: TextOf
) -> None:
    """An unreadable answer to a /tasks/async create is asked again with the same key: images saved, one task."""
    emulator.faults.hostile_kind = kind
    emulator.faults.hostile = 1
    polled = settings.model_copy(update={"max_streams": 0})  # every create through /tasks/async
    async with Client(create_server(polled)) as client:
        result = await client.call_tool("generate_image", {"prompt": "despite it all"})
    assert result.structured_content["status"] == "success", text_of(result)
    assert emulator.creates == 1
    assert emulator.hostile_fired[kind] == 1


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["malformed_json", "missing_fields", "wrong_types", "huge_body", "html_error"])
async def test_a_persistently_garbled_api_is_a_clear_error(
    mcp_client: Client, emulator: Emulator, kind: str, api_key: str, text_of: TextOf
) -> None:
    """When every answer is unreadable, get_task says so plainly and the server stays up."""
    elsewhere = httpx.post(  # a task made by another tool, so get_task must ask the API
        f"{emulator.base_url}/api/v1/tasks/async",
        headers={"Authorization": f"Bearer {api_key}"},
        json={"type": "image", "input": {"prompt": "x"}, "idempotency_key": "k-" + kind},
    ).json()
    emulator.faults.hostile_kind = kind
    emulator.faults.hostile = 1000
    result = await mcp_client.call_tool("get_task", {"task_id": elsewhere["id"]})
    assert result.is_error
    text = text_of(result)
    assert "Monet API" in text
    assert "<html" not in text
    assert len(text) < 2000
    emulator.faults.hostile = 0
    assert not (await mcp_client.call_tool("list_models", {})).is_error


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["endless_stream", "garbage_stream", "huge_event"])
async def test_hostile_streams_fall_back_to_polling(
    settings: Settings, emulator: Emulator, kind: str, text_of: TextOf
) -> None:
    """A stream that never ends, sends garbage, or sends one giant event is left; polling saves the image."""
    quick = settings.model_copy(update={"stream_stall_seconds": 0.5})
    emulator.faults.hostile_kind = kind
    emulator.faults.hostile = 1
    async with Client(create_server(quick)) as client:
        with anyio.fail_after(120):  # only against a hang: on a loaded machine the first wait may end first
            result = await client.call_tool("generate_image", {"prompt": "stream me", "wait_seconds": 15})
            while result.structured_content["status"] in ("pending", "running"):
                task_id = result.structured_content["task_id"]
                result = await client.call_tool("get_task", {"task_id": task_id, "wait_seconds": 15})
    assert result.structured_content["status"] == "success", text_of(result)
    assert emulator.creates == 1
    assert emulator.hostile_fired[kind] == 1


@pytest.mark.anyio
async def test_a_garbled_task_list_still_lists_local_tasks(mcp_client: Client, emulator: Emulator) -> None:
    """If the API's list is unreadable, list_tasks shows this machine's tasks and says what is missing."""
    made = await mcp_client.call_tool("generate_image", {"prompt": "mine"})
    emulator.faults.hostile_kind = "wrong_types"
    emulator.faults.hostile = 1000
    listed = await mcp_client.call_tool("list_tasks", {})
    data = listed.structured_content
    assert [t["task_id"] for t in data["tasks"]] == [made.structured_content["task_id"]]
    assert "unavailable" in data["api_error"]


def test_path_tricks_are_all_refused_by_upload(tmp_path: Path) -> None:
    """Every path trick above is refused by the reference check, each with a reason."""
    for trick in PATH_TRICKS:
        with pytest.raises(ReferenceImageError):
            check_reference(trick, max_bytes=1000, roots=[tmp_path])
