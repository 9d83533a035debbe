"""The emulator over real HTTP: the Monet contract, its timings, its faults and its images."""

from __future__ import annotations

import io
import json
import re
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from httpx_sse import ServerSentEvent, connect_sse
from PIL import Image

from nano_banana_mcp import catalog
from nano_banana_mcp.emulator import MAX_UPLOAD_BYTES, PLACEHOLDER_DESCRIPTION, Emulator, Faults, serve_in_thread
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


# --- byte ranges ------------------------------------------------------------------------------------------


def output_url(client: httpx.Client, emulator: Emulator) -> str:
    """The output URL of a task that is already finished."""
    emulator.task_seconds = 0
    return client.get(f"/api/v1/tasks/{create(client)['id']}").json()["outputs"][0]["url"]


def read_until_cut(client: httpx.Client, url: str, headers: dict[str, str]) -> bytes:
    """The bytes received before the emulator breaks the connection."""
    received = bytearray()
    with pytest.raises(httpx.RemoteProtocolError), client.stream("GET", url, headers=headers) as response:
        for chunk in response.iter_raw():
            received += chunk
    return bytes(received)


@pytest.mark.parametrize("kind", ["output", "upload"])
def test_range_resume_gives_identical_bytes(client: httpx.Client, emulator: Emulator, kind: str) -> None:
    """Two ranged requests, with the same ETag, put together the bytes of the whole file."""
    url = output_url(client, emulator) if kind == "output" else upload(client, bytes(range(256)) * 4)["url"]
    whole = client.get(url)
    total = len(whole.content)
    assert (whole.status_code, whole.headers["Accept-Ranges"]) == (200, "bytes")
    head = client.get(url, headers={"Range": "bytes=0-99"})
    tail = client.get(url, headers={"Range": "bytes=100-", "If-Range": whole.headers["ETag"]})
    assert (head.status_code, head.headers["Content-Range"], head.headers["Content-Length"]) == (
        206,
        f"bytes 0-99/{total}",
        "100",
    )
    assert (tail.status_code, tail.headers["Content-Range"]) == (206, f"bytes 100-{total - 1}/{total}")
    assert int(tail.headers["Content-Length"]) == total - 100
    assert head.headers["ETag"] == tail.headers["ETag"] == whole.headers["ETag"]
    assert head.content + tail.content == whole.content


def test_range_past_the_end_is_416(client: httpx.Client) -> None:
    """A range starting at or after the end is 416 with Content-Range naming the size."""
    url = upload(client, b"0123456789")["url"]
    response = client.get(url, headers={"Range": "bytes=10-"})
    assert response.status_code == 416
    assert (response.headers["Content-Range"], response.headers["Accept-Ranges"]) == ("bytes */10", "bytes")


def test_range_with_stale_if_range_sends_the_whole_file(client: httpx.Client) -> None:
    """An If-Range naming another version turns a ranged request into a full 200."""
    url = upload(client, b"0123456789")["url"]
    response = client.get(url, headers={"Range": "bytes=4-", "If-Range": '"another-version"'})
    assert (response.status_code, response.content) == (200, b"0123456789")


