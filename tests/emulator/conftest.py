"""Fixtures for the emulator's own tests: an authorised HTTP client and a small helper around it."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from httpx_sse import ServerSentEvent, connect_sse
from tests.loopback import TLS

from nano_banana_mcp.emulator import Emulator


class Api:
    """Requests to the emulator in the API's own terms, asserting only that they succeeded."""

    def __init__(self, client: httpx.Client, emulator: Emulator) -> None:
        self.client = client
        self.emulator = emulator

    @staticmethod
    def body(key: str | None = None, **task_input: Any) -> dict[str, Any]:
        """A create body (prompt "A cute cat" unless given; a fresh key unless given)."""
        task_input.setdefault("prompt", "A cute cat")
        return {"type": "image", "input": task_input, "idempotency_key": key or str(uuid.uuid4())}

    @staticmethod
    def error_code(response: httpx.Response) -> str:
        return str(response.json()["error"]["code"])

    def create(self, key: str | None = None, **task_input: Any) -> dict[str, Any]:
        """``POST /tasks/async``; the created (or replayed) task."""
        response = self.client.post("/api/v1/tasks/async", json=self.body(key, **task_input))
        assert response.status_code == 200, response.text
        return dict(response.json())

    def stream(self, payload: dict[str, Any]) -> list[tuple[ServerSentEvent, float]]:
        """``POST /tasks/sync``; every event with the monotonic time it arrived."""
        with connect_sse(self.client, "POST", "/api/v1/tasks/sync", json=payload) as source:
            return [(event, time.monotonic()) for event in source.iter_sse()]

    def upload(self, data: bytes = b"\x89PNG fake", name: str = "cat.png") -> dict[str, Any]:
        response = self.client.post("/api/v1/files", files={"file": (name, data, "image/png")})
        assert response.status_code == 200, response.text
        return dict(response.json())

    def get(self, task_id: str) -> dict[str, Any]:
        return dict(self.client.get(f"/api/v1/tasks/{task_id}").json())

    def wait_done(self, task_id: str, timeout: float = 60.0) -> list[dict[str, Any]]:
        """Poll until the task is terminal; return every snapshot seen (``timeout`` only guards against a hang)."""
        seen = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            task = self.get(task_id)
            seen.append(task)
            if task["status"] in ("success", "failed"):
                return seen
            time.sleep(0.01)
        raise AssertionError(f"task {task_id} did not finish: {seen[-1]}")

    def output_url(self) -> str:
        """The output URL of a new task that is already finished (sets ``task_seconds`` to 0)."""
        self.emulator.task_seconds = 0
        return str(self.get(self.create()["id"])["outputs"][0]["url"])


@pytest.fixture
def client(emulator: Emulator, api_key: str) -> Iterator[httpx.Client]:
    assert emulator.base_url is not None
    headers = {"Authorization": f"Bearer {api_key}"}
    with httpx.Client(base_url=emulator.base_url, headers=headers, timeout=5, verify=TLS) as client:
        yield client


@pytest.fixture
def api(client: httpx.Client, emulator: Emulator) -> Api:
    return Api(client, emulator)


@pytest.fixture
def make_api() -> type[Api]:
    """The helper class, for a client of another emulator: ``make_api(client, emulator)``."""
    return Api
