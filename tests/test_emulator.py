"""The emulator over real HTTP: the Monet contract, its timings, its faults and its images."""

from __future__ import annotations

import io
import re
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from httpx_sse import ServerSentEvent, connect_sse
from PIL import Image

from nano_banana_mcp import catalog
from nano_banana_mcp.emulator import MAX_UPLOAD_BYTES, PLACEHOLDER_DESCRIPTION, Emulator
from nano_banana_mcp.errors import InvalidRequest


@pytest.fixture
def client(emulator: Emulator, api_key: str) -> Iterator[httpx.Client]:
    assert emulator.base_url is not None
    headers = {"Authorization": f"Bearer {api_key}"}
    with httpx.Client(base_url=emulator.base_url, headers=headers, timeout=5) as client:
        yield client


def body(key: str | None = None, **task_input: Any) -> dict[str, Any]:
    task_input.setdefault("prompt", "A cute cat")
    return {"type": "image", "input": task_input, "idempotency_key": key or str(uuid.uuid4())}


def create(client: httpx.Client, key: str | None = None, **task_input: Any) -> dict[str, Any]:
    response = client.post("/api/v1/tasks/async", json=body(key, **task_input))
    assert response.status_code == 200, response.text
    return response.json()


def wait_done(client: httpx.Client, task_id: str, timeout: float = 3.0) -> list[dict[str, Any]]:
    """Poll until the task is terminal; return every snapshot seen."""
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        task = client.get(f"/api/v1/tasks/{task_id}").json()
        seen.append(task)
        if task["status"] in ("success", "failed"):
            return seen
        time.sleep(0.01)
    raise AssertionError(f"task {task_id} did not finish: {seen[-1]}")


def stream(client: httpx.Client, payload: dict[str, Any]) -> list[tuple[ServerSentEvent, float]]:
    with connect_sse(client, "POST", "/api/v1/tasks/sync", json=payload) as source:
        return [(event, time.monotonic()) for event in source.iter_sse()]


def error_code(response: httpx.Response) -> str:
    return response.json()["error"]["code"]


# --- auth and validation ---------------------------------------------------------------------------


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer monet_wrong"}, {"Authorization": "monet_x"}])
def test_missing_or_wrong_key_is_401(emulator: Emulator, headers: dict[str, str]) -> None:
    """Without the right bearer key every API call is refused as unauthorized."""
    response = httpx.get(f"{emulator.base_url}/api/v1/tasks/list", headers=headers)
    assert response.status_code == 401
    assert error_code(response) == "unauthorized"


def test_create_answers_a_pending_task(client: httpx.Client, emulator: Emulator) -> None:
    """A create returns a pending image task with a task_ id and counts one creation."""
    task = create(client)
    assert re.fullmatch(r"task_[0-9a-f]{12}", task["id"])
    assert (task["status"], task["type"]) == ("pending", "image")
    assert task["created_at"].endswith("Z")
    assert emulator.creates == 1


