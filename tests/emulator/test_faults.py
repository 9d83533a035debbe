"""The emulator's switchable faults over real HTTP: counting faults, chaos, hostile answers, control endpoints."""

from __future__ import annotations

import http.client
import io
import json
import time
from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from httpx_sse import ServerSentEvent, connect_sse
from PIL import Image
from tests.loopback import TLS

from nano_banana_mcp.emulator import CHAOS_KINDS, CONTROL_PREFIX, HOSTILE_KINDS, Emulator, Faults, serve_in_thread

if TYPE_CHECKING:
    from tests.emulator.conftest import Api


def test_an_emulator_without_faults_has_every_fault_off() -> None:
    """The offline mode's Emulator(...) carries a Faults object with everything off, and fires nothing."""
    emulator = Emulator(api_key="monet_offline", task_seconds=1)
    assert emulator.faults == Faults()
    assert (emulator.chaos_fired, emulator.hostile_fired, emulator.hostile_streams) == (Counter(), Counter(), 0)
    assert set(CHAOS_KINDS) == {"rate_limit", "server_error", "lost_create", "dropped_stream", "cut_download"}
    assert Faults().hostile_kind in HOSTILE_KINDS


def test_faults_given_to_the_constructor_apply(api_key: str) -> None:
    """Emulator(faults=...) starts with those faults, and reset() switches them off in place."""
    faults = Faults(server_errors=1)
    emulator = Emulator(api_key=api_key, faults=faults)
    with serve_in_thread(emulator) as base_url:
        headers = {"Authorization": f"Bearer {api_key}"}
        assert httpx.get(f"{base_url}/api/v1/tasks/list", headers=headers).status_code == 503
        assert httpx.get(f"{base_url}/api/v1/tasks/list", headers=headers).status_code == 200
    emulator.faults.rate_limit = 2
    emulator.reset()
    assert emulator.faults is faults
    assert faults == Faults()


# --- counting faults ------------------------------------------------------------------------------------


def test_failed_task_carries_an_error(api: Api, client: httpx.Client, emulator: Emulator) -> None:
    """The fail_tasks fault ends the next task failed, with an error object and no output URL."""
    emulator.task_seconds = 0
    emulator.faults.fail_tasks = 1
    failed = client.get(f"/api/v1/tasks/{api.create()['id']}").json()
    assert failed["status"] == "failed"
    assert failed["error"]["code"] == "generation_failed"
    assert "url" not in failed["outputs"][0]
    assert client.get(f"/api/v1/tasks/{api.create()['id']}").json()["status"] == "success"


def test_rate_limit_is_429_with_retry_after(api: Api, client: httpx.Client, emulator: Emulator) -> None:
    """The rate_limit fault answers 429 with a fractional Retry-After, once per count."""
    emulator.faults.rate_limit = 1
    emulator.faults.retry_after = 0.25
    response = client.get("/api/v1/tasks/list")
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "0.25"
    assert client.get("/api/v1/tasks/list").status_code == 200


def test_server_error_is_503(api: Api, client: httpx.Client, emulator: Emulator) -> None:
    """The server_errors fault answers 503 unavailable, once per count."""
    emulator.faults.server_errors = 1
    response = client.get("/api/v1/tasks/list")
    assert response.status_code == 503
    assert api.error_code(response) == "unavailable"
    assert client.get("/api/v1/tasks/list").status_code == 200


def test_latency_delays_api_responses(api: Api, client: httpx.Client, emulator: Emulator) -> None:
    """The latency fault delays every API response by at least its value."""
    emulator.faults.latency = 0.1
    start = time.monotonic()
    client.get("/api/v1/tasks/list")
    assert time.monotonic() - start >= 0.1


def test_refused_create_is_400_although_valid(api: Api, client: httpx.Client, emulator: Emulator) -> None:
    """The refuse_creates fault answers a valid create with an emulated VALIDATION_ERROR."""
    emulator.faults.refuse_creates = 1
    response = client.post("/api/v1/tasks/async", json=api.body())
    assert response.status_code == 400
    assert response.json()["error"]["message"].endswith("(emulated refusal).")
    assert emulator.creates == 0


def test_lost_create_response_makes_one_task(api: Api, client: httpx.Client, emulator: Emulator) -> None:
    """A lost create response breaks the connection, yet the task exists and a replay returns it."""
    emulator.faults.lose_create_responses = 1
    with pytest.raises(httpx.RemoteProtocolError):
        client.post("/api/v1/tasks/async", json=api.body("key-1"))
    assert emulator.creates == 1
    replay = api.create("key-1")
    assert client.get("/api/v1/tasks/list").json()["tasks"][0]["id"] == replay["id"]
    assert emulator.creates == 1
    assert emulator.requests[0].aborted


