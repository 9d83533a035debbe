"""The emulator's API contract over real HTTP: auth, validation, idempotency, lifecycle, SSE, listing, files."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from httpx_sse import connect_sse

from nano_banana_mcp.emulator import MAX_UPLOAD_BYTES, Emulator

if TYPE_CHECKING:
    from tests.emulator.conftest import Api

# --- auth and validation ---------------------------------------------------------------------------


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer monet_wrong"}, {"Authorization": "monet_x"}])
def test_missing_or_wrong_key_is_401(emulator: Emulator, headers: dict[str, str]) -> None:
    """Without the right bearer key every API call is refused as unauthorized."""
    response = httpx.get(f"{emulator.base_url}/api/v1/tasks/list", headers=headers)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthorized"


def test_create_answers_a_pending_task(api: Api, emulator: Emulator) -> None:
    """A create returns a pending image task with a task_ id and counts one creation."""
    task = api.create()
    assert re.fullmatch(r"task_[0-9a-f]{12}", task["id"])
    assert (task["status"], task["type"]) == ("pending", "image")
    assert task["created_at"].endswith("Z")
    assert emulator.creates == 1


def test_finish_tasks_ends_the_running_tasks_now_with_their_images(api: Api, emulator: Emulator) -> None:
    """A test that holds a task running says when it ends: every running task is a success at once, its image
    served; one already finished is left as it was, and a task made after runs its own time."""
    emulator.task_seconds = 600.0
    running = [api.create()["id"] for _ in range(2)]
    assert {api.get(task_id)["status"] for task_id in running} <= {"pending", "processing"}
    assert emulator.finish_tasks() == 2
    for task_id in running:
        done = api.get(task_id)
        assert done["status"] == "success"
        assert api.client.get(done["outputs"][0]["url"]).status_code == 200
    assert emulator.finish_tasks() == 0
    later = api.create()["id"]
    assert api.get(later)["status"] == "pending"


def urls(n: int) -> list[str]:
    return [f"https://example.com/{i}.png" for i in range(n)]


@pytest.mark.parametrize(
    ("task_input", "fragments"),
    [
        ({"model": "nano-banana-1", "resolution": "2K"}, ["input.resolution", "nano-banana-1", "omit it"]),
        ({"model": "nano-banana-1", "images": urls(6)}, ["input.images has 6", "nano-banana-1", "at most 5"]),
        ({"model": "nano-banana-1", "aspect_ratio": "21:9"}, ["input.aspect_ratio '21:9'", "nano-banana-1;"]),
        ({"model": "nano-banana-1-pro", "aspect_ratio": "8:1"}, ["input.aspect_ratio '8:1'", "nano-banana-1-pro"]),
        ({"model": "nano-banana-1-pro", "resolution": "8K"}, ["input.resolution '8K'", "1K, 2K, 4K"]),
        ({"model": "nano-banana-2", "images": urls(15)}, ["input.images has 15", "at most 14"]),
        ({"images": urls(15)}, ["nano-banana-2", "at most 14"]),
        (
            {"model": "nano-banana-3"},
            ["input.model 'nano-banana-3'", "nano-banana-1, nano-banana-1-pro, nano-banana-2"],
        ),
        ({"prompt": "   "}, ["input.prompt is required"]),
    ],
)
def test_what_the_model_table_refuses_is_400(
    api: Api, emulator: Emulator, task_input: dict[str, Any], fragments: list[str]
) -> None:
    """A create the published model table refuses is a 400 VALIDATION_ERROR naming the field, and creates nothing."""
    response = api.client.post("/api/v1/tasks/async", json=api.body(**task_input))
    assert response.status_code == 400
    assert api.error_code(response) == "VALIDATION_ERROR"
    message = response.json()["error"]["message"]
    for fragment in fragments:
        assert fragment in message
    assert "before anything was sent" not in message  # the product catalogue's wording, not the API's
    assert emulator.creates == 0


@pytest.mark.parametrize(
    "task_input",
    [
        {"model": "nano-banana-1", "images": urls(5), "aspect_ratio": "9:16"},
        {"model": "nano-banana-1-pro", "images": urls(14), "aspect_ratio": "21:9", "resolution": "4K"},
        {"model": "nano-banana-2", "aspect_ratio": "1:8", "resolution": "1K"},
        {"aspect_ratio": "8:1", "resolution": "2K"},
    ],
)
def test_what_the_model_table_accepts_is_created(api: Api, emulator: Emulator, task_input: dict[str, Any]) -> None:
    """Each model's limits are accepted up to the edge (no model means nano-banana-2)."""
    api.create(**task_input)
    assert emulator.creates == 1


