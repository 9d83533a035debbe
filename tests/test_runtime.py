"""Which ledger the settings name: SQLite in the data dir by default, PostgreSQL when a database URL is set (from the
environment or a file, never argv), and a clear error when the URL or the driver is wrong or missing."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from nano_banana_mcp.catalog import GenerateRequest
from nano_banana_mcp.config import OFFLINE_API_KEY, Settings
from nano_banana_mcp.errors import ConfigError
from nano_banana_mcp.runtime import ledger_for, open_service
from nano_banana_mcp.tasks import LEDGER_FILE, Ledger

PASSWORD = "pw-never-shown"


def ledger_of(settings: Settings) -> object:
    return ledger_for(settings, api_scope="https://monet.example", upload_scope="https://monet.example")


def test_sqlite_in_the_data_dir_by_default(tmp_path: Path) -> None:
    """No database URL: the ledger is the SQLite file in the data dir."""
    ledger = ledger_of(Settings(data_dir=tmp_path))
    assert isinstance(ledger, Ledger)
    assert ledger.path == tmp_path / LEDGER_FILE


@pytest.mark.parametrize("url", ["", "  "])
def test_a_blank_url_is_no_url(tmp_path: Path, url: str) -> None:
    """An empty variable (a template left unfilled) keeps SQLite."""
    raw: dict[str, Any] = {"database_url": url}  # as the environment gives it: text
    assert isinstance(ledger_of(Settings(data_dir=tmp_path, **raw)), Ledger)


def test_a_database_url_chooses_postgresql(tmp_path: Path) -> None:
    """A postgresql:// URL chooses the PostgreSQL ledger, which names the database without its password."""
    from nano_banana_mcp.tasks.ledger_pg import PostgresLedger  # noqa: PLC0415 - the team extra

    raw: dict[str, Any] = {"database_url": f"postgresql://nb:{PASSWORD}@db.example:5433/ledger"}
    ledger = ledger_of(Settings(data_dir=tmp_path, **raw))
    assert isinstance(ledger, PostgresLedger)
    assert ledger.where == "nb@db.example:5433/ledger"


def test_the_url_may_come_from_a_file(tmp_path: Path) -> None:
    """NANO_BANANA_DATABASE_URL_FILE (--database-url-file) holds the URL, e.g. a mounted secret; a final newline is
    fine."""
    file = tmp_path / "database-url"
    file.write_text(f"postgresql://nb:{PASSWORD}@db.example/ledger\n")
    url = Settings(database_url_file=file).database()
    assert url is not None
    assert url.get_secret_value() == f"postgresql://nb:{PASSWORD}@db.example/ledger"


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({"database_url": f"mysql://nb:{PASSWORD}@db/ledger"}, "must start with postgresql://"),
        ({"database_url": "postgresql://db/a", "database_url_file": "f"}, "set only one of them"),
        ({"database_url_file": "no/such/file"}, "cannot be read"),
    ],
)
def test_a_wrong_database_setting_is_a_clear_error(tmp_path: Path, settings: dict[str, Any], expected: str) -> None:
    """A URL of another database, both settings at once, or a file that cannot be read: said, without the URL."""
    if "database_url_file" in settings:
        settings = {**settings, "database_url_file": str(tmp_path / settings["database_url_file"])}
    with pytest.raises(ConfigError, match=expected) as info:
        ledger_of(Settings(data_dir=tmp_path, **settings))
    assert PASSWORD not in str(info.value)


def test_without_the_driver_the_error_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without psycopg (the team extra not installed) a database URL is refused at start, saying what to install."""
    raw: dict[str, Any] = {"database_url": "postgresql://db.example/ledger"}
    monkeypatch.setitem(sys.modules, "psycopg", None)  # import psycopg now raises ImportError
    monkeypatch.delitem(sys.modules, "nano_banana_mcp.tasks.ledger_pg", raising=False)
    with pytest.raises(ConfigError, match=r"nano-banana-mcp\[team\]"):
        ledger_of(Settings(data_dir=tmp_path, **raw))


@pytest.mark.anyio
async def test_a_service_on_postgresql_keeps_nothing_in_the_data_dir(settings: Settings, database_url: str) -> None:
    """The whole service on the PostgreSQL ledger: no SQLite file appears in the data dir."""
    from nano_banana_mcp.tasks.ledger_pg import PostgresLedger  # noqa: PLC0415

    async with open_service(settings.model_copy(update={"database_url": SecretStr(database_url)})) as service:
        assert isinstance(service.ledger, PostgresLedger)
        assert (await service.list_tasks()).total_local == 0
    assert not (settings.data_dir / LEDGER_FILE).exists()


@pytest.mark.anyio
async def test_the_offline_emulator_is_closed_to_other_local_users(settings: Settings) -> None:
    """Offline mode's emulator listens on loopback, where any user of the machine can connect (its port is in
    /proc/net/tcp). Without this process's own key and secret path, nobody lists its tasks (the public key
    monet_offline is not it) or downloads its images, even knowing a task's id; the process itself works as before."""
    offline = settings.model_copy(update={"offline": True, "emulator_task_seconds": 0.2})
    async with open_service(offline) as service:
        result = await service.generate(GenerateRequest(prompt="a private prompt"), wait_seconds=10)
        assert result.status == "success"
        assert service.clients.base_url is not None
        port = httpx.URL(service.clients.base_url).port
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as other:
            listed = await other.get("/api/v1/tasks/list", headers={"Authorization": f"Bearer {OFFLINE_API_KEY}"})
            image = await other.get(f"/files/outputs/{result.task_id}/0.png")
    assert listed.status_code == 404, listed.text
    assert image.status_code == 404
    assert result.images[0].path is not None
    assert Path(result.images[0].path).is_file()
