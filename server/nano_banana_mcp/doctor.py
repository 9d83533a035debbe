"""``nano-banana-mcp doctor``: check a setup without paying for anything.

Each check gives one row: its name, ``ok``, ``warn`` or ``fail``, and one line saying what was found (and, when
something is wrong, what to do). The checks: the API key, with one documented read that creates nothing
(``GET /tasks/list?page=1&pageSize=1``, tried once, never retried); the API's reachability and the round-trip time
of that read; the data and output folders (made if missing, as the server makes them, then a probe file written and
deleted); the ledger (it opens, and how many unfinished tasks wait in it); the create path in use and why; the
entries ``install`` wrote in each MCP host's config; and, when they are set, the team settings: the image bucket and
the tokens file (a PostgreSQL ledger is the ledger's row: connected and pinged).

Nothing here creates a task, uploads a file, or resumes an unfinished task, and no row ever shows a key, a
password or a token.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal

import httpx
from pydantic import SecretStr

from nano_banana_mcp.config import OFFLINE_API_KEY, Settings
from nano_banana_mcp.errors import AuthError, MalformedResponse, MonetConnectionError, MonetError, NanoBananaError
from nano_banana_mcp.install import DEFAULT_NAME, HOSTS, Host, config_path, server_command, servers_in
from nano_banana_mcp.monet import MonetClient, RetryPolicy
from nano_banana_mcp.monet.models import API_PREFIX
from nano_banana_mcp.storage import image_store
from nano_banana_mcp.tasks import LEDGER_FILE
from nano_banana_mcp.tasks.create_path import CREATE_PATH_FILE, CreatePath
from nano_banana_mcp.terminal import printable

__all__ = ["Check", "Status", "as_json", "failed", "run_checks", "table"]

log = logging.getLogger(__name__)

Status = Literal["ok", "warn", "fail"]
_READ = f"GET {API_PREFIX}/tasks/list?page=1&pageSize=1"


@dataclass(frozen=True)
class Check:
    """One row of the report."""

    check: str
    status: Status
    detail: str


async def run_checks(
    settings: Settings,
    *,
    name: str = DEFAULT_NAME,
    home: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> list[Check]:
    """Every check, in the order they are shown. ``name`` is the server's name in the hosts' configs; ``home`` and
    ``environ`` locate those configs (default: this user's)."""
    rows: list[Check] = []
    rows += await _guarded("api", lambda: _api(settings))
    rows += await _guarded("data folder", lambda: _folder("data folder", settings.data_dir, "NANO_BANANA_DATA_DIR"))
    rows += await _guarded("output folder", lambda: _output(settings))
    rows += await _guarded("ledger", lambda: _ledger(settings))
    rows += await _guarded("create path", lambda: _create_path(settings))
    for host in HOSTS:
        rows += await _guarded(f"host {host}", partial(_host, host, name, home, environ))
    if settings.storage_url:
        rows += await _guarded("bucket", lambda: _bucket(settings))
    if settings.http_tokens_file is not None:
        rows += await _guarded("tokens file", lambda: _tokens(settings.http_tokens_file))
    return rows


def failed(checks: Sequence[Check]) -> bool:
    """Whether any check failed (warnings alone do not count)."""
    return any(c.status == "fail" for c in checks)


def as_json(checks: Sequence[Check]) -> str:
    """The report as a JSON list of ``{check, status, detail}``."""
    return json.dumps([asdict(c) for c in checks], indent=2, ensure_ascii=False)


def table(checks: Sequence[Check]) -> str:
    """The report as a table for a person, with a last line that sums it up."""
    width = max(len("CHECK"), *(len(c.check) for c in checks))
    lines = [f"{'CHECK':<{width}}  STATUS  DETAIL"]
    lines += [printable(f"{c.check:<{width}}  {c.status:<6}  {c.detail}") for c in checks]  # API and file text
    failures = sum(c.status == "fail" for c in checks)
    warnings = sum(c.status == "warn" for c in checks)
    if failures:
        warned = f", {_plural(warnings, 'warning')}" if warnings else ""
        lines.append(f"{_plural(failures, 'check')} failed{warned}: see the fail rows above.")
    elif warnings:
        lines.append(f"No check failed; {_plural(warnings, 'warning')}.")
    else:
        lines.append(f"All {len(checks)} checks passed.")
    return "\n".join(lines)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'s' * (n != 1)}"


async def _guarded(name: str, check: Callable[[], Awaitable[list[Check]]]) -> list[Check]:
    """A check's rows; a failure it did not foresee is a failed row, not a traceback."""
    try:
        return await check()
    except NanoBananaError as err:  # every message of the package's own errors is safe to show
        return [Check(name, "fail", str(err))]
    except Exception as err:  # a diagnosis reports whatever stops a check, and goes on
        log.debug("doctor: the %s check raised", name, exc_info=True)
        return [
            Check(
                name,
                "fail",
                f"the check stopped on an unexpected {type(err).__name__}; run with --log-level DEBUG to see where",
            )
        ]