def test_the_emulator_does_not_use_the_product_catalogue() -> None:
    """Importing and building the emulator loads neither the catalogue, the product's errors nor its client."""
    code = (
        "import sys\n"
        "from nano_banana_mcp.emulator import Emulator\n"
        "Emulator()\n"
        "print(sorted(m for m in sys.modules if m.startswith('nano_banana_mcp.')"
        " and not m.startswith('nano_banana_mcp.emulator')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=30)
    assert out.stdout.strip() == "[]"


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
    api: Api, emulator: Emulator, payload: Any, fragment: str
) -> None:
    """A create of the wrong shape is a 400 VALIDATION_ERROR naming the problem, and creates nothing."""
    response = api.client.post("/api/v1/tasks/async", json=payload)
    assert response.status_code == 400
    assert api.error_code(response) == "VALIDATION_ERROR"
    assert fragment in response.json()["error"]["message"]
    assert emulator.creates == 0


def test_body_that_is_not_json_is_400(api: Api, emulator: Emulator) -> None:
    """A create whose body is not JSON at all is a 400 VALIDATION_ERROR."""
    response = api.client.post("/api/v1/tasks/sync", content=b"{not json", headers={"Content-Type": "application/json"})
    assert (response.status_code, api.error_code(response)) == (400, "VALIDATION_ERROR")
    assert emulator.creates == 0


# --- idempotency on one endpoint ------------------------------------------------------------------------


def test_replay_with_same_key_returns_the_same_task(api: Api, emulator: Emulator) -> None:
    """The same key and input return the existing task instead of creating another."""
    first = api.create("key-1", aspect_ratio="16:9")
    second = api.create("key-1", aspect_ratio="16:9")
    assert second["id"] == first["id"]
    assert emulator.creates == 1


@pytest.mark.parametrize("endpoint", ["async", "sync"])
def test_same_key_with_other_input_is_409(api: Api, emulator: Emulator, endpoint: str) -> None:
    """Reusing a key on the same endpoint for a different request is an idempotency conflict."""
    path = f"/api/v1/tasks/{endpoint}"
    with api.client.stream("POST", path, json=api.body("key-1", prompt="A cat")) as first:
        assert first.status_code == 200
    response = api.client.post(path, json=api.body("key-1", prompt="A dog"))
    assert response.status_code == 409
    assert api.error_code(response) == "idempotency_conflict"
    assert emulator.creates == 1


def test_sync_resend_streams_the_same_task_to_its_end(api: Api, emulator: Emulator) -> None:
    """A same-key resend to /tasks/sync streams the task made there, from its state now to its end."""
    payload = api.body("key-s")
    with connect_sse(api.client, "POST", "/api/v1/tasks/sync", json=payload) as source:
        first = next(source.iter_sse()).json()  # then the stream breaks off, as networks do
    events = [event.json() for event, _ in api.stream(payload)]
    assert {e["id"] for e in events} == {first["id"]}
    assert events[-1]["status"] == "success"
    assert (emulator.creates, emulator.creates_by_endpoint) == (1, {"sync": 1})
    assert emulator.keys_on_two_endpoints() == set()