@pytest.mark.parametrize(
    "task_input",
    [
        {"model": "nano-banana-1", "resolution": "2K"},
        {"model": "nano-banana-1-pro", "aspect_ratio": "8:1"},
        {"model": "nano-banana-1", "images": [f"https://example.com/{i}.png" for i in range(6)]},
        {"model": "nano-banana-3"},
        {"prompt": "   "},
    ],
)
def test_option_the_model_refuses_is_400_with_its_reason(client: httpx.Client, task_input: dict[str, Any]) -> None:
    """A request the catalogue refuses is a 400 VALIDATION_ERROR carrying the catalogue's message."""
    full = {"prompt": "A cute cat", **task_input}
    with pytest.raises(InvalidRequest) as expected:
        catalog.check(
            full.get("model", catalog.DEFAULT),
            prompt=full["prompt"],
            image_count=len(full.get("images", [])),
            aspect_ratio=full.get("aspect_ratio"),
            resolution=full.get("resolution"),
        )
    response = client.post("/api/v1/tasks/async", json=body(**full))
    assert response.status_code == 400
    assert response.json()["error"] == {"code": "VALIDATION_ERROR", "message": str(expected.value)}


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        ([1, 2], "JSON object"),
        ({"type": "video", "input": {"prompt": "x"}, "idempotency_key": "k"}, "type"),
        ({"type": "image", "input": {"prompt": "x"}}, "idempotency_key"),
        ({"type": "image", "input": {"model": "nano-banana-2"}, "idempotency_key": "k"}, "prompt"),
        ({"type": "image", "input": {"prompt": "x", "seed": 1}, "idempotency_key": "k"}, "seed"),
        ({"type": "image", "input": {"prompt": "x", "images": ["/tmp/a.png"]}, "idempotency_key": "k"}, "http"),
    ],
)
def test_malformed_create_is_400_saying_what_is_wrong(
    client: httpx.Client, emulator: Emulator, payload: Any, fragment: str
) -> None:
    """A create of the wrong shape is a 400 VALIDATION_ERROR naming the problem, and creates nothing."""
    response = client.post("/api/v1/tasks/async", json=payload)
    assert response.status_code == 400
    assert error_code(response) == "VALIDATION_ERROR"
    assert fragment in response.json()["error"]["message"]
    assert emulator.creates == 0


# --- idempotency --------------------------------------------------------------------------------------


def test_replay_with_same_key_returns_the_same_task(client: httpx.Client, emulator: Emulator) -> None:
    """The same key and input return the existing task instead of creating another."""
    first = create(client, "key-1", aspect_ratio="16:9")
    second = create(client, "key-1", aspect_ratio="16:9")
    assert second["id"] == first["id"]
    assert emulator.creates == 1


def test_same_key_with_other_input_is_409(client: httpx.Client, emulator: Emulator) -> None:
    """Reusing a key for a different request is an idempotency conflict."""
    create(client, "key-1", prompt="A cat")
    response = client.post("/api/v1/tasks/async", json=body("key-1", prompt="A dog"))
    assert response.status_code == 409
    assert error_code(response) == "idempotency_conflict"
    assert emulator.creates == 1


# --- task lifecycle ----------------------------------------------------------------------------------


def test_task_goes_pending_processing_success(client: httpx.Client, emulator: Emulator) -> None:
    """Status advances with time, progress only rises, and success carries an absolute output URL."""
    task_id = create(client)["id"]
    seen = wait_done(client, task_id)
    statuses = list(dict.fromkeys(t["status"] for t in seen))
    assert statuses == ["pending", "processing", "success"]
    progress = [t["outputs"][0]["progress"] for t in seen]
    assert progress == sorted(progress)
    assert any(0 < p < 100 for p in progress)
    assert seen[-1]["outputs"][0] == {
        "model": catalog.DEFAULT,
        "status": "success",
        "progress": 100,
        "url": f"{emulator.base_url}/files/outputs/{task_id}/0.png",
    }


def test_zero_task_seconds_finishes_at_once(client: httpx.Client, emulator: Emulator) -> None:
    """With task_seconds=0 a task is already done when first read."""
    emulator.task_seconds = 0
    task_id = create(client)["id"]
    assert client.get(f"/api/v1/tasks/{task_id}").json()["status"] == "success"


def test_failed_task_carries_an_error(client: httpx.Client, emulator: Emulator) -> None:
    """The fail_tasks fault ends the next task failed, with an error object and no output URL."""
    emulator.task_seconds = 0
    emulator.faults.fail_tasks = 1
    failed = client.get(f"/api/v1/tasks/{create(client)['id']}").json()
    assert failed["status"] == "failed"
    assert failed["error"]["code"] == "generation_failed"
    assert "url" not in failed["outputs"][0]
    assert client.get(f"/api/v1/tasks/{create(client)['id']}").json()["status"] == "success"


def test_unknown_task_is_404(client: httpx.Client) -> None:
    """Reading a task that does not exist is a not_found error."""
    response = client.get("/api/v1/tasks/task_000000000000")
    assert response.status_code == 404
    assert error_code(response) == "not_found"


