"""docs/deploy.md: its Grafana dashboard is JSON Grafana can import, and every metric its dashboard, alerts and
table name is one the server exposes."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from nano_banana_mcp.observability.metrics import exposition

DEPLOY = Path(__file__).parent.parent / "docs" / "deploy.md"


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", DEPLOY.read_text(), re.S)


def exposed() -> set[str]:
    """The sample names the server's /metrics can hold (every family, with its _total/_bucket/_count/_sum)."""
    names = set()
    for family in text_string_to_metric_families(exposition(None).decode()):
        names.add(family.name)
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_count", "_sum"]}.get(family.type, [""])
        names.update(family.name + suffix for suffix in suffixes)
    return names


def test_the_dashboard_is_json_with_queries_of_exposed_metrics() -> None:
    [dashboard] = [json.loads(block) for block in blocks("json") if '"panels"' in block]
    assert dashboard["title"] == "nano-banana-mcp"
    expressions = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    assert len(expressions) >= 9
    used = {name for expr in expressions for name in re.findall(r"nano_banana_[a-z_]+", expr)}
    assert used <= exposed(), used - exposed()
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))


def test_the_alerts_and_the_table_name_exposed_metrics() -> None:
    [alerts] = [block for block in blocks("yaml") if "alert:" in block]
    assert {"NanoBananaApiErrors", "NanoBananaTasksStuck", "NanoBananaLimitHits"} <= set(
        re.findall(r"alert: (\w+)", alerts)
    )
    used = set(re.findall(r"nano_banana_[a-z_]+", alerts + DEPLOY.read_text().split("### Metrics")[1].split("```")[0]))
    assert used <= exposed(), used - exposed()