def test_sync_resend_of_a_finished_task_is_one_done_event(api: Api, emulator: Emulator) -> None:
    """Resending a finished sync create answers its terminal state once."""
    emulator.task_seconds = 0
    payload = api.body("key-1")
    task_id = api.stream(payload)[-1][0].json()["id"]
    events = api.stream(payload)
    assert [(e.event, e.json()["id"], e.json()["status"]) for e, _ in events] == [("done", task_id, "success")]
    assert emulator.creates == 1


# --- idempotency across endpoints ------------------------------------------------------------------------


def test_strict_key_sent_to_sync_after_async_makes_a_second_task(api: Api, emulator: Emulator) -> None:
    """By default a key only dedupes on its first endpoint: the same key on /sync creates (and counts) anew."""
    emulator.task_seconds = 0
    assert emulator.strict_idempotency
    task_id = api.create("key-x")["id"]
    streamed = {event.json()["id"] for event, _ in api.stream(api.body("key-x"))}
    assert len(streamed) == 1
    assert task_id not in streamed
    assert (emulator.creates, emulator.creates_by_endpoint) == (2, {"async": 1, "sync": 1})
    assert emulator.keys_on_two_endpoints() == {"key-x"}


def test_strict_key_sent_to_async_after_sync_makes_a_second_task(api: Api, emulator: Emulator) -> None:
    """The other way round too; and each endpoint then replays its own task."""
    emulator.task_seconds = 0
    streamed = api.stream(api.body("key-y"))[-1][0].json()["id"]
    created = api.create("key-y")["id"]
    assert created != streamed
    assert api.create("key-y")["id"] == created
    assert api.stream(api.body("key-y"))[-1][0].json()["id"] == streamed
    assert (emulator.creates, emulator.creates_by_endpoint) == (2, {"async": 1, "sync": 1})
    assert emulator.keys_on_two_endpoints() == {"key-y"}


def test_strict_key_on_the_other_endpoint_may_carry_another_body(api: Api, emulator: Emulator) -> None:
    """Keys of different endpoints are unrelated: another body on the other endpoint is no conflict."""
    emulator.task_seconds = 0
    api.create("key-z", prompt="A cat")
    assert api.stream(api.body("key-z", prompt="A dog"))[-1][0].json()["status"] == "success"
    assert emulator.creates == 2


def test_non_strict_key_spans_both_endpoints(api: Api, emulator: Emulator) -> None:
    """With strict_idempotency off, /sync with an /async task's key attaches to that task."""
    emulator.task_seconds = 0
    emulator.strict_idempotency = False
    task_id = api.create("key-1")["id"]
    events = api.stream(api.body("key-1"))
    assert {e.json()["id"] for e, _ in events} == {task_id}
    assert events[-1][0].json()["status"] == "success"
    streamed = api.stream(api.body("key-2"))[-1][0].json()["id"]
    assert api.create("key-2")["id"] == streamed
    assert (emulator.creates, emulator.creates_by_endpoint) == (2, {"async": 1, "sync": 1})
    assert emulator.keys_on_two_endpoints() == {"key-1", "key-2"}
    conflict = api.client.post("/api/v1/tasks/sync", json=api.body("key-1", prompt="A dog"))
    assert (conflict.status_code, api.error_code(conflict)) == (409, "idempotency_conflict")


def test_non_strict_constructor_option(emulator: Emulator) -> None:
    """Emulator(strict_idempotency=False) starts, and resets, in the attaching mode."""
    other = Emulator(strict_idempotency=False)
    other.strict_idempotency = True
    other.reset()
    assert not other.strict_idempotency
    assert Emulator().strict_idempotency