def test_unknown_route_is_json_404(client: httpx.Client) -> None:
    """An unknown path answers a JSON not_found error, not HTML."""
    response = client.get("/api/v2/nothing")
    assert response.status_code == 404
    assert error_code(response) == "not_found"


# --- SSE --------------------------------------------------------------------------------------------------


def test_stream_reports_progress_and_ends_with_success_on_time(client: httpx.Client, emulator: Emulator) -> None:
    """The stream sends progress events, then a done event within 50 ms of the task finishing."""
    events = stream(client, body())
    names = [event.event for event, _ in events]
    assert names[-1] == "done"
    assert set(names[:-1]) == {"progress"}
    assert len(names) >= 3
    last, received = events[-1]
    final = last.json()
    assert final["status"] == "success"
    assert final["outputs"][0]["url"].endswith(f"/files/outputs/{final['id']}/0.png")
    finished = emulator.finished_at(final["id"])
    assert finished is not None
    assert 0 <= received - finished < 0.05


def test_stream_with_known_key_replays_the_finished_task(client: httpx.Client, emulator: Emulator) -> None:
    """A sync create with an existing key streams that task (already done: one done event)."""
    emulator.task_seconds = 0
    task_id = create(client, "key-1")["id"]
    events = stream(client, body("key-1"))
    assert [(e.event, e.json()["id"], e.json()["status"]) for e, _ in events] == [("done", task_id, "success")]
    assert emulator.creates == 1


# --- listing --------------------------------------------------------------------------------------------


def test_list_is_newest_first_and_paged(client: httpx.Client) -> None:
    """Tasks are listed newest first, pageSize per page, with the total."""
    ids = [create(client)["id"] for _ in range(3)]
    first = client.get("/api/v1/tasks/list", params={"page": 1, "pageSize": 2}).json()
    second = client.get("/api/v1/tasks/list", params={"page": 2, "pageSize": 2}).json()
    assert [t["id"] for t in first["tasks"]] == [ids[2], ids[1]]
    assert [t["id"] for t in second["tasks"]] == [ids[0]]
    assert (first["page"], first["pageSize"], first["total"]) == (1, 2, 3)


@pytest.mark.parametrize("page_size", ["0", "101", "many"])
def test_page_size_out_of_range_is_400(client: httpx.Client, page_size: str) -> None:
    """pageSize must be an integer from 1 to 100."""
    response = client.get("/api/v1/tasks/list", params={"pageSize": page_size})
    assert response.status_code == 400
    assert error_code(response) == "VALIDATION_ERROR"


# --- uploads --------------------------------------------------------------------------------------------


def upload(client: httpx.Client, data: bytes = b"\x89PNG fake", name: str = "cat.png") -> dict[str, Any]:
    response = client.post("/api/v1/files", files={"file": (name, data, "image/png")})
    assert response.status_code == 200, response.text
    return response.json()


def test_upload_url_serves_the_file(client: httpx.Client, emulator: Emulator) -> None:
    """An upload answers its metadata, and its URL serves the same bytes without auth."""
    info = upload(client)
    assert re.fullmatch(r"file_[0-9a-f]+", info["id"])
    assert (info["filename"], info["size"], info["content_type"]) == ("cat.png", 9, "image/png")
    assert info["url"] == f"{emulator.base_url}/files/uploads/{info['id']}/cat.png"
    assert httpx.get(info["url"]).content == b"\x89PNG fake"
    assert emulator.uploads == 1


def test_upload_expires_after_ttl(client: httpx.Client, emulator: Emulator) -> None:
    """An uploaded file is served until upload_ttl has passed, then it is gone."""
    emulator.upload_ttl = 0.2
    url = upload(client)["url"]
    uploaded = time.monotonic()
    assert client.get(url).status_code == 200
    time.sleep(max(uploaded + 0.2 - time.monotonic(), 0))
    assert client.get(url).status_code == 404


