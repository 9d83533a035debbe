"""The ``nano-banana-mcp`` command: serve MCP (default), generate, tasks, models, emulator, install, uninstall,
doctor."""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import logging
import math
import os
import sys
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import anyio
from pydantic import AliasChoices, ValidationError

from nano_banana_mcp import __version__, catalog
from nano_banana_mcp.config import Settings
from nano_banana_mcp.errors import (
    ConfigError,
    InvalidRequest,
    MonetConnectionError,
    MonetError,
    NanoBananaError,
    ReferenceImageError,
)
from nano_banana_mcp.install import DEFAULT_NAME, HOSTS, KEY_VAR
from nano_banana_mcp.terminal import PrintableFormatter, printable

if TYPE_CHECKING:
    import socket

    from starlette.applications import Starlette

    from nano_banana_mcp.catalog import GenerateRequest
    from nano_banana_mcp.tasks import Service, TaskResult

__all__ = ["main"]

log = logging.getLogger("nano_banana_mcp")

_BAR_WIDTH = 30
_COMMANDS = ("serve", "generate", "tasks", "models", "emulator", "install", "uninstall", "doctor")
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_CONFIG, EXIT_API, EXIT_PENDING = 0, 1, 2, 3, 4, 5


class _Parser(argparse.ArgumentParser):
    """Usage errors on one line, saying where to read more (argparse prints the whole usage before them)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"error: {message}. See `{self.prog} --help`.\n")


def _port(text: str) -> int:
    """A TCP port to listen on: 1 to 65535, or 0 for any free one."""
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port: give a number from 1 to 65535 (0: any free port)")
    return port


def _seconds(text: str) -> float:
    """A duration that may be zero: a finite number of seconds, not negative."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds: give 0 or more")
    return value