def test_a_key_is_noted_on_each_endpoint_it_reaches_whatever_the_answer(api: Api, emulator: Emulator) -> None:
    """A key counts as sent to an endpoint even when that request was refused (here 429, then 400)."""
    emulator.faults.rate_limit = 1
    assert api.client.post("/api/v1/tasks/sync", json=api.body("key-r")).status_code == 429
    assert emulator.keys_on_two_endpoints() == set()
    refused = api.client.post("/api/v1/tasks/async", json=api.body("key-r", model="nano-banana-3"))
    assert refused.status_code == 400
    assert emulator.keys_on_two_endpoints() == {"key-r"}
    assert emulator.creates == 0


def test_snapshot_reports_creates_by_endpoint_and_shared_keys(api: Api, emulator: Emulator) -> None:
    """snapshot() carries the per-endpoint counts, the keys seen on both endpoints and the mode."""
    emulator.task_seconds = 0
    api.create("key-1")
    api.stream(api.body("key-1"))
    api.create()
    state = emulator.snapshot()
    assert (state["creates"], state["creates_by_endpoint"]) == (3, {"async": 2, "sync": 1})
    assert (state["keys_on_two_endpoints"], state["strict_idempotency"]) == (["key-1"], True)


def test_reset_forgets_keys_and_restores_the_mode(api: Api, emulator: Emulator) -> None:
    """reset() clears the per-endpoint counts and noted keys, and restores strict mode."""
    emulator.task_seconds = 0
    emulator.strict_idempotency = False
    api.create("key-1")
    api.stream(api.body("key-1"))
    emulator.reset()
    assert emulator.strict_idempotency
    assert (emulator.creates_by_endpoint, emulator.keys_on_two_endpoints()) == ({}, set())


# --- task lifecycle ----------------------------------------------------------------------------------


def test_task_goes_pending_processing_success(api: Api, emulator: Emulator) -> None:
    """Status advances with time, progress only rises, and success carries an absolute output URL."""
    emulator.task_seconds = 2  # 0.2 s pending: wide enough for the first read on a loaded machine (0.3 s gave 30 ms)
    task_id = api.create()["id"]
    seen = api.wait_done(task_id)
    statuses = list(dict.fromkeys(t["status"] for t in seen))
    assert statuses == ["pending", "processing", "success"]
    progress = [t["outputs"][0]["progress"] for t in seen]
    assert progress == sorted(progress)
    assert any(0 < p < 100 for p in progress)
    assert seen[-1]["outputs"][0] == {
        "model": "nano-banana-2",
        "status": "success",
        "progress": 100,
        "url": f"{emulator.base_url}/files/outputs/{task_id}/0.png",
    }


def test_zero_task_seconds_finishes_at_once(api: Api, emulator: Emulator) -> None:
    """With task_seconds=0 a task is already done when first read."""
    emulator.task_seconds = 0
    assert api.get(api.create()["id"])["status"] == "success"


def test_unknown_task_is_404(api: Api) -> None:
    """Reading a task that does not exist is a not_found error."""
    response = api.client.get("/api/v1/tasks/task_000000000000")
    assert response.status_code == 404
    assert api.error_code(response) == "not_found"


def test_unknown_route_is_json_404(api: Api) -> None:
    """An unknown path answers a JSON not_found error, not HTML."""
    response = api.client.get("/api/v2/nothing")
    assert response.status_code == 404
    assert api.error_code(response) == "not_found"


# --- SSE --------------------------------------------------------------------------------------------------


def test_stream_reports_progress_and_ends_with_success(api: Api, emulator: Emulator) -> None:
    """The stream sends progress events, then a done event once the task has finished."""
    events = api.stream(api.body())
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
    assert received >= finished


def test_stream_ends_when_the_task_finishes_not_at_its_next_tick(
    api: Api, emulator: Emulator, client: httpx.Client
) -> None:
    """With progress due only every hour, a task of 0.3 s still streams its done event: the stream wakes when the
    task finishes, not at its next interval (a stream that waited would hang, stopped by the 60 s guard)."""
    emulator.stream_interval = 3600
    with connect_sse(client, "POST", "/api/v1/tasks/sync", json=api.body(), timeout=60) as source:
        names = [event.event for event in source.iter_sse()]
    assert names == ["progress", "done"]