def test_lost_sync_create_then_resend_streams_the_same_task(api: Api, emulator: Emulator) -> None:
    """A lost sync create breaks the stream before any event, yet the task exists; the same request streams it."""
    emulator.faults.lose_create_responses = 1
    payload = api.body("key-lost")
    with pytest.raises(httpx.RemoteProtocolError):
        api.stream(payload)
    assert emulator.creates == 1
    events = api.stream(payload)
    assert events[-1][0].json()["status"] == "success"
    assert (emulator.creates, emulator.creates_by_endpoint) == (1, {"sync": 1})


def test_dropped_stream_sends_one_event_then_breaks(api: Api, client: httpx.Client, emulator: Emulator) -> None:
    """The drop_streams fault sends the first event, then breaks; the task still finishes."""
    emulator.faults.drop_streams = 1
    received: list[ServerSentEvent] = []
    with (
        pytest.raises(httpx.RemoteProtocolError),
        connect_sse(client, "POST", "/api/v1/tasks/sync", json=api.body()) as source,
    ):
        received.extend(source.iter_sse())
    assert len(received) == 1
    assert api.wait_done(received[0].json()["id"])[-1]["status"] == "success"


def test_cut_download_breaks_mid_body(api: Api, client: httpx.Client, emulator: Emulator) -> None:
    """The cut_downloads fault sends half the file and breaks; the next download is whole."""
    emulator.task_seconds = 0
    emulator.faults.cut_downloads = 1
    url = client.get(f"/api/v1/tasks/{api.create()['id']}").json()["outputs"][0]["url"]
    with pytest.raises(httpx.RemoteProtocolError):
        client.get(url)
    assert Image.open(io.BytesIO(client.get(url).content)).format == "PNG"


def read_until_cut(client: httpx.Client, url: str, headers: dict[str, str]) -> bytes:
    """The bytes received before the emulator breaks the connection."""
    received = bytearray()
    with pytest.raises(httpx.RemoteProtocolError), client.stream("GET", url, headers=headers) as response:
        for chunk in response.iter_raw():
            received += chunk
    return bytes(received)