def test_create_with_expired_upload_is_400(client: httpx.Client, emulator: Emulator) -> None:
    """A create referencing an expired upload is refused with a hint to upload again."""
    emulator.upload_ttl = 0
    url = upload(client)["url"]
    response = client.post("/api/v1/tasks/async", json=body(images=[url]))
    assert response.status_code == 400
    message = response.json()["error"]["message"]
    assert "expired" in message
    assert "Upload the file again" in message
    assert emulator.creates == 0


def test_create_with_live_upload_is_accepted(client: httpx.Client, emulator: Emulator) -> None:
    """A create referencing a fresh upload of this emulator is accepted."""
    create(client, images=[upload(client)["url"]])
    assert emulator.creates == 1


def test_upload_over_20_mb_is_413(client: httpx.Client, emulator: Emulator) -> None:
    """A file over 20 MB is refused as too large."""
    response = client.post("/api/v1/files", files={"file": ("big.png", b"\0" * (MAX_UPLOAD_BYTES + 1))})
    assert response.status_code == 413
    assert emulator.uploads == 0


def test_upload_without_file_field_is_400(client: httpx.Client) -> None:
    """A multipart upload without a 'file' field is a validation error."""
    response = client.post("/api/v1/files", files={"image": ("cat.png", b"x")})
    assert response.status_code == 400
    assert "'file'" in response.json()["error"]["message"]


# --- faults ---------------------------------------------------------------------------------------------


def test_rate_limit_is_429_with_retry_after(client: httpx.Client, emulator: Emulator) -> None:
    """The rate_limit fault answers 429 with a fractional Retry-After, once per count."""
    emulator.faults.rate_limit = 1
    emulator.faults.retry_after = 0.25
    response = client.get("/api/v1/tasks/list")
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "0.25"
    assert client.get("/api/v1/tasks/list").status_code == 200


def test_server_error_is_503(client: httpx.Client, emulator: Emulator) -> None:
    """The server_errors fault answers 503 unavailable, once per count."""
    emulator.faults.server_errors = 1
    response = client.get("/api/v1/tasks/list")
    assert response.status_code == 503
    assert error_code(response) == "unavailable"
    assert client.get("/api/v1/tasks/list").status_code == 200


def test_latency_delays_api_responses(client: httpx.Client, emulator: Emulator) -> None:
    """The latency fault delays every API response by at least its value."""
    emulator.faults.latency = 0.1
    start = time.monotonic()
    client.get("/api/v1/tasks/list")
    assert time.monotonic() - start >= 0.1


def test_refused_create_is_400_although_valid(client: httpx.Client, emulator: Emulator) -> None:
    """The refuse_creates fault answers a valid create with an emulated VALIDATION_ERROR."""
    emulator.faults.refuse_creates = 1
    response = client.post("/api/v1/tasks/async", json=body())
    assert response.status_code == 400
    assert response.json()["error"]["message"].endswith("(emulated refusal).")
    assert emulator.creates == 0


def test_lost_create_response_makes_one_task(client: httpx.Client, emulator: Emulator) -> None:
    """A lost create response breaks the connection, yet the task exists and a replay returns it."""
    emulator.faults.lose_create_responses = 1
    with pytest.raises(httpx.RemoteProtocolError):
        client.post("/api/v1/tasks/async", json=body("key-1"))
    assert emulator.creates == 1
    replay = create(client, "key-1")
    assert client.get("/api/v1/tasks/list").json()["tasks"][0]["id"] == replay["id"]
    assert emulator.creates == 1
    assert emulator.requests[0].aborted


def test_lost_sync_create_response_makes_one_task(client: httpx.Client, emulator: Emulator) -> None:
    """A lost sync create breaks the stream before any event, yet the task exists."""
    emulator.faults.lose_create_responses = 1
    with pytest.raises(httpx.RemoteProtocolError):
        stream(client, body())
    assert emulator.creates == 1