def test_stream_sends_the_new_task_at_once(api: Api, emulator: Emulator, client: httpx.Client) -> None:
    """The first event of a sync create comes right after the task is made and names it: with the task and its
    progress an hour away, waiting for either would hang (stopped by the 60 s guard)."""
    emulator.task_seconds = 3600
    emulator.stream_interval = 3600
    with connect_sse(client, "POST", "/api/v1/tasks/sync", json=api.body(), timeout=60) as source:
        first = next(source.iter_sse()).json()
    assert re.fullmatch(r"task_[0-9a-f]{12}", first["id"])
    assert first["status"] == "pending"
    assert api.client.get("/api/v1/tasks/list").json()["tasks"][0]["id"] == first["id"]


# --- listing --------------------------------------------------------------------------------------------


def test_list_is_newest_first_and_paged(api: Api) -> None:
    """Tasks are listed newest first, pageSize per page, with the total."""
    ids = [api.create()["id"] for _ in range(3)]
    first = api.client.get("/api/v1/tasks/list", params={"page": 1, "pageSize": 2}).json()
    second = api.client.get("/api/v1/tasks/list", params={"page": 2, "pageSize": 2}).json()
    assert [t["id"] for t in first["tasks"]] == [ids[2], ids[1]]
    assert [t["id"] for t in second["tasks"]] == [ids[0]]
    assert (first["page"], first["pageSize"], first["total"]) == (1, 2, 3)


@pytest.mark.parametrize("params", [{"pageSize": "0"}, {"pageSize": "101"}, {"pageSize": "many"}, {"page": "0"}])
def test_paging_out_of_range_is_400(api: Api, params: dict[str, str]) -> None:
    """page must be 1 or more and pageSize an integer from 1 to 100."""
    response = api.client.get("/api/v1/tasks/list", params=params)
    assert response.status_code == 400
    assert api.error_code(response) == "VALIDATION_ERROR"


# --- uploads --------------------------------------------------------------------------------------------


def test_upload_url_serves_the_file(api: Api, emulator: Emulator) -> None:
    """An upload answers its metadata, and its URL serves the same bytes without auth."""
    info = api.upload()
    assert re.fullmatch(r"file_[0-9a-f]+", info["id"])
    assert (info["filename"], info["size"], info["content_type"]) == ("cat.png", 9, "image/png")
    assert info["url"] == f"{emulator.base_url}/files/uploads/{info['id']}/cat.png"
    assert httpx.get(info["url"]).content == b"\x89PNG fake"
    assert emulator.uploads == 1


def test_upload_expires_after_ttl(api: Api, emulator: Emulator) -> None:
    """An uploaded file is served until upload_ttl has passed, then it is gone."""
    emulator.upload_ttl = 3600
    kept = api.upload()["url"]
    emulator.upload_ttl = 0.2
    expiring = api.upload(name="dog.png")["url"]
    uploaded = time.monotonic()  # after the upload answered: its expiry is no later than this + 0.2 s
    time.sleep(max(uploaded + 0.2 - time.monotonic(), 0))  # waits for the expiry itself: no race left
    assert api.client.get(kept).status_code == 200
    assert api.client.get(expiring).status_code == 404


def test_create_with_expired_upload_is_400(api: Api, emulator: Emulator) -> None:
    """A create referencing an expired upload is refused with a hint to upload again."""
    emulator.upload_ttl = 0
    url = api.upload()["url"]
    response = api.client.post("/api/v1/tasks/async", json=api.body(images=[url]))
    assert response.status_code == 400
    message = response.json()["error"]["message"]
    assert "expired" in message
    assert "Upload the file again" in message
    assert emulator.creates == 0


def test_create_with_live_upload_is_accepted(api: Api, emulator: Emulator) -> None:
    """A create referencing a fresh upload of this emulator is accepted."""
    api.create(images=[api.upload()["url"]])
    assert emulator.creates == 1