# -- the key and the API --------------------------------------------------------------------------------------------


async def _api(settings: Settings) -> list[Check]:
    """One documented read that creates nothing, tried once: is the key accepted, and does the API answer, how fast."""
    async with AsyncExitStack() as stack:
        base_url, key, what = settings.base_url, settings.api_key, settings.base_url
        if settings.offline:
            from nano_banana_mcp.emulator import Emulator, serve_in_thread  # noqa: PLC0415

            emulator = Emulator(api_key=OFFLINE_API_KEY, task_seconds=settings.emulator_task_seconds)
            base_url = stack.enter_context(serve_in_thread(emulator))
            key, what = SecretStr(OFFLINE_API_KEY), f"the built-in emulator at {base_url}"
        if key is None or not key.get_secret_value().strip():
            return [
                Check("key", "fail", _no_key(settings)),
                Check("api", "warn", f"{base_url} not checked: without a key there is nothing to ask it"),
            ]
        http = await stack.enter_async_context(
            httpx.AsyncClient(timeout=settings.request_timeout, headers={"User-Agent": "nano-banana-mcp"})
        )
        client = MonetClient(
            http,
            base_url=base_url,
            api_key=key,
            retry=RetryPolicy(attempts=1),  # a diagnosis reports what it sees, at once
            timeout=settings.request_timeout,
            max_response_bytes=settings.max_response_bytes,
        )
        started = time.perf_counter()
        try:
            await client.list_tasks(page=1, page_size=1)
        except MonetError as err:
            return _api_problem(err, what, _ms(started), offline=settings.offline)
        answered = f"{what} answered {_READ} in {_ms(started)} ms"
        return [Check("key", "ok", _accepted(what, offline=settings.offline)), Check("api", "ok", answered)]


def _accepted(what: str, *, offline: bool) -> str:
    return "offline: the built-in emulator needs no key" if offline else f"MONET_API_KEY accepted by {what}"


def _no_key(settings: Settings) -> str:
    """What the server says when no key is set: how to get one, or to use --offline."""
    try:
        settings.require_key()
    except NanoBananaError as err:
        return str(err)
    return "No Monet API key is set."


def _api_problem(err: MonetError, what: str, ms: int, *, offline: bool) -> list[Check]:
    answered = f"{what} answered {_READ} in {ms} ms"
    unchecked = Check("key", "warn", "not checked: the API gave no answer about it (see the api row)")
    if isinstance(err, AuthError):
        return [Check("key", "fail", str(err)), Check("api", "ok", answered)]
    if isinstance(err, MonetConnectionError):
        return [unchecked, Check("api", "fail", str(err))]
    if isinstance(err, MalformedResponse) and err.status_code is not None and 200 <= err.status_code < 300:
        understood = f"{answered}, in a form not understood: {err}"
        return [Check("key", "ok", _accepted(what, offline=offline)), Check("api", "warn", understood)]
    if err.status_code == 429:
        return [unchecked, Check("api", "warn", f"{answered}: {err}")]
    return [unchecked, Check("api", "fail", f"{err} (answered in {ms} ms; check MONET_BASE_URL)")]


def _ms(started: float) -> int:
    return round((time.perf_counter() - started) * 1000)


# -- folders --------------------------------------------------------------------------------------------------------


async def _folder(name: str, folder: Path, setting: str) -> list[Check]:
    """The folder made if missing (as the server makes it), then a probe file written and deleted in it."""
    import anyio.to_thread  # noqa: PLC0415

    problem = await anyio.to_thread.run_sync(_unwritable, folder)
    if problem is not None:
        flag = setting.removeprefix("NANO_BANANA_").lower().replace("_", "-")
        return [
            Check(
                name,
                "fail",
                f"{folder} is not writable ({problem}): fix its permissions, or set {setting} (or --{flag}) to a "
                "folder you can write",
            )
        ]
    return [Check(name, "ok", f"{folder} is writable")]


def _unwritable(folder: Path) -> str | None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".doctor-") as probe:
            probe.write(b"nano-banana-mcp doctor\n")
            probe.flush()
    except OSError as err:
        return err.strerror or type(err).__name__
    return None


async def _output(settings: Settings) -> list[Check]:
    if settings.storage_url:
        return [Check("output folder", "ok", "not used: images are kept in the bucket (see the bucket row)")]
    return await _folder("output folder", settings.output_dir, "NANO_BANANA_OUTPUT_DIR")


# -- the ledger and the create path ---------------------------------------------------------------------------------