def test_dropped_stream_sends_one_event_then_breaks(client: httpx.Client, emulator: Emulator) -> None:
    """The drop_streams fault sends the first event, then breaks; the task still finishes."""
    emulator.faults.drop_streams = 1
    received: list[ServerSentEvent] = []
    with (
        pytest.raises(httpx.RemoteProtocolError),
        connect_sse(client, "POST", "/api/v1/tasks/sync", json=body()) as source,
    ):
        received.extend(source.iter_sse())
    assert len(received) == 1
    assert wait_done(client, received[0].json()["id"])[-1]["status"] == "success"


def test_cut_download_breaks_mid_body(client: httpx.Client, emulator: Emulator) -> None:
    """The cut_downloads fault sends half the file and breaks; the next download is whole."""
    emulator.task_seconds = 0
    emulator.faults.cut_downloads = 1
    url = client.get(f"/api/v1/tasks/{create(client)['id']}").json()["outputs"][0]["url"]
    with pytest.raises(httpx.RemoteProtocolError):
        client.get(url)
    assert Image.open(io.BytesIO(client.get(url).content)).format == "PNG"


# --- images ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("model", "aspect_ratio", "resolution", "size"),
    [
        ("nano-banana-1", None, None, (1024, 1024)),
        ("nano-banana-1", "9:16", None, (576, 1024)),
        ("nano-banana-1-pro", "21:9", "2K", (2048, 878)),
        ("nano-banana-2", "8:1", "4K", (4096, 512)),
        ("nano-banana-2", "1:8", "1K", (128, 1024)),
    ],
)
def test_output_png_has_requested_size(
    client: httpx.Client,
    emulator: Emulator,
    model: str,
    aspect_ratio: str | None,
    resolution: str | None,
    size: tuple[int, int],
) -> None:
    """The output is a real PNG of the size the ratio and resolution call for."""
    emulator.task_seconds = 0
    options = {k: v for k, v in {"aspect_ratio": aspect_ratio, "resolution": resolution}.items() if v}
    task = client.get(f"/api/v1/tasks/{create(client, model=model, **options)['id']}").json()
    response = client.get(task["outputs"][0]["url"])
    assert response.headers["content-type"] == "image/png"
    image = Image.open(io.BytesIO(response.content))
    assert (image.format, image.size) == ("PNG", size)


def test_output_png_says_it_is_a_placeholder(client: httpx.Client, emulator: Emulator) -> None:
    """The PNG's Description metadata marks it as an offline placeholder."""
    emulator.task_seconds = 0
    task = client.get(f"/api/v1/tasks/{create(client)['id']}").json()
    image = Image.open(io.BytesIO(client.get(task["outputs"][0]["url"]).content))
    assert image.info["Description"] == PLACEHOLDER_DESCRIPTION


def test_output_of_unfinished_task_is_404(client: httpx.Client, emulator: Emulator) -> None:
    """An output URL guessed before the task succeeds is not found."""
    emulator.task_seconds = 10
    task_id = create(client)["id"]
    assert client.get(f"/files/outputs/{task_id}/0.png").status_code == 404


# --- bookkeeping -----------------------------------------------------------------------------------------


def test_requests_are_recorded(client: httpx.Client, emulator: Emulator) -> None:
    """Every request is recorded with its method, path and status."""
    client.get("/api/v1/tasks/task_000000000000")
    assert [(r.method, r.path, r.status) for r in emulator.requests] == [
        ("GET", "/api/v1/tasks/task_000000000000", 404)
    ]


def test_reset_forgets_tasks_and_restores_settings(client: httpx.Client, emulator: Emulator) -> None:
    """reset() forgets tasks and counters and restores the constructor's timings and faults."""
    emulator.task_seconds = 5
    create(client)
    emulator.faults.server_errors = 3
    emulator.reset()
    assert (emulator.creates, emulator.task_seconds, emulator.faults.server_errors) == (0, 0.3, 0)
    assert client.get("/api/v1/tasks/list").json()["total"] == 0
