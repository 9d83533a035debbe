"""Builds what a process runs on from its settings: the ledger (SQLite, or PostgreSQL for a team), one HTTP client,
the runner, the service."""

from __future__ import annotations

import functools
import logging
import secrets
import ssl
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager

import anyio
import anyio.to_thread
import httpx
from pydantic import SecretStr

from nano_banana_mcp import collector
from nano_banana_mcp.config import Settings
from nano_banana_mcp.errors import ConfigError
from nano_banana_mcp.monet import MonetClient, MonetClients, RetryPolicy
from nano_banana_mcp.observability import logs, metrics
from nano_banana_mcp.spend import Spend
from nano_banana_mcp.storage import image_store
from nano_banana_mcp.tasks import LEDGER_FILE, Ledger, LedgerStore, Runner, Service
from nano_banana_mcp.tasks.create_path import CreatePath
from nano_banana_mcp.tasks.runner import Listener

__all__ = ["WORKER_THREADS", "ledger_for", "open_service"]

log = logging.getLogger(__name__)

WORKER_THREADS = 4


def retry_policy(settings: Settings) -> RetryPolicy:
    """The package's one retry policy, from the settings."""
    return RetryPolicy(
        attempts=settings.max_retries + 1,
        wait_initial=settings.retry_base_delay,
        wait_max=settings.retry_max_delay,
        max_retry_after=settings.max_retry_after,
    )


def ledger_for(settings: Settings, *, api_scope: str, upload_scope: str) -> LedgerStore:
    """The ledger these settings name: PostgreSQL when a database URL is set, else SQLite in the data dir."""
    url = settings.database()
    if url is None:
        return Ledger(settings.data_dir / LEDGER_FILE, api_scope=api_scope, upload_scope=upload_scope)
    try:
        from nano_banana_mcp.tasks.ledger_pg import PostgresLedger  # noqa: PLC0415 - the team extra, only when used
    except ImportError as err:
        raise ConfigError(
            f"A PostgreSQL ledger is set (NANO_BANANA_DATABASE_URL or its file), but its driver is not installed "
            f"({err}). Install the team extra: pip install 'nano-banana-mcp[team]' (uv: uv tool install "
            "'nano-banana-mcp[team]'), or unset it to keep the ledger in SQLite."
        ) from err
    return PostgresLedger(url, api_scope=api_scope, upload_scope=upload_scope)


@functools.cache
def tls_context() -> ssl.SSLContext:
    """The process's one TLS context for the API (the system's CA bundle, or ``SSL_CERT_FILE``/``SSL_CERT_DIR``):
    loading the bundle costs ~20 ms of CPU, once rather than per service."""
    return httpx.create_ssl_context(trust_env=True)