def test_cut_ranged_download_sends_half_the_part_and_resumes(
    api: Api, client: httpx.Client, emulator: Emulator
) -> None:
    """cut_downloads on a ranged request sends half the part, and a second Range completes the file."""
    url = api.output_url()
    whole = client.get(url).content
    emulator.faults.cut_downloads = 1
    start = 1000
    part = read_until_cut(client, url, {"Range": f"bytes={start}-"})
    assert part == whole[start : start + (len(whole) - start) // 2]
    rest = client.get(url, headers={"Range": f"bytes={start + len(part)}-"})
    assert rest.status_code == 206
    assert whole[:start] + part + rest.content == whole


def test_downloads_counts_whole_uncut_output_downloads(api: Api, client: httpx.Client, emulator: Emulator) -> None:
    """downloads counts outputs delivered to their last byte, not cut ones, heads or uploads."""
    url = api.output_url()
    client.get(url)
    client.get(url, headers={"Range": "bytes=0-9"})
    client.head(url)
    httpx.get(api.upload()["url"])
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


def test_full_chaos_fires_only_the_kinds_that_apply(api: Api, client: httpx.Client, emulator: Emulator) -> None:
    """At rate 1.0 every request gets a fault, always one that applies to that kind of request."""
    url = api.output_url()
    emulator.set_chaos(1.0, seed=11)

    def sync_create() -> int:
        with client.stream("POST", "/api/v1/tasks/sync", json=api.body()) as response:
            response.read()
            return response.status_code

    requests = {
        "list": (lambda: client.get("/api/v1/tasks/list").status_code, {"rate_limit", "server_error"}),
        "create": (
            lambda: client.post("/api/v1/tasks/async", json=api.body()).status_code,
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


def test_chaos_retries_with_one_key_make_one_task(api: Api, client: httpx.Client, emulator: Emulator) -> None:
    """Retrying one create through heavy chaos with the same key creates exactly one task."""
    emulator.set_chaos(1.0, seed=5)
    payload = api.body("soak-key")
    for _ in range(20):
        try:
            response = client.post("/api/v1/tasks/async", json=payload)
        except httpx.RemoteProtocolError:
            continue
        assert response.status_code in (429, 503)
    assert emulator.chaos_fired["lost_create"] >= 2
    emulator.set_chaos(0.0)
    assert api.create("soak-key")["id"] == client.get("/api/v1/tasks/list").json()["tasks"][0]["id"]
    assert emulator.creates == 1


def test_chaos_never_fails_a_task(api: Api, client: httpx.Client, emulator: Emulator) -> None:
    """Tasks created while chaos is on all end in success."""
    emulator.task_seconds = 0
    emulator.set_chaos(0.5, seed=2)
    ids = set()
    for _ in range(30):
        try:
            response = client.post("/api/v1/tasks/async", json=api.body())
        except httpx.RemoteProtocolError:
            continue
        if response.status_code == 200:
            ids.add(response.json()["id"])
    emulator.set_chaos(0.0)
    tasks = client.get("/api/v1/tasks/list", params={"pageSize": 100}).json()["tasks"]
    assert ids
    assert {t["status"] for t in tasks} == {"success"}


def test_chaos_with_a_seed_is_reproducible(api: Api, client: httpx.Client, emulator: Emulator) -> None:
    """The same seed gives the same sequence of faults."""

    def run() -> list[int]:
        emulator.set_chaos(0.5, seed=42)
        return [client.get("/api/v1/tasks/list").status_code for _ in range(24)]

    first = run()
    assert set(first) == {200, 429, 503}
    assert run() == first


def test_chaos_at_zero_fires_nothing(api: Api, client: httpx.Client, emulator: Emulator) -> None:
    """With chaos 0 every request is answered normally and nothing is counted."""
    url = api.output_url()
    emulator.set_chaos(0.0, seed=1)
    for _ in range(10):
        assert client.get("/api/v1/tasks/list").status_code == 200
        assert client.get(url).status_code == 200
        assert client.post("/api/v1/tasks/async", json=api.body()).status_code == 200
    assert emulator.chaos_fired == Counter()


def test_auth_failures_do_not_consume_chaos(emulator: Emulator) -> None:
    """A request refused as unauthorized is a 401 however high the chaos rate."""
    emulator.set_chaos(1.0, seed=3)
    for _ in range(5):
        assert httpx.get(f"{emulator.base_url}/api/v1/tasks/list", verify=TLS).status_code == 401
    assert emulator.chaos_fired == Counter()


def test_counting_faults_fire_before_chaos(api: Api, client: httpx.Client, emulator: Emulator) -> None:
    """A pending counting fault answers first; chaos is not counted for that request."""
    emulator.set_chaos(1.0, seed=3)
    emulator.faults.server_errors = 1
    assert client.get("/api/v1/tasks/list").status_code == 503
    assert (emulator.faults.server_errors, emulator.chaos_fired) == (0, Counter())


def test_reset_clears_chaos(api: Api, client: httpx.Client, emulator: Emulator) -> None:
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


def wait_streams_closed(emulator: Emulator, timeout: float = 60.0) -> None:
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


def test_hostile_malformed_json_still_creates_the_task(api: Api, client: httpx.Client, emulator: Emulator) -> None:
    """malformed_json answers a truncated JSON body after really creating the task, so a retry finds it."""
    hostile(emulator, "malformed_json")
    response = client.post("/api/v1/tasks/async", json=api.body("key-h"))
    assert (response.status_code, response.headers["content-type"]) == (200, "application/json")
    assert response.content == b'{"id": "task_'
    assert (emulator.creates, emulator.faults.hostile, emulator.hostile_fired) == (1, 0, Counter(malformed_json=1))
    assert api.create("key-h")["id"] == client.get("/api/v1/tasks/list").json()["tasks"][0]["id"]
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
    api: Api, client: httpx.Client, emulator: Emulator, kind: str, shape: str, expected: dict[str, Any]
) -> None:
    """missing_fields and wrong_types answer 200 with the body of that kind for each endpoint."""
    task_id = api.create()["id"]
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


def test_hostile_huge_body_is_64_mib_of_valid_json_without_length(
    api: Api, client: httpx.Client, emulator: Emulator
) -> None:
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


def test_hostile_html_error_is_a_502_proxy_page(api: Api, client: httpx.Client, emulator: Emulator) -> None:
    """html_error answers 502 with an HTML page, and the request is recorded as a 502."""
    task_id = api.create()["id"]
    hostile(emulator, "html_error")
    response = client.get(f"/api/v1/tasks/{task_id}")
    assert response.status_code == 502
    assert response.headers["content-type"].startswith("text/html")
    assert response.text.startswith("<html>") and "<h1>502 Bad Gateway</h1>" in response.text
    assert [(r.path, r.status) for r in emulator.requests[-1:]] == [(f"/api/v1/tasks/{task_id}", 502)]


def test_hostile_skips_error_answers(api: Api, client: httpx.Client, emulator: Emulator) -> None:
    """An answer that is an error anyway (here a 404) is not replaced and consumes nothing."""
    hostile(emulator, "html_error")
    response = client.get("/api/v1/tasks/task_000000000000")
    assert (response.status_code, api.error_code(response)) == (404, "not_found")
    assert (emulator.faults.hostile, emulator.hostile_fired) == (1, Counter())


@pytest.mark.parametrize(
    ("kind", "request_kind"),
    [("endless_download", "list"), ("not_image", "sync"), ("malformed_json", "download"), ("endless_stream", "create")],
)
def test_hostile_kind_that_does_not_apply_leaves_requests_alone(
    api: Api, client: httpx.Client, emulator: Emulator, kind: str, request_kind: str
) -> None:
    """A hostile kind meant for other requests answers this one normally and is not consumed."""
    url = api.output_url()
    hostile(emulator, kind)
    if request_kind == "list":
        assert client.get("/api/v1/tasks/list").json()["total"] == 1
    elif request_kind == "sync":
        assert api.stream(api.body())[-1][0].json()["status"] == "success"
    elif request_kind == "download":
        assert Image.open(io.BytesIO(client.get(url).content)).format == "PNG"
    else:
        assert api.create()["id"].startswith("task_")
    assert (emulator.faults.hostile, emulator.hostile_fired) == (1, Counter())


def test_hostile_endless_stream_repeats_progress_until_the_client_leaves(
    api: Api, client: httpx.Client, emulator: Emulator
) -> None:
    """endless_stream sends progress stuck at 50 past the task's end; it stops when the client closes."""
    hostile(emulator, "endless_stream")
    events = []
    with connect_sse(client, "POST", "/api/v1/tasks/sync", json=api.body()) as source:
        for event in source.iter_sse():
            events.append(event.json())
            if len(events) == 8:  # 8 x 0.05 s: beyond the task's 0.3 s
                break
    assert {(e["status"], e["outputs"][0]["progress"]) for e in events} == {("processing", 50)}
    wait_streams_closed(emulator)
    assert client.get(f"/api/v1/tasks/{events[0]['id']}").json()["status"] == "success"


def test_hostile_garbage_stream_has_no_usable_event(api: Api, client: httpx.Client, emulator: Emulator) -> None:
    """garbage_stream's data lines are not JSON, JSON arrays or objects without id; it ends with no terminal event."""
    hostile(emulator, "garbage_stream")
    datas = [event.data for event, _ in api.stream(api.body())]
    assert len(datas) >= 3
    for data in datas:
        try:
            parsed = json.loads(data)
        except ValueError:
            continue
        assert not isinstance(parsed, dict) or ("id" not in parsed and parsed.get("status") != "success")
    assert emulator.creates == 1


def test_hostile_huge_event_is_one_16_mib_line(api: Api, client: httpx.Client, emulator: Emulator) -> None:
    """huge_event sends a single data: line of 16 MiB that never ends in a newline."""
    hostile(emulator, "huge_event")
    with client.stream("POST", "/api/v1/tasks/sync", json=api.body()) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        size, head, tail, newlines = read_raw(response)
    assert head.startswith(b'event: progress\ndata: {"id":"task_')
    assert (newlines, tail[-1:]) == (1, b"}")
    assert size - len(b"event: progress\n") == 16 * 1024 * 1024


def test_hostile_not_image_is_html_labelled_png(api: Api, client: httpx.Client, emulator: Emulator) -> None:
    """not_image answers 200 image/png whose body is an HTML page."""
    url = api.output_url()
    hostile(emulator, "not_image")
    response = client.get(url)
    assert (response.status_code, response.headers["content-type"]) == (200, "image/png")
    assert response.content.startswith(b"<!DOCTYPE html>")
    assert emulator.downloads == 0


def test_hostile_endless_download_stops_when_the_client_leaves(
    api: Api, client: httpx.Client, emulator: Emulator
) -> None:
    """endless_download streams PNG-looking bytes without length; closing stops it with no CPU left burning."""
    url = api.output_url()
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
    assert time.process_time() - cpu < 0.05  # CPU time, not wall-clock: a loaded machine does not inflate it
    assert client.get("/api/v1/tasks/list").status_code == 200


def test_hostile_endless_download_leaves_the_emulator_responsive(
    api: Api, client: httpx.Client, emulator: Emulator, api_key: str
) -> None:
    """While an endless download flows, other requests are answered at once."""
    url = api.output_url()
    hostile(emulator, "endless_download")
    # A blocked emulator would never answer while the download flows: the timeout only guards against that hang.
    other = httpx.Client(base_url=str(emulator.base_url), headers={"Authorization": f"Bearer {api_key}"}, timeout=60)
    with other, client.stream("GET", url) as response:
        chunks = response.iter_raw()
        next(chunks)
        assert other.get("/api/v1/tasks/list").status_code == 200
        next(chunks)
    wait_streams_closed(emulator)


def test_hostile_redirect_offsite(api: Api, client: httpx.Client, emulator: Emulator) -> None:
    """redirect_offsite answers 302 to a host that is not the API's."""
    url = api.output_url()
    hostile(emulator, "redirect_offsite")
    response = client.get(url)
    assert (response.status_code, response.headers["location"]) == (302, "https://evil.example.invalid/steal.png")
    assert emulator.requests[-1].status == 302


def test_hostile_redirect_data_points_at_a_data_url(api: Api, client: httpx.Client, emulator: Emulator) -> None:
    """redirect_data answers 302 to a data: URL (read with http.client: httpx cannot even hold such an answer)."""
    url = httpx.URL(api.output_url())
    hostile(emulator, "redirect_data")
    connection = http.client.HTTPConnection(url.host, url.port, timeout=10)
    try:
        connection.request("GET", url.raw_path.decode())
        response = connection.getresponse()
        assert response.status == 302
        assert (response.getheader("location") or "").startswith("data:image/png;base64,")
    finally:
        connection.close()


def test_hostile_redirect_loopback_serves_the_same_file(api: Api, client: httpx.Client, emulator: Emulator) -> None:
    """redirect_loopback answers 302 to a mirror path on this emulator that serves the same bytes."""
    url = api.output_url()
    whole = client.get(url).content
    hostile(emulator, "redirect_loopback")
    response = client.get(url, follow_redirects=True)
    assert [r.status_code for r in response.history] == [302]
    assert str(response.url) == url.replace("/files/outputs/", "/files/mirror/outputs/")
    assert (response.status_code, response.content) == (200, whole)


def test_hostile_redirect_loop_points_at_itself_once_per_count(
    api: Api, client: httpx.Client, emulator: Emulator
) -> None:
    """redirect_loop answers 302 to the same URL, one count per answer, then the file."""
    url = api.output_url()
    hostile(emulator, "redirect_loop", count=3)
    response = client.get(url, follow_redirects=True)
    assert [(r.status_code, r.headers["location"]) for r in response.history] == [(302, url)] * 3
    assert Image.open(io.BytesIO(response.content)).format == "PNG"
    assert (emulator.faults.hostile, emulator.hostile_fired) == (0, Counter(redirect_loop=3))


def test_reset_clears_hostile(api: Api, client: httpx.Client, emulator: Emulator) -> None:
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
    with httpx.Client(base_url=str(control_server.base_url), timeout=5, verify=TLS) as client:
        yield client


@pytest.fixture
def control_api(control_server: Emulator) -> Iterator[httpx.Client]:
    """An authorised API client for the control=True emulator."""
    headers = {"Authorization": f"Bearer {CONTROL_KEY}"}
    with httpx.Client(base_url=str(control_server.base_url), headers=headers, timeout=5, verify=TLS) as client:
        yield client


def test_control_endpoints_are_404_without_control(emulator: Emulator) -> None:
    """An emulator built without control=True does not serve /_emulator."""
    assert httpx.get(f"{emulator.base_url}/_emulator/state").status_code == 404
    assert httpx.post(f"{emulator.base_url}/_emulator/faults", json={"rate_limit": 1}).status_code == 404
    assert emulator.faults.rate_limit == 0


def test_control_state_reports_counters(
    control: httpx.Client, control_api: httpx.Client, control_server: Emulator, make_api: type[Api]
) -> None:
    """GET /_emulator/state reports counters, idempotency, chaos and faults, without auth."""
    capi = make_api(control_api, control_server)
    task = capi.create("key-c")
    control_api.get(capi.get(task["id"])["outputs"][0]["url"])
    capi.upload()
    capi.stream(capi.body("key-c"))
    state = control.get(f"{CONTROL_PREFIX}/state").json()
    assert {k: state[k] for k in ("creates", "uploads", "tasks", "downloads", "chaos_fired")} == {
        "creates": 2,
        "uploads": 1,
        "tasks": 2,
        "downloads": 1,
        "chaos_fired": {},
    }
    assert (state["creates_by_endpoint"], state["keys_on_two_endpoints"]) == ({"async": 1, "sync": 1}, ["key-c"])
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
    assert response.json()["error"]["code"] == "VALIDATION_ERROR"
    assert control_server.faults == Faults()