async def _ledger(settings: Settings) -> list[Check]:
    """The ledger opens (and, in PostgreSQL, answers a ping); how many unfinished tasks wait in it to be resumed."""
    from nano_banana_mcp.runtime import ledger_for  # noqa: PLC0415

    scope = "offline" if settings.offline else settings.base_url
    url = settings.database()  # a ConfigError naming the setting, never the password
    ledger = ledger_for(settings, api_scope=scope, upload_scope=scope)
    where = f"SQLite {settings.data_dir / LEDGER_FILE}"
    if url is not None:
        from nano_banana_mcp.tasks.ledger_pg import PostgresLedger  # noqa: PLC0415 - installed: ledger_for took it

        where = f"PostgreSQL {ledger.where if isinstance(ledger, PostgresLedger) else '(unknown)'}"
    started = time.perf_counter()
    await ledger.open()
    try:
        await ledger.ping()
        ms = _ms(started)
        waiting = len(await ledger.claimable())
    finally:
        await ledger.close()
    unfinished = (
        "no unfinished task waiting"
        if not waiting
        else f"{_plural(waiting, 'unfinished task')} waiting (the next server or command that starts here resumes "
        f"{'it' if waiting == 1 else 'them'})"
    )
    return [Check("ledger", "ok", f"{where} opens and answers in {ms} ms; {unfinished}")]


async def _create_path(settings: Settings) -> list[Check]:
    if settings.offline:
        path = CreatePath.load(None, settings.base_url)
        return [Check("create path", "ok", f"{path.endpoint}: {path.reason} (offline: nothing is remembered)")]
    path = CreatePath.load(settings.data_dir, settings.base_url)
    remembered = f" (remembered in {settings.data_dir / CREATE_PATH_FILE})" if path.endpoint == "async" else ""
    return [Check("create path", "ok", f"{path.endpoint}: {path.reason}{remembered}")]


# -- the hosts' configs ---------------------------------------------------------------------------------------------


async def _host(host: Host, name: str, home: Path | None, environ: Mapping[str, str] | None) -> list[Check]:
    """Whether ``host``'s config has the server's entry, and whether the command it names exists."""
    row = f"host {host}"
    path = config_path(
        host,
        home=Path.home() if home is None else home,
        platform=sys.platform,
        environ=os.environ if environ is None else environ,
    )
    not_there = f"`nano-banana-mcp install {host}` adds one"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return [Check(row, "ok", f"no entry ({path} does not exist); {not_there}")]
    except (OSError, UnicodeDecodeError) as err:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else type(err).__name__
        return [Check(row, "fail", f"{path} cannot be read ({reason}); the host cannot read it either")]
    try:
        document: Any = json.loads(text) if text.strip() else {}
    except json.JSONDecodeError as err:
        return [
            Check(
                row,
                "fail",
                f"{path} is not valid JSON ({err.msg} at line {err.lineno}, column {err.colno}): the host cannot load "
                "its servers; fix it by hand",
            )
        ]
    entry = servers_in(document, host).get(name) if isinstance(document, dict) else None
    if entry is None:
        return [Check(row, "ok", f"no `{name}` entry in {path}; {not_there}")]
    command = entry.get("command") if isinstance(entry, dict) else None
    if not isinstance(command, str) or not command.strip():
        kind = entry.get("type") or entry.get("transport") if isinstance(entry, dict) else None
        if isinstance(entry, dict) and ("url" in entry or kind in ("http", "sse", "streamable-http")):
            return [Check(row, "ok", f"`{name}` in {path} is a remote (HTTP) entry: no command to check")]
        return [Check(row, "fail", f"`{name}` in {path} names no command; run `nano-banana-mcp install {host}` again")]
    args = entry.get("args")
    offline = " --offline" if isinstance(args, list) and "--offline" in args else ""  # no other argument is shown
    found = _program(command)
    if found is None:
        return [
            Check(
                row,
                "fail",
                f"`{name}` in {path} runs {command}, which does not exist (a removed or moved installation); run "
                f"`nano-banana-mcp install {host}` again from this one",
            )
        ]
    mine = server_command()[0]
    which = "this installation" if Path(found) == Path(mine) else f"another installation; this one is {mine}"
    return [Check(row, "ok", f"`{name}` in {path} runs {command}{offline} ({which})")]


def _program(command: str) -> str | None:
    """The executable a host would start for ``command``: the file itself when it is a path, else from PATH."""
    if os.sep in command or (os.altsep and os.altsep in command):
        path = Path(command).expanduser()
        return str(path) if path.is_file() and os.access(path, os.X_OK) else None
    return shutil.which(command)


# -- the team settings ----------------------------------------------------------------------------------------------


async def _bucket(settings: Settings) -> list[Check]:
    store = image_store(settings)  # a ConfigError for a bad URL or a missing client
    problem = await store.check()
    if problem is not None:
        return [Check("bucket", "fail", f"Images cannot be stored: {problem}")]
    return [Check("bucket", "ok", f"{store.where} answers")]


async def _tokens(path: Path | None) -> list[Check]:
    from nano_banana_mcp.mcp_server.tokens import read_tokens_file  # noqa: PLC0415

    assert path is not None
    tenants = read_tokens_file(path)  # its errors name the file and the line, never a token or a key
    own = sum(t.key is not None for t in tenants)
    keys = f", {own} with {'its' if own == 1 else 'their'} own Monet key" if own else ""
    return [Check("tokens file", "ok", f"{path} is readable: {_plural(len(tenants), 'tenant')}{keys}")]