def _positive(text: str) -> int:
    """A count or a page number: 1 or more."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of 1 or more")
    return value


def _common(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("settings (each also read from its environment variable)")
    g.add_argument(
        "--allowed-dir",
        dest="allowed_dirs",
        action="append",
        type=Path,
        help="folder reference images may be read from; repeatable (default: your home) [NANO_BANANA_ALLOWED_DIRS]",
    )
    g.add_argument(
        "--download-host",
        dest="download_hosts",
        action="append",
        help="extra host images may be downloaded from; repeatable [NANO_BANANA_DOWNLOAD_HOSTS]",
    )
    g.add_argument(
        "--offline",
        action="store_true",
        default=None,
        help="use the built-in emulator; no key needed [NANO_BANANA_OFFLINE]",
    )
    g.add_argument("--base-url", dest="base_url", help="Monet API base URL [MONET_BASE_URL]")
    g.add_argument(
        "--output-dir",
        "--out",
        dest="output_dir",
        type=Path,
        help="where images are saved [NANO_BANANA_OUTPUT_DIR]",
    )
    g.add_argument("--data-dir", dest="data_dir", type=Path, help="ledger and caches [NANO_BANANA_DATA_DIR]")
    g.add_argument(
        "--database-url-file",
        dest="database_url_file",
        type=Path,
        metavar="PATH",
        help="file holding a postgresql:// URL: the ledger goes to PostgreSQL, shared by a team's replicas (the URL "
        "itself only from the environment, never argv) [NANO_BANANA_DATABASE_URL_FILE, NANO_BANANA_DATABASE_URL]",
    )
    g.add_argument(
        "--storage-url",
        dest="storage_url",
        metavar="S3_URL",
        help="s3://bucket/prefix: keep saved images in this S3-compatible bucket, shared by a team's replicas "
        "(endpoint and credentials from the standard AWS variables) [NANO_BANANA_STORAGE_URL]",
    )
    g.add_argument(
        "--request-timeout",
        dest="request_timeout",
        type=float,
        help="seconds per API request [NANO_BANANA_REQUEST_TIMEOUT]",
    )
    g.add_argument(
        "--max-retries",
        dest="max_retries",
        type=int,
        help="retries of a failed request [NANO_BANANA_MAX_RETRIES]",
    )
    g.add_argument(
        "--emulator-task-seconds",
        dest="emulator_task_seconds",
        type=float,
        help="how long an offline task takes [NANO_BANANA_EMULATOR_TASK_SECONDS]",
    )
    g.add_argument(
        "--log-level",
        default="WARNING",
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="log level on stderr (default WARNING)",
    )


_SETTING_FLAGS = (
    "http_token",
    "http_token_file",
    "http_tokens_file",
    "allowed_dirs",
    "download_hosts",
    "offline",
    "base_url",
    "output_dir",
    "data_dir",
    "database_url_file",
    "storage_url",
    "oauth_issuer",
    "oauth_audience",
    "oauth_tenant_claim",
    "public_url",
    "request_timeout",
    "max_retries",
    "emulator_task_seconds",
)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="nano-banana-mcp",
        description="Nano Banana image generation for AI agents: an MCP server (the default command) and a CLI. "
        "Set MONET_API_KEY, or use --offline to try it with the built-in emulator.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    serve = sub.add_parser("serve", help="run the MCP server (stdio by default)")
    serve.add_argument("--http", action="store_true", help="serve streamable HTTP instead of stdio")
    serve.add_argument("--host", default="127.0.0.1", help="HTTP host (default 127.0.0.1)")
    serve.add_argument("--port", type=_port, default=8000, help="HTTP port (default 8000; 0: any free port)")
    serve.add_argument(
        "--auth-token-file",
        dest="http_token_file",
        type=Path,
        metavar="PATH",
        help="file holding the bearer token HTTP clients must send (default: one made on the first start and kept "
        "in the data dir, mode 600) [NANO_BANANA_HTTP_TOKEN_FILE]",
    )
    serve.add_argument(
        "--auth-tokens-file",
        dest="http_tokens_file",
        type=Path,
        metavar="PATH",
        help="file of `tenant token [KEY_ENV_VAR]` lines, one bearer token per tenant; each tenant sees only its "
        "own tasks, images and uploads; a third field names the MONET_* environment variable holding the tenant's "
        "own Monet API key (else it uses MONET_API_KEY); mode 600 [NANO_BANANA_HTTP_TOKENS_FILE]",
    )
    serve.add_argument(
        "--auth-token",
        dest="http_token",
        metavar="TOKEN",
        help="the bearer token itself: other users can read it in the process list, so prefer the environment "
        "variable or --auth-token-file [NANO_BANANA_HTTP_TOKEN]",
    )
    serve.add_argument(
        "--no-auth",
        action="store_true",
        help="serve HTTP without a bearer token, on loopback only, for local tools that cannot send headers: "
        "any program or user on this machine can then use your key and read your images",
    )
    serve.add_argument(
        "--oauth-issuer",
        dest="oauth_issuer",
        metavar="URL",
        help="your identity provider's issuer (https://...): clients sign in there and the server accepts the JWT "
        "access tokens it signs; each subject is a tenant [NANO_BANANA_OAUTH_ISSUER]",
    )
    serve.add_argument(
        "--oauth-audience",
        dest="oauth_audience",
        metavar="AUD",
        help="the audience this server's access tokens carry; required with --oauth-issuer "
        "[NANO_BANANA_OAUTH_AUDIENCE]",
    )
    serve.add_argument(
        "--oauth-tenant-claim",
        dest="oauth_tenant_claim",
        metavar="CLAIM",
        help="the access-token claim naming the tenant (default sub) [NANO_BANANA_OAUTH_TENANT_CLAIM]",
    )
    serve.add_argument(
        "--public-url",
        dest="public_url",
        metavar="URL",
        help="the URL clients reach this server at, before /mcp, behind a proxy or load balancer "
        "[NANO_BANANA_PUBLIC_URL]",
    )
    _common(serve)

    gen = sub.add_parser(
        "generate",
        help="generate images and print the saved paths",
        description="Generate images and print each saved file's path (or the whole result with --json).",
        epilog=f"models:\n{catalog.summary()}\n\n"
        "exit codes: 0 saved, 1 the task failed, 2 invalid request, 3 configuration (no key), "
        "4 API or network error, 5 still running when --wait ran out (its task id is printed)\n\n"
        'example: nano-banana-mcp generate --offline "a cute cat in a garden" --aspect-ratio 16:9',
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    gen.add_argument("prompt", help="what to draw, or how to change the reference images")
    gen.add_argument(
        "--model", default=catalog.DEFAULT, choices=list(catalog.MODELS), help=f"(default {catalog.DEFAULT})"
    )
    gen.add_argument(
        "--aspect-ratio", dest="aspect_ratio", choices=list(catalog.ASPECT_RATIOS), help="each model has its own set"
    )
    gen.add_argument("--resolution", choices=list(catalog.RESOLUTIONS), help="not for nano-banana-1")
    gen.add_argument(
        "--image",
        dest="images",
        action="append",
        default=[],
        metavar="REFERENCE",
        help="reference image, repeatable: a path, an https:// URL, a data: URI or an earlier result's "
        "nano-banana://tasks/ID/images/N",
    )
    gen.add_argument(
        "--count", type=int, default=1, choices=range(1, catalog.MAX_COUNT + 1), help="images to make (default 1)"
    )
    gen.add_argument(
        "--request-id",
        dest="request_id",
        metavar="ID",
        help="your own id for this request: run again with the same id (after a crash or a cut connection), it "
        "collects the same tasks instead of paying for new ones",
    )
    gen.add_argument(
        "--output-format", dest="output_format", choices=list(catalog.OUTPUT_FORMATS), help="convert the saved files"
    )
    gen.add_argument(
        "--wait",
        type=_seconds,
        default=600.0,
        help="seconds to wait before printing the task id instead (default 600)",
    )
    gen.add_argument("--json", action="store_true", help="print the result as JSON")
    _common(gen)

    tasks = sub.add_parser("tasks", help="list recent tasks (this machine's ledger and the API's list)")
    tasks.add_argument("--page", type=_positive, default=1)
    tasks.add_argument("--page-size", dest="page_size", type=_positive, default=20)
    tasks.add_argument("--status", choices=["pending", "running", "success", "failed"], help="only these")
    tasks.add_argument("--json", action="store_true", help="print JSON")
    _common(tasks)

    models = sub.add_parser("models", help="print the model catalogue")
    models.add_argument("--json", action="store_true", help="print JSON")

    emu = sub.add_parser("emulator", help="run the Monet-compatible emulator on 127.0.0.1")
    emu.add_argument("--host", default="127.0.0.1")
    emu.add_argument("--port", type=_port, default=8787, help="(default 8787; 0: any free port)")
    emu.add_argument("--api-key", dest="api_key", default="monet_offline", help="the key it accepts")
    emu.add_argument(
        "--task-seconds",
        dest="task_seconds",
        type=_seconds,
        default=4.0,
        help="how long a task takes (default 4)",
    )
    emu.add_argument("--control", action="store_true", help="serve /_emulator/state and /_emulator/faults to steer it")

    _install_parsers(sub)
    _doctor_parser(sub)
    return parser


def _doctor_parser(sub: argparse._SubParsersAction[_Parser]) -> None:
    doctor = sub.add_parser(
        "doctor",
        help="check the setup (key, API, folders, ledger, host entries, team settings); pays for nothing",
        description="Check this setup without paying for anything: the key (with one read of the task list, which "
        "creates nothing), the API's round-trip time, the data and output folders, the ledger, the create path in use, "
        "the entries `install` wrote in each host's config, and when set the bucket, the database and the tokens file. "
        "It never creates a task, and never shows a key, password or token.",
        epilog="exit codes: 0 no check failed (warnings allowed), 1 a check failed, 3 a setting is invalid\n\n"
        "example: nano-banana-mcp doctor --offline",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    doctor.add_argument("--json", action="store_true", help="print a JSON list of {check, status, detail}")
    doctor.add_argument("--name", default=DEFAULT_NAME, help=f"the server's name in the hosts (default {DEFAULT_NAME})")
    doctor.add_argument(
        "--auth-tokens-file",
        dest="http_tokens_file",
        type=Path,
        metavar="PATH",
        help="the tokens file `serve --http` is given, to check [NANO_BANANA_HTTP_TOKENS_FILE]",
    )
    _common(doctor)


def _install_parsers(sub: argparse._SubParsersAction[_Parser]) -> None:
    hosts = ", ".join(HOSTS)
    install = sub.add_parser(
        "install",
        help="register this installation's server with an MCP host",
        description=f"Register this installation's server ({hosts}) in the host's user-wide config file, by the "
        "absolute path of its console script: no PATH lookup, nothing fetched. The file is merged (other servers "
        "and keys stay), backed up as <file>.bak and written atomically; a file that is not valid JSON is refused.",
        epilog="The API key is written only with --key-from-env; otherwise the command says how the host gets it.\n\n"
        "example: nano-banana-mcp install claude-desktop --offline",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    install.add_argument("host", choices=HOSTS, help="the MCP host")
    install.add_argument("--name", default=DEFAULT_NAME, help=f"the server's name in the host (default {DEFAULT_NAME})")
    install.add_argument("--dry-run", action="store_true", help="print what would be written; write nothing")
    key = install.add_mutually_exclusive_group()
    key.add_argument("--offline", action="store_true", help="register the server in offline mode: no key needed")
    key.add_argument(
        "--key-from-env",
        action="store_true",
        help=f"copy ${KEY_VAR} from this shell into the entry's env (the file is made readable only by you)",
    )
    uninstall = sub.add_parser(
        "uninstall",
        help="take the server out of an MCP host's config",
        description="Remove the server's entry from the host's config file (backed up as <file>.bak); every other "
        "server and key stays.",
    )
    uninstall.add_argument("host", choices=HOSTS, help="the MCP host")
    uninstall.add_argument("--name", default=DEFAULT_NAME, help=f"the server's name (default {DEFAULT_NAME})")
    uninstall.add_argument("--dry-run", action="store_true", help="print what would be removed; write nothing")


_FLAGS = {
    "http_token": "--auth-token",
    "http_token_file": "--auth-token-file",
    "http_tokens_file": "--auth-tokens-file",
    "allowed_dirs": "--allowed-dir",
    "download_hosts": "--download-host",
    "output_dir": "--out",
}


def _setting_name(field: str) -> str:
    """How a person sets ``field``: its environment variable, and its flag when it has one."""
    info = Settings.model_fields.get(field)
    alias = info.validation_alias if info is not None else None
    env = str(alias.choices[0]) if isinstance(alias, AliasChoices) else f"NANO_BANANA_{field.upper()}"
    if field not in _SETTING_FLAGS:
        return env
    return f"{env} / {_FLAGS.get(field, '--' + field.replace('_', '-'))}"


def settings_from(args: argparse.Namespace) -> Settings:
    overrides = {k: v for k in _SETTING_FLAGS if (v := getattr(args, k, None)) is not None}
    try:
        return Settings(**overrides)
    except ValidationError as err:
        problems = "; ".join(
            f"{_setting_name(str(e['loc'][0])) if e['loc'] else 'a setting'}: {e['msg'].removeprefix('Value error, ')}"
            for e in err.errors()
        )
        raise ConfigError(f"Invalid setting {problems}.") from err


def main(argv: Sequence[str] | None = None) -> None:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0] not in _COMMANDS and argv[0] not in ("-h", "--help", "--version")):
        argv.insert(0, "serve")  # `nano-banana-mcp [--offline ...]` is how MCP hosts start the server
    args = parser.parse_args(argv)
    command = args.command
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(PrintableFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=getattr(args, "log_level", "WARNING"), handlers=[handler])
    try:
        code = _dispatch(command, args)
    except NanoBananaError as err:
        print(f"error: {printable(str(err))}", file=sys.stderr)
        code = _exit_code(err)
    except KeyboardInterrupt:
        code = 130
    except BaseExceptionGroup as group:  # a task group's: ours, said as itself; anything else, as it is
        own = _own_error(group)
        if own is None:
            raise
        print(f"error: {own}", file=sys.stderr)
        code = _exit_code(own)
    sys.exit(code)


def _own_error(err: BaseException) -> NanoBananaError | None:
    """``err`` if it is one of our errors, or the first of them in a task group's exception group that holds nothing
    else; None otherwise (anything unexpected is shown whole)."""
    if isinstance(err, NanoBananaError):
        return err
    if isinstance(err, BaseExceptionGroup):
        found = [_own_error(inner) for inner in err.exceptions]
        if found and all(own is not None for own in found):
            return found[0]
    return None


def _exit_code(err: NanoBananaError) -> int:
    if isinstance(err, ConfigError):
        return EXIT_CONFIG
    if isinstance(err, InvalidRequest | ReferenceImageError):
        return EXIT_USAGE
    if isinstance(err, MonetError | MonetConnectionError):
        return EXIT_API
    return EXIT_FAILED


def _dispatch(command: str, args: argparse.Namespace) -> int:
    if command == "models":
        return _models(json_out=args.json)
    if command == "emulator":
        return _emulator(args)
    if command in ("install", "uninstall"):
        return _install(command, args)
    settings = settings_from(args)
    if command == "serve":
        return _serve(settings, args)
    if command == "generate":
        return anyio.run(_generate, settings, args)
    if command == "tasks":
        return anyio.run(_tasks, settings, args)
    if command == "doctor":
        return anyio.run(_doctor, settings, args)
    raise AssertionError(command)


def _serve(settings: Settings, args: argparse.Namespace) -> int:
    from nano_banana_mcp.mcp_server import create_server  # noqa: PLC0415

    if args.http:
        from nano_banana_mcp.config import normal_host  # noqa: PLC0415
        from nano_banana_mcp.mcp_server import http_app  # noqa: PLC0415
        from nano_banana_mcp.mcp_server.http import bind, http_auth  # noqa: PLC0415

        auth = http_auth(settings, args.host, no_auth=args.no_auth)
        if args.http_token is not None:
            auth = dataclasses.replace(auth, source="--auth-token")
            print(
                "warning: --auth-token puts the token in the process list, where other users of this machine can read "
                "it; set NANO_BANANA_HTTP_TOKEN or use --auth-token-file instead.",
                file=sys.stderr,
            )
        if not auth.required:
            print(
                "warning: --no-auth: any program or user on this machine can call this server, generate on your "
                "account and read your images through it. Use it only for local tools that cannot send headers.",
                file=sys.stderr,
            )
        with bind(args.host, args.port) as sock:  # the port actually served (--port 0: a free one)
            port = sock.getsockname()[1]
            app = http_app(settings, args.host, port, auth=auth)
            host = normal_host(args.host)
            _run_http(app, sock, auth.start_message(f"http://{f'[{host}]' if ':' in host else host}:{port}/mcp"))
    else:
        from nano_banana_mcp.mcp_server.stdio import serve_stdio  # noqa: PLC0415

        anyio.run(serve_stdio, create_server(settings))
    return EXIT_OK


def _run_http(app: Starlette, sock: socket.socket, banner: str) -> None:
    """Serve ``app`` on ``sock`` with uvicorn. ``banner`` is printed once the app has started (its ledger and image
    store open and checked); a start-up that fails on a setting (a database or bucket that cannot be used) is that
    setting's one-line error instead, with no banner and none of uvicorn's tracebacks."""
    import uvicorn  # noqa: PLC0415

    failed: list[NanoBananaError] = []
    opening = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(target: Any) -> AsyncIterator[Any]:
        started = False
        try:
            async with opening(target) as state:
                started = True
                print(banner, file=sys.stderr)
                yield state
        except BaseException as err:
            if not started and (own := _own_error(err)) is not None:
                failed.append(own)  # uvicorn is told (it stops), and says nothing: see the filter below
            raise

    app.router.lifespan_context = lifespan
    config = uvicorn.Config(app, log_level="warning")

    class _SaidByUs(logging.Filter):
        def filter(self, record: logging.LogRecord) -> bool:
            return not failed  # once the start-up failed on a setting, main() says it, on one line

    logging.getLogger("uvicorn.error").addFilter(_SaidByUs())
    try:
        uvicorn.Server(config).run(sockets=[sock])
    except SystemExit:  # uvicorn's way out of a failed start-up
        if failed:
            raise failed[0] from None
        raise


async def _generate(settings: Settings, args: argparse.Namespace) -> int:
    from nano_banana_mcp.catalog import GenerateRequest  # noqa: PLC0415
    from nano_banana_mcp.runtime import open_service  # noqa: PLC0415

    try:
        request = GenerateRequest(
            prompt=args.prompt,
            model=args.model,
            images=tuple(args.images),
            aspect_ratio=args.aspect_ratio,
            resolution=args.resolution,
            output_format=args.output_format,
        )
    except ValidationError as err:
        raise InvalidRequest(str(err)) from err
    show_bar = not args.json and sys.stderr.isatty()
    async with open_service(settings) as service:
        if show_bar:
            result = await _with_progress_bar(service, request, args.wait, args.count, args.request_id)
        else:
            result = await service.generate(request, args.wait, count=args.count, request_id=args.request_id)
    if args.json:
        print(result.model_dump_json(indent=2))
    elif result.status == "success":
        for image in result.images:
            print(printable(image.path or image.url or ""))
        if result.offline:
            print("note: offline mode, these are emulator placeholders", file=sys.stderr)
    elif result.status == "failed":
        print(printable(result.summary()), file=sys.stderr)
    else:
        problem = f" Problem: {result.error}" if result.error else ""
        print(
            printable(
                f"Task {result.task_id} is still {result.status}.{problem} It is kept in the ledger and finished by "
                "the next nano-banana-mcp that runs here (never charged twice); `nano-banana-mcp tasks` lists it."
            ),
            file=sys.stderr,
        )
    if result.status == "success":
        return EXIT_OK
    return EXIT_FAILED if result.status == "failed" else EXIT_PENDING


async def _with_progress_bar(
    service: Service, request: GenerateRequest, wait: float, count: int, request_id: str | None
) -> TaskResult:
    """A one-line bar on stderr (terminals only), redrawn as the task moves and twice a second."""
    started = time.monotonic()
    done, status = 0.0, "submitting"

    def draw() -> None:
        filled = int(_BAR_WIDTH * done / 100)
        bar = "#" * filled + "-" * (_BAR_WIDTH - filled)
        elapsed = time.monotonic() - started
        sys.stderr.write(f"\r{request.model}: {status:<10} [{bar}] {done:3.0f}% {elapsed:5.1f}s")
        sys.stderr.flush()

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        nonlocal done, status
        done, status = progress, (message or "").split(" ")[0]
        draw()

    async def tick() -> None:
        while True:
            draw()
            await anyio.sleep(0.5)

    async with anyio.create_task_group() as tg:
        tg.start_soon(tick)
        try:
            result = await service.generate(request, wait, on_progress, count=count, request_id=request_id)
        finally:
            tg.cancel_scope.cancel()
            sys.stderr.write("\r\x1b[2K")  # clear the bar; the result follows on stdout
            sys.stderr.flush()
    return result


async def _tasks(settings: Settings, args: argparse.Namespace) -> int:
    from nano_banana_mcp.runtime import open_service  # noqa: PLC0415

    async with open_service(settings) as service:
        listing = await service.list_tasks(args.page, args.page_size, args.status)
    if args.json:
        print(listing.model_dump_json(indent=2))
        return EXIT_OK
    if listing.api_error:
        print(printable(f"note: {listing.api_error}"), file=sys.stderr)
    if not listing.tasks:
        print('No tasks yet. Try: nano-banana-mcp generate --offline "a cute cat"', file=sys.stderr)
        return EXIT_OK
    for task in listing.tasks:
        when = task.created_at.astimezone().strftime("%Y-%m-%d %H:%M") if task.created_at else "-"
        where = " ".join(task.paths) or (task.error or task.prompt)
        print(printable(f"{task.task_id:<22} {task.status:<8} {when}  {task.model:<18} {where}"))
    return EXIT_OK


async def _doctor(settings: Settings, args: argparse.Namespace) -> int:
    from nano_banana_mcp import doctor  # noqa: PLC0415

    checks = await doctor.run_checks(settings, name=args.name)
    print(doctor.as_json(checks) if args.json else doctor.table(checks))
    return EXIT_FAILED if doctor.failed(checks) else EXIT_OK


def _models(*, json_out: bool) -> int:
    if json_out:
        print(json.dumps([m.model_dump() for m in catalog.model_info()], indent=2))
    else:
        print("\n".join(printable(row) for row in catalog.markdown_table().splitlines()))
    return EXIT_OK


def _install(command: str, args: argparse.Namespace) -> int:
    from nano_banana_mcp import install  # noqa: PLC0415

    if command == "uninstall":
        print(_lines(install.uninstall(args.host, name=args.name, dry_run=args.dry_run).report()))
        return EXIT_OK
    key = None
    if args.key_from_env:
        key = os.environ.get(KEY_VAR, "").strip()
        if not key:
            raise ConfigError(f"--key-from-env: {KEY_VAR} is not set in this shell. Set it, or leave the flag out.")
    try:
        change = install.install(args.host, name=args.name, offline=args.offline, key=key, dry_run=args.dry_run)
    except ConfigError as err:  # the file was left alone: say what to add by hand
        entry = json.dumps(
            install.redacted(install.entry_for(args.host, install.server_command(), offline=args.offline))
        )
        print(f"error: {printable(str(err))}", file=sys.stderr)
        print(printable(f"The entry to add by hand, as server {args.name!r}: {entry}"), file=sys.stderr)
        if args.host == "openclaw":
            print(printable(f"or let OpenClaw write it: openclaw mcp set {args.name} '{entry}'"), file=sys.stderr)
        return EXIT_CONFIG
    print(_lines(change.report()))
    print(printable(install.key_advice(args.host, change.path, offline=args.offline, key_written=key is not None)))
    if not args.dry_run and change.action != "unchanged":
        print(_RELOAD[args.host].format(name=args.name))
    return EXIT_OK


def _lines(text: str) -> str:
    """A report of several lines, each made ``printable``."""
    return "\n".join(printable(line) for line in text.splitlines())


_RELOAD = {
    "claude-desktop": "Quit and reopen Claude Desktop to load it.",
    "claude-code": "New Claude Code sessions load it (`claude mcp get {name}` shows it); restart running ones.",
    "cursor": "Cursor loads it from Settings > MCP (toggle it on, or restart Cursor).",
    "openclaw": "The gateway loads it on the next agent turn; `openclaw mcp doctor {name} --probe` checks it.",
}


def _emulator(args: argparse.Namespace) -> int:
    from nano_banana_mcp.emulator import Emulator, serve  # noqa: PLC0415
    from nano_banana_mcp.emulator.serve import bind  # noqa: PLC0415

    emulator = Emulator(api_key=args.api_key, task_seconds=args.task_seconds, control=args.control)
    try:
        sock = bind(args.host, args.port)
    except OSError as err:
        raise ConfigError(
            f"Cannot listen on {args.host} port {args.port}: {err.strerror or err}. Choose another --port "
            "(0: any free port)."
        ) from err
    print(
        f"Monet emulator on http://{args.host}:{sock.getsockname()[1]} (key {args.api_key}); Ctrl-C to stop",
        file=sys.stderr,
    )
    anyio.run(functools.partial(serve, emulator, args.host, sock=sock))
    return EXIT_OK