@asynccontextmanager
async def open_service(
    settings: Settings,
    *,
    on_finished: Listener | None = None,
    tenant_keys: Mapping[str, SecretStr] | None = None,
    tenant_limits: Mapping[str, int] | None = None,
) -> AsyncIterator[Service]:
    """Everything a running server needs: the ledger, one HTTP client, and the runner's task group.

    ``tenant_keys`` are the Monet keys of the tenants that have their own (a tokens file's third field): their calls
    go out on that key, every other tenant's on ``MONET_API_KEY``. In offline mode the built-in emulator is started
    on a free loopback port first, and every tenant uses it. Unfinished tasks in the ledger are resumed at once.
    ``tenant_limits``: the tenants' own daily image limits (a tokens file's ``daily_images=N``).
    """
    tenant_keys = dict(tenant_keys or {})
    logs.redact(*(s.get_secret_value() for s in (*logs.secrets_of(settings), *tenant_keys.values())))
    # Every worker thread that allocates gets a malloc arena of its own that keeps its freed memory. A few
    # threads do our blocking work (file writes, image checks) as fast as forty on a laptop's cores and hold
    # far less (bench/concurrency.py, 200 generations at once: peak RSS 183 MB with anyio's default 40
    # threads, 170 MB with 8, 140 MB with 4, the same wall time).
    anyio.to_thread.current_default_thread_limiter().total_tokens = WORKER_THREADS
    store = image_store(settings)  # a bad storage URL fails here, before anything starts
    # A bucket that cannot be reached now, or an output folder that cannot be written (a file, a read-only place), is
    # a setting to fix, not a task to pay for and then fail to save.
    problem = await store.check()
    if problem is not None:
        raise ConfigError(f"Images cannot be stored: {problem}.")
    async with AsyncExitStack() as stack:
        base_url, key, scope = settings.base_url, settings.api_key, settings.base_url
        if settings.offline:
            from nano_banana_mcp.emulator import Emulator, serve_in_thread  # noqa: PLC0415

            # Other users of this machine can connect to its loopback port: a key and a path of this process's
            # own keep them from its API and its files (the standalone `emulator` command keeps monet_offline).
            own_key = secrets.token_urlsafe(32)
            emulator = Emulator(api_key=own_key, task_seconds=settings.emulator_task_seconds)
            base_url = stack.enter_context(serve_in_thread(emulator, path_token=secrets.token_urlsafe(24)))
            key, scope = SecretStr(own_key), "offline"
            log.info(
                "offline mode: built-in emulator on %s (private to this process)", httpx.URL(base_url).netloc.decode()
            )
            if tenant_keys:
                log.info("offline mode: the tenants' own Monet keys are not used; every tenant uses the emulator")
                tenant_keys = {}
        ledger = metrics.timed(await ledger_for(settings, api_scope=scope, upload_scope=base_url).open())
        stack.push_async_callback(ledger.close)

        shared: list[httpx.AsyncClient] = []

        def http() -> httpx.AsyncClient:  # built on first use: one client for the whole process, whatever the key
            if not shared:
                client = httpx.AsyncClient(
                    verify=tls_context(),
                    timeout=settings.request_timeout,
                    limits=httpx.Limits(max_connections=settings.max_streams + 100, max_keepalive_connections=50),
                    headers={"User-Agent": "nano-banana-mcp"},
                )
                shared.append(metrics.observe_client(client))  # counted, timed and traced (observability/)
            return shared[0]

        retry = retry_policy(settings)
        by_key: dict[str, MonetClient] = {}  # one client per distinct key; each closes the shared HTTP client (once)

        def monet(api_key: SecretStr) -> MonetClient:
            client = by_key.get(api_key.get_secret_value())
            if client is None:
                client = by_key[api_key.get_secret_value()] = MonetClient(
                    http,
                    base_url=base_url,
                    api_key=api_key,
                    timeout=settings.request_timeout,
                    download_hosts=settings.download_hosts,
                    max_response_bytes=settings.max_response_bytes,
                    stream_stall=settings.stream_stall_seconds,
                    retry=retry,
                )
                stack.push_async_callback(client.aclose)
            return client

        server_client = monet(key) if key is not None and key.get_secret_value().strip() else None
        clients = MonetClients(server_client, {tenant: monet(own) for tenant, own in tenant_keys.items()})
        try:
            async with anyio.create_task_group() as tg:
                runner = None
                if clients.all:
                    create_path = CreatePath.load(None if settings.offline else settings.data_dir, base_url)
                    runner = Runner(
                        clients, ledger, settings, tg, store, on_finished=on_finished, create_path=create_path
                    )
                    runner.start()
                collector.started()
                yield Service(
                    settings=settings,
                    ledger=ledger,
                    clients=clients,
                    runner=runner,
                    offline=settings.offline,
                    store=store,
                    spend=Spend.of(settings, tenant_limits, on_refused=metrics.limit_refused),  # bad prices: stop
                )
                tg.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            # The task group wraps what the caller's own code raised; hand a lone error back as itself.
            if len(group.exceptions) == 1:
                raise group.exceptions[0] from None
            raise