def test_cut_ranged_download_sends_half_the_part_and_resumes(client: httpx.Client, emulator: Emulator) -> None:
    """cut_downloads on a ranged request sends half the part, and a second Range completes the file."""
    url = output_url(client, emulator)
    whole = client.get(url).content
    emulator.faults.cut_downloads = 1
    start = 1000
    part = read_until_cut(client, url, {"Range": f"bytes={start}-"})
    assert part == whole[start : start + (len(whole) - start) // 2]
    rest = client.get(url, headers={"Range": f"bytes={start + len(part)}-"})
    assert rest.status_code == 206
    assert whole[:start] + part + rest.content == whole


def test_downloads_counts_whole_uncut_output_downloads(client: httpx.Client, emulator: Emulator) -> None:
    """downloads counts outputs delivered to their last byte, not cut ones, heads or uploads."""
    url = output_url(client, emulator)
    client.get(url)
    client.get(url, headers={"Range": "bytes=0-9"})
    client.head(url)
    httpx.get(upload(client)["url"])
    emulator.faults.cut_downloads = 1
    read_until_cut(client, url, {})
    assert emulator.downloads == 1
    client.get(url, headers={"Range": "bytes=10-"})
    assert emulator.downloads == 2


# --- chaos ----------------------------------------------------------------------------------------------


def chaos_outcome(emulator: Emulator, send: Any) -> str:
    """The single chaos kind that fired while ``send()`` ran (or "none"), checking the client saw it."""
    before = emulator.chaos_fired.copy()
    try:
        status = send()
    except httpx.RemoteProtocolError:
        status = "broken"
    fired = emulator.chaos_fired - before
    assert sum(fired.values()) <= 1
    kind = next(iter(fired), "none")
    expected = {"rate_limit": 429, "server_error": 503, "none": 200}.get(kind, "broken")
    assert status == expected, (kind, status)
    return kind


def test_full_chaos_fires_only_the_kinds_that_apply(client: httpx.Client, emulator: Emulator) -> None:
    """At rate 1.0 every request gets a fault, always one that applies to that kind of request."""
    url = output_url(client, emulator)
    emulator.set_chaos(1.0, seed=11)

    def sync_create() -> int:
        with client.stream("POST", "/api/v1/tasks/sync", json=body()) as response:
            response.read()
            return response.status_code

    requests = {
        "list": (lambda: client.get("/api/v1/tasks/list").status_code, {"rate_limit", "server_error"}),
        "create": (
            lambda: client.post("/api/v1/tasks/async", json=body()).status_code,
            {"rate_limit", "server_error", "lost_create"},
        ),
        "sync": (sync_create, {"rate_limit", "server_error", "lost_create", "dropped_stream"}),
        "download": (lambda: client.get(url).status_code, {"cut_download"}),
    }
    for name, (send, allowed) in requests.items():
        kinds = Counter(chaos_outcome(emulator, send) for _ in range(16))
        assert set(kinds) == allowed, name
    assert sum(emulator.chaos_fired.values()) == 4 * 16
    assert emulator.downloads == 0


def test_chaos_retries_with_one_key_make_one_task(client: httpx.Client, emulator: Emulator) -> None:
    """Retrying one create through heavy chaos with the same key creates exactly one task."""
    emulator.set_chaos(1.0, seed=5)
    payload = body("soak-key")
    for _ in range(20):
        try:
            response = client.post("/api/v1/tasks/async", json=payload)
        except httpx.RemoteProtocolError:
            continue
        assert response.status_code in (429, 503)
    assert emulator.chaos_fired["lost_create"] >= 2
    emulator.set_chaos(0.0)
    assert create(client, "soak-key")["id"] == client.get("/api/v1/tasks/list").json()["tasks"][0]["id"]
    assert emulator.creates == 1


def test_chaos_never_fails_a_task(client: httpx.Client, emulator: Emulator) -> None:
    """Tasks created while chaos is on all end in success."""
    emulator.task_seconds = 0
    emulator.set_chaos(0.5, seed=2)
    ids = set()
    for _ in range(30):
        try:
            response = client.post("/api/v1/tasks/async", json=body())
        except httpx.RemoteProtocolError:
            continue
        if response.status_code == 200:
            ids.add(response.json()["id"])
    emulator.set_chaos(0.0)
    tasks = client.get("/api/v1/tasks/list", params={"pageSize": 100}).json()["tasks"]
    assert ids
    assert {t["status"] for t in tasks} == {"success"}


def test_chaos_with_a_seed_is_reproducible(client: httpx.Client, emulator: Emulator) -> None:
    """The same seed gives the same sequence of faults."""

    def run() -> list[int]:
        emulator.set_chaos(0.5, seed=42)
        return [client.get("/api/v1/tasks/list").status_code for _ in range(24)]

    first = run()
    assert set(first) == {200, 429, 503}
    assert run() == first


def test_chaos_at_zero_fires_nothing(client: httpx.Client, emulator: Emulator) -> None:
    """With chaos 0 every request is answered normally and nothing is counted."""
    url = output_url(client, emulator)
    emulator.set_chaos(0.0, seed=1)
    for _ in range(10):
        assert client.get("/api/v1/tasks/list").status_code == 200
        assert client.get(url).status_code == 200
        assert client.post("/api/v1/tasks/async", json=body()).status_code == 200
    assert emulator.chaos_fired == Counter()


def test_auth_failures_do_not_consume_chaos(emulator: Emulator) -> None:
    """A request refused as unauthorized is a 401 however high the chaos rate."""
    emulator.set_chaos(1.0, seed=3)
    for _ in range(5):
        assert httpx.get(f"{emulator.base_url}/api/v1/tasks/list").status_code == 401
    assert emulator.chaos_fired == Counter()


def test_counting_faults_fire_before_chaos(client: httpx.Client, emulator: Emulator) -> None:
    """A pending counting fault answers first; chaos is not counted for that request."""
    emulator.set_chaos(1.0, seed=3)
    emulator.faults.server_errors = 1
    assert client.get("/api/v1/tasks/list").status_code == 503
    assert (emulator.faults.server_errors, emulator.chaos_fired) == (0, Counter())


def test_reset_clears_chaos(client: httpx.Client, emulator: Emulator) -> None:
    """reset() switches chaos off and clears chaos_fired and downloads."""
    emulator.set_chaos(1.0, seed=3)
    client.get("/api/v1/tasks/list")
    emulator.reset()
    assert (emulator.faults.chaos, emulator.faults.chaos_seed, emulator.chaos_fired) == (0.0, None, Counter())
    assert client.get("/api/v1/tasks/list").status_code == 200


# --- hostile answers ------------------------------------------------------------------------------------


def hostile(emulator: Emulator, kind: str, count: int = 1) -> None:
    emulator.faults.hostile_kind = kind
    emulator.faults.hostile = count


def wait_streams_closed(emulator: Emulator, timeout: float = 1.0) -> None:
    """Wait until no hostile body is being streamed any more (the generators have stopped)."""
    deadline = time.monotonic() + timeout
    while emulator.hostile_streams:
        assert time.monotonic() < deadline, "a hostile stream kept running after the client left"
        time.sleep(0.005)


def read_raw(response: httpx.Response) -> tuple[int, bytes, bytes, int]:
    """Bytes received, the first and last 64 of them, and how many newlines, without keeping the body."""
    size, head, tail, newlines = 0, b"", b"", 0
    for chunk in response.iter_raw():
        size += len(chunk)
        head = (head + chunk[: 64 - len(head)]) if len(head) < 64 else head
        tail = (tail + chunk)[-64:]
        newlines += chunk.count(b"\n")
    return size, head, tail, newlines


def test_hostile_malformed_json_still_creates_the_task(client: httpx.Client, emulator: Emulator) -> None:
    """malformed_json answers a truncated JSON body after really creating the task, so a retry finds it."""
    hostile(emulator, "malformed_json")
    response = client.post("/api/v1/tasks/async", json=body("key-h"))
    assert (response.status_code, response.headers["content-type"]) == (200, "application/json")
    assert response.content == b'{"id": "task_'
    assert (emulator.creates, emulator.faults.hostile, emulator.hostile_fired) == (1, 0, Counter(malformed_json=1))
    assert create(client, "key-h")["id"] == client.get("/api/v1/tasks/list").json()["tasks"][0]["id"]
    assert emulator.creates == 1


@pytest.mark.parametrize(
    ("kind", "shape", "expected"),
    [
        ("missing_fields", "task", {}),
        ("missing_fields", "list", {"page": 1}),
        ("missing_fields", "upload", {"id": "file_x"}),
        ("wrong_types", "task", {"id": 12345, "status": ["success"], "outputs": "nope", "created_at": 7}),
        ("wrong_types", "list", {"tasks": "many", "total": "lots"}),
        ("wrong_types", "upload", {"url": 42}),
    ],
)
def test_hostile_json_shapes(
    client: httpx.Client, emulator: Emulator, kind: str, shape: str, expected: dict[str, Any]
) -> None:
    """missing_fields and wrong_types answer 200 with the body of that kind for each endpoint."""
    task_id = create(client)["id"]
    hostile(emulator, kind)
    if shape == "task":
        response = client.get(f"/api/v1/tasks/{task_id}")
    elif shape == "list":
        response = client.get("/api/v1/tasks/list")
    else:
        response = client.post("/api/v1/files", files={"file": ("a.png", b"x", "image/png")})
    assert (response.status_code, response.json()) == (200, expected)
    assert (emulator.faults.hostile, emulator.hostile_fired) == (0, Counter({kind: 1}))
    assert emulator.uploads == (shape == "upload")


def test_hostile_huge_body_is_64_mib_of_valid_json_without_length(client: httpx.Client, emulator: Emulator) -> None:
    """huge_body streams a 64 MiB JSON object in chunks, with no Content-Length."""
    hostile(emulator, "huge_body")
    with client.stream("GET", "/api/v1/tasks/list") as response:
        assert (response.status_code, response.headers["content-type"]) == (200, "application/json")
        assert "content-length" not in response.headers
        size, head, tail, _ = read_raw(response)
    assert size == 64 * 1024 * 1024
    assert head.startswith(b'{"id":"task_x","pad":"xxxx')
    assert tail.endswith(b'xxxx"}')
    wait_streams_closed(emulator)


def test_hostile_html_error_is_a_502_proxy_page(client: httpx.Client, emulator: Emulator) -> None:
    """html_error answers 502 with an HTML page, and the request is recorded as a 502."""
    task_id = create(client)["id"]
    hostile(emulator, "html_error")
    response = client.get(f"/api/v1/tasks/{task_id}")
    assert response.status_code == 502
    assert response.headers["content-type"].startswith("text/html")
    assert response.text.startswith("<html>") and "<h1>502 Bad Gateway</h1>" in response.text
    assert [(r.path, r.status) for r in emulator.requests[-1:]] == [(f"/api/v1/tasks/{task_id}", 502)]


def test_hostile_skips_error_answers(client: httpx.Client, emulator: Emulator) -> None:
    """An answer that is an error anyway (here a 404) is not replaced and consumes nothing."""
    hostile(emulator, "html_error")
    response = client.get("/api/v1/tasks/task_000000000000")
    assert (response.status_code, error_code(response)) == (404, "not_found")
    assert (emulator.faults.hostile, emulator.hostile_fired) == (1, Counter())


@pytest.mark.parametrize(
    ("kind", "request_kind"),
    [("endless_download", "list"), ("not_image", "sync"), ("malformed_json", "download"), ("endless_stream", "create")],
)
def test_hostile_kind_that_does_not_apply_leaves_requests_alone(
    client: httpx.Client, emulator: Emulator, kind: str, request_kind: str
) -> None:
    """A hostile kind meant for other requests answers this one normally and is not consumed."""
    url = output_url(client, emulator)
    hostile(emulator, kind)
    if request_kind == "list":
        assert client.get("/api/v1/tasks/list").json()["total"] == 1
    elif request_kind == "sync":
        assert stream(client, body())[-1][0].json()["status"] == "success"
    elif request_kind == "download":
        assert Image.open(io.BytesIO(client.get(url).content)).format == "PNG"
    else:
        assert create(client)["id"].startswith("task_")
    assert (emulator.faults.hostile, emulator.hostile_fired) == (1, Counter())


def test_hostile_endless_stream_repeats_progress_until_the_client_leaves(
    client: httpx.Client, emulator: Emulator
) -> None:
    """endless_stream sends progress stuck at 50 past the task's end; it stops when the client closes."""
    hostile(emulator, "endless_stream")
    events = []
    with connect_sse(client, "POST", "/api/v1/tasks/sync", json=body()) as source:
        for event in source.iter_sse():
            events.append(event.json())
            if len(events) == 8:  # 8 x 0.05 s: beyond the task's 0.3 s
                break
    assert {(e["status"], e["outputs"][0]["progress"]) for e in events} == {("processing", 50)}
    wait_streams_closed(emulator)
    assert client.get(f"/api/v1/tasks/{events[0]['id']}").json()["status"] == "success"


def test_hostile_garbage_stream_has_no_usable_event(client: httpx.Client, emulator: Emulator) -> None:
    """garbage_stream's data lines are not JSON, JSON arrays or objects without id; it ends with no terminal event."""
    hostile(emulator, "garbage_stream")
    datas = [event.data for event, _ in stream(client, body())]
    assert len(datas) >= 3
    for data in datas:
        try:
            parsed = json.loads(data)
        except ValueError:
            continue
        assert not isinstance(parsed, dict) or ("id" not in parsed and parsed.get("status") != "success")
    assert emulator.creates == 1


def test_hostile_huge_event_is_one_16_mib_line(client: httpx.Client, emulator: Emulator) -> None:
    """huge_event sends a single data: line of 16 MiB that never ends in a newline."""
    hostile(emulator, "huge_event")
    with client.stream("POST", "/api/v1/tasks/sync", json=body()) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        size, head, tail, newlines = read_raw(response)
    assert head.startswith(b'event: progress\ndata: {"id":"task_')
    assert (newlines, tail[-1:]) == (1, b"}")
    assert size - len(b"event: progress\n") == 16 * 1024 * 1024


def test_hostile_not_image_is_html_labelled_png(client: httpx.Client, emulator: Emulator) -> None:
    """not_image answers 200 image/png whose body is an HTML page."""
    url = output_url(client, emulator)
    hostile(emulator, "not_image")
    response = client.get(url)
    assert (response.status_code, response.headers["content-type"]) == (200, "image/png")
    assert response.content.startswith(b"<!DOCTYPE html>")
    assert emulator.downloads == 0


def test_hostile_endless_download_stops_when_the_client_leaves(client: httpx.Client, emulator: Emulator) -> None:
    """endless_download streams PNG-looking bytes without length; closing stops it with no CPU left burning."""
    url = output_url(client, emulator)
    hostile(emulator, "endless_download")
    received = 0
    with client.stream("GET", url) as response:
        assert (response.status_code, response.headers["content-type"]) == (200, "image/png")
        assert "content-length" not in response.headers
        for chunk in response.iter_raw():
            assert received or chunk.startswith(b"\x89PNG\r\n\x1a\n")
            received += len(chunk)
            if received > 4 * 1024 * 1024:
                break
    wait_streams_closed(emulator)
    cpu = time.process_time()
    time.sleep(0.2)
    assert time.process_time() - cpu < 0.05
    started = time.monotonic()
    assert client.get("/api/v1/tasks/list").status_code == 200
    assert time.monotonic() - started < 1


def test_hostile_endless_download_leaves_the_emulator_responsive(
    client: httpx.Client, emulator: Emulator, api_key: str
) -> None:
    """While an endless download flows, other requests are answered at once."""
    url = output_url(client, emulator)
    hostile(emulator, "endless_download")
    other = httpx.Client(base_url=str(emulator.base_url), headers={"Authorization": f"Bearer {api_key}"})
    with other, client.stream("GET", url) as response:
        chunks = response.iter_raw()
        next(chunks)
        started = time.monotonic()
        assert other.get("/api/v1/tasks/list").status_code == 200
        assert time.monotonic() - started < 1
        next(chunks)
    wait_streams_closed(emulator)


def test_hostile_redirect_offsite(client: httpx.Client, emulator: Emulator) -> None:
    """redirect_offsite answers 302 to a host that is not the API's."""
    url = output_url(client, emulator)
    hostile(emulator, "redirect_offsite")
    response = client.get(url)
    assert (response.status_code, response.headers["location"]) == (302, "https://evil.example.invalid/steal.png")
    assert emulator.requests[-1].status == 302


def test_hostile_redirect_loopback_serves_the_same_file(client: httpx.Client, emulator: Emulator) -> None:
    """redirect_loopback answers 302 to a mirror path on this emulator that serves the same bytes."""
    url = output_url(client, emulator)
    whole = client.get(url).content
    hostile(emulator, "redirect_loopback")
    response = client.get(url, follow_redirects=True)
    assert [r.status_code for r in response.history] == [302]
    assert str(response.url) == url.replace("/files/outputs/", "/files/mirror/outputs/")
    assert (response.status_code, response.content) == (200, whole)


def test_hostile_redirect_loop_points_at_itself_once_per_count(client: httpx.Client, emulator: Emulator) -> None:
    """redirect_loop answers 302 to the same URL, one count per answer, then the file."""
    url = output_url(client, emulator)
    hostile(emulator, "redirect_loop", count=3)
    response = client.get(url, follow_redirects=True)
    assert [(r.status_code, r.headers["location"]) for r in response.history] == [(302, url)] * 3
    assert Image.open(io.BytesIO(response.content)).format == "PNG"
    assert (emulator.faults.hostile, emulator.hostile_fired) == (0, Counter(redirect_loop=3))


def test_reset_clears_hostile(client: httpx.Client, emulator: Emulator) -> None:
    """reset() switches hostile answers off and clears hostile_fired."""
    hostile(emulator, "wrong_types", count=5)
    client.get("/api/v1/tasks/list")
    emulator.reset()
    assert (emulator.faults.hostile, emulator.faults.hostile_kind, emulator.hostile_fired) == (
        0,
        "malformed_json",
        Counter(),
    )
    assert client.get("/api/v1/tasks/list").json()["total"] == 0


# --- control endpoints ----------------------------------------------------------------------------------

CONTROL_KEY = "monet_control_key"


@pytest.fixture(scope="module")
def control_server() -> Iterator[Emulator]:
    emulator = Emulator(api_key=CONTROL_KEY, task_seconds=0, control=True)
    with serve_in_thread(emulator):
        yield emulator


@pytest.fixture
def control(control_server: Emulator) -> Iterator[httpx.Client]:
    """A client without credentials for a fresh control=True emulator."""
    control_server.reset()
    with httpx.Client(base_url=str(control_server.base_url), timeout=5) as client:
        yield client


@pytest.fixture
def control_api(control_server: Emulator) -> Iterator[httpx.Client]:
    """An authorised API client for the control=True emulator."""
    headers = {"Authorization": f"Bearer {CONTROL_KEY}"}
    with httpx.Client(base_url=str(control_server.base_url), headers=headers, timeout=5) as client:
        yield client


def test_control_endpoints_are_404_without_control(emulator: Emulator) -> None:
    """An emulator built without control=True does not serve /_emulator."""
    assert httpx.get(f"{emulator.base_url}/_emulator/state").status_code == 404
    assert httpx.post(f"{emulator.base_url}/_emulator/faults", json={"rate_limit": 1}).status_code == 404
    assert emulator.faults.rate_limit == 0


def test_control_state_reports_counters(control: httpx.Client, control_api: httpx.Client) -> None:
    """GET /_emulator/state reports creates, uploads, tasks, downloads, chaos and faults, without auth."""
    task = create(control_api)
    control_api.get(control_api.get(f"/api/v1/tasks/{task['id']}").json()["outputs"][0]["url"])
    upload(control_api)
    state = control.get("/_emulator/state").json()
    assert {k: state[k] for k in ("creates", "uploads", "tasks", "downloads", "chaos_fired")} == {
        "creates": 1,
        "uploads": 1,
        "tasks": 1,
        "downloads": 1,
        "chaos_fired": {},
    }
    assert state["faults"] == {name: getattr(Faults(), name) for name in Faults.__dataclass_fields__}


def test_control_faults_round_trip(control: httpx.Client, control_api: httpx.Client) -> None:
    """POST /_emulator/faults sets fields that state reports and the API applies; no faults hit the control."""
    changes = {"rate_limit": 1, "server_errors": 1, "chaos": 0.0, "chaos_seed": 9}
    assert control.post("/_emulator/faults", json=changes).status_code == 200
    assert (
        control.get("/_emulator/state").json()["faults"] | changes == control.get("/_emulator/state").json()["faults"]
    )
    assert [control_api.get("/api/v1/tasks/list").status_code for _ in range(3)] == [429, 503, 200]
    faults = control.get("/_emulator/state").json()["faults"]
    assert (faults["rate_limit"], faults["server_errors"], faults["chaos_seed"]) == (0, 0, 9)


def test_control_sets_hostile_faults(control: httpx.Client, control_api: httpx.Client) -> None:
    """POST /_emulator/faults sets hostile and hostile_kind; state reports what fired."""
    changes = {"hostile": 1, "hostile_kind": "missing_fields"}
    assert control.post("/_emulator/faults", json=changes).status_code == 200
    assert control_api.get("/api/v1/tasks/list").json() == {"page": 1}
    state = control.get("/_emulator/state").json()
    assert (state["faults"]["hostile"], state["hostile_fired"]) == (0, {"missing_fields": 1})


@pytest.mark.parametrize(
    "payload",
    [
        {"server_errors": 2, "no_such_fault": 1},
        {"server_errors": 2, "rate_limit": "many"},
        {"server_errors": 2, "rate_limit": True},
        {"server_errors": 2, "chaos": 2},
        {"server_errors": 2, "latency": -1},
        {"server_errors": 2, "hostile_kind": "rude"},
        {"server_errors": 2, "hostile": -1},
        [{"server_errors": 2}],
    ],
)
def test_control_faults_refuses_bad_fields(control: httpx.Client, control_server: Emulator, payload: Any) -> None:
    """An unknown field or a bad value is a 400 and changes nothing."""
    response = control.post("/_emulator/faults", json=payload)
    assert response.status_code == 400
    assert error_code(response) == "VALIDATION_ERROR"
    assert control_server.faults == Faults()


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


def test_evicted_images_come_back_identical(client: httpx.Client, emulator: Emulator) -> None:
    """Only recent images stay in memory; an older one is rendered again, byte for byte."""
    emulator.task_seconds = 0
    first = create(client, aspect_ratio="8:1")["id"]
    url = f"{emulator.base_url}/files/outputs/{first}/0.png"
    original = client.get(url).content
    for _ in range(70):  # more than the cache holds
        client.get(f"{emulator.base_url}/files/outputs/{create(client, aspect_ratio='8:1')['id']}/0.png")
    assert client.get(url).content == original