def test_upload_over_20_mb_is_413(api: Api, emulator: Emulator) -> None:
    """A file over 20 MB is refused as too large."""
    response = api.client.post("/api/v1/files", files={"file": ("big.png", b"\0" * (MAX_UPLOAD_BYTES + 1))})
    assert response.status_code == 413
    assert emulator.uploads == 0


def test_upload_without_file_field_is_400(api: Api) -> None:
    """A multipart upload without a 'file' field is a validation error."""
    response = api.client.post("/api/v1/files", files={"image": ("cat.png", b"x")})
    assert response.status_code == 400
    assert "'file'" in response.json()["error"]["message"]


# --- byte ranges ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["output", "upload"])
def test_range_resume_gives_identical_bytes(api: Api, kind: str) -> None:
    """Two ranged requests, with the same ETag, put together the bytes of the whole file."""
    url = api.output_url() if kind == "output" else api.upload(bytes(range(256)) * 4)["url"]
    client = api.client
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


@pytest.mark.parametrize(
    ("header", "status", "content"),
    [
        ("bytes=-3", 206, b"789"),
        ("bytes=2-4", 206, b"234"),
        ("bytes=8-99", 206, b"89"),
        ("bytes=5-2", 200, b"0123456789"),
        ("bytes=0-1,4-5", 200, b"0123456789"),
    ],
)
def test_range_forms(api: Api, header: str, status: int, content: bytes) -> None:
    """Suffix and clamped ranges are served; backwards or multiple ranges send the whole file."""
    response = api.client.get(api.upload(b"0123456789")["url"], headers={"Range": header})
    assert (response.status_code, response.content) == (status, content)


def test_range_past_the_end_is_416(api: Api) -> None:
    """A range starting at or after the end is 416 with Content-Range naming the size."""
    url = api.upload(b"0123456789")["url"]
    response = api.client.get(url, headers={"Range": "bytes=10-"})
    assert response.status_code == 416
    assert (response.headers["Content-Range"], response.headers["Accept-Ranges"]) == ("bytes */10", "bytes")


def test_range_with_stale_if_range_sends_the_whole_file(api: Api) -> None:
    """An If-Range naming another version turns a ranged request into a full 200."""
    url = api.upload(b"0123456789")["url"]
    response = api.client.get(url, headers={"Range": "bytes=4-", "If-Range": '"another-version"'})
    assert (response.status_code, response.content) == (200, b"0123456789")


# --- bookkeeping -----------------------------------------------------------------------------------------


def test_requests_are_recorded(api: Api, emulator: Emulator) -> None:
    """Every request is recorded with its method, path and status."""
    api.client.get("/api/v1/tasks/task_000000000000")
    assert [(r.method, r.path, r.status) for r in emulator.requests] == [
        ("GET", "/api/v1/tasks/task_000000000000", 404)
    ]


def test_task_inputs_lists_every_task_oldest_first(api: Api, emulator: Emulator) -> None:
    """task_inputs() gives the input of each task created, in order, replays not repeated."""
    api.create("k", prompt="first")
    api.create("k", prompt="first")
    api.create(prompt="second", aspect_ratio="1:1")
    assert emulator.task_inputs() == [{"prompt": "first"}, {"prompt": "second", "aspect_ratio": "1:1"}]


def test_reset_forgets_tasks_and_restores_settings(api: Api, emulator: Emulator) -> None:
    """reset() forgets tasks and counters and restores the constructor's timings and faults."""
    constructed = emulator.task_seconds  # the session's emulator was just reset
    emulator.task_seconds = constructed + 5
    api.create()
    emulator.faults.server_errors = 3
    emulator.reset()
    assert (emulator.creates, emulator.task_seconds, emulator.faults.server_errors) == (0, constructed, 0)
    assert api.client.get("/api/v1/tasks/list").json()["total"] == 0
