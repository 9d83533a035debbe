"""Tenant labels stay bounded; API endpoints are labelled without ids."""

from __future__ import annotations

import httpx

from nano_banana_mcp.observability.metrics import TenantLabels, endpoint_of


def test_tenant_labels_stay_bounded() -> None:
    """The tokens file's tenants always keep their name; any other tenant (an identity provider's subjects) only the
    first few seen, then all are `other`: a scrape never grows with the number of people."""
    labels = TenantLabels(["alice", "bob"], cap=2)
    assert [labels(t) for t in ("alice", "default", "sub-1", "sub-2", "sub-3", "sub-1", "bob")] == [
        "alice",
        "default",
        "sub-1",
        "sub-2",
        "other",
        "sub-1",
        "bob",
    ]
    assert {labels(f"subject-{n}") for n in range(1000)} == {"other"}


def test_endpoints_are_labelled_without_ids() -> None:
    base = "https://monet.vision/api/v1"
    urls = [
        f"{base}/tasks/async",
        f"{base}/tasks/sync",
        f"{base}/tasks/list?page=2",
        f"{base}/tasks/task_abc123",
        f"{base}/files",
        "https://files.monet.vision/out/x.png?sig=s3cret",
    ]
    assert [endpoint_of(httpx.URL(u)) for u in urls] == [
        "create_async",
        "create_stream",
        "list_tasks",
        "get_task",
        "upload",
        "download",
    ]
