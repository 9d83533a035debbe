"""`nano-banana-mcp install HOST`: the entry it writes, run as that host runs it, and what it does to the file.

Each host is installed with the real console script against a temporary home; the entry is then read back and
started the way the host starts it (its command, args and env over stdio), and must list the five tools and
generate an offline image.
"""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from mcp import Client, StdioServerParameters
from mcp_types import CallToolResult, TextContent

from nano_banana_mcp import install
from nano_banana_mcp.emulator import Emulator
from nano_banana_mcp.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
TOOLS = [tool["name"] for tool in json.loads((ROOT / "manifest.json").read_text(encoding="utf-8"))["tools"]]
SECRET = "monet_do_not_leak_0123456789"


def host_env(home: Path) -> dict[str, str]:
    """A user's environment with ``home`` as their home folder (and the folders the hosts derive from it)."""
    return {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(home),
        "USERPROFILE": str(home),
        "APPDATA": str(home / "AppData" / "Roaming"),
        "XDG_CONFIG_HOME": str(home / "xdg-config"),
    }


def run(command: str, *args: str, env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([command, *args], env=dict(env), capture_output=True, text=True, timeout=60, check=False)


def written_entry(host: install.Host, env: Mapping[str, str], name: str = install.DEFAULT_NAME) -> dict[str, Any]:
    path = install.config_path(host, home=Path(env["HOME"]), platform=sys.platform, environ=env)
    entry: dict[str, Any] = install.servers_in(json.loads(path.read_text(encoding="utf-8")), host)[name]
    return entry


def as_openclaw_fills(value: str, gateway_env: Mapping[str, str]) -> str:
    """OpenClaw's `${VAR}` substitution in config strings: a missing or empty variable stays as written."""
    return re.sub(r"\$\{([A-Z_][A-Z0-9_]*)\}", lambda m: gateway_env.get(m[1]) or m[0], value)


def launch_env(
    host: install.Host, entry: dict[str, Any], home: Path, gateway_env: Mapping[str, str] | None = None
) -> dict[str, str]:
    """What the host passes to the server process: the entry's env (OpenClaw first fills `${VAR}` from its own
    environment), plus this test's folders under ``home`` and a fast emulator."""
    env = dict(entry.get("env", {}))
    if host == "openclaw":
        env = {k: as_openclaw_fills(v, gateway_env or {}) for k, v in env.items()}
    return env | {
        "HOME": str(home),
        "NANO_BANANA_DATA_DIR": str(home / "data"),
        "NANO_BANANA_OUTPUT_DIR": str(home / "Pictures" / "nano-banana"),
        "NANO_BANANA_EMULATOR_TASK_SECONDS": "0.2",
    }


async def run_entry(entry: dict[str, Any], env: dict[str, str]) -> tuple[list[str], CallToolResult]:
    """Start the entry over stdio as a host does; list the tools and generate one image."""
    params = StdioServerParameters(command=entry["command"], args=entry["args"], env=env)
    async with Client(params, read_timeout_seconds=30) as client:
        tools = [tool.name for tool in (await client.list_tools()).tools]
        result = await client.call_tool("generate_image", {"prompt": "a lighthouse at dusk", "aspect_ratio": "16:9"})
    return tools, result


# -- each host, end to end ----------------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.parametrize("host", install.HOSTS)
async def test_installed_entry_runs_as_the_host_runs_it(host: install.Host, command: str, tmp_path: Path) -> None:
    """`install HOST --offline` writes an entry that, started as the host starts it, serves the five tools and
    saves an offline image."""
    home = tmp_path / "home"
    env = host_env(home)
    done = run(command, "install", host, "--offline", env=env)
    assert done.returncode == 0, done.stderr
    entry = written_entry(host, env)
    assert Path(entry["command"]).is_absolute()
    assert entry["args"] == ["--offline"]
    assert install.KEY_VAR not in entry.get("env", {})
    assert "offline" in done.stdout.lower()

    tools, result = await run_entry(entry, launch_env(host, entry, home))
    assert tools == TOOLS
    assert not result.is_error, result.content
    data = result.structured_content
    assert (data["status"], data["offline"]) == ("success", True)
    [image] = data["images"]
    assert Path(image["path"]).is_file()
    assert Path(image["path"]).is_relative_to(home)


@pytest.mark.anyio
async def test_openclaw_entry_takes_the_key_from_openclaws_environment(
    command: str, tmp_path: Path, process_env: dict[str, str], api_key: str, emulator: Emulator
) -> None:
    """Without --offline the OpenClaw entry carries `${MONET_API_KEY}`, not a key: filled from the gateway's
    environment the server generates for real; left unfilled, the call says that no key is set."""
    home = tmp_path / "home"
    env = host_env(home)
    assert run(command, "install", "openclaw", env=env).returncode == 0
    entry = written_entry("openclaw", env)
    assert entry["env"][install.KEY_VAR] == "${MONET_API_KEY}"
    assert set(entry["env"]) == {install.KEY_VAR, "NANO_BANANA_OUTPUT_DIR"}  # the folder: tests/install/
    assert entry["requestTimeoutMs"] >= 90_000  # above OpenClaw's 60 s default, with room for uploads

    api = {"MONET_BASE_URL": process_env["MONET_BASE_URL"]}  # this test's stand-in for the real API
    tools, result = await run_entry(entry, launch_env("openclaw", entry, home, {"MONET_API_KEY": api_key}) | api)
    assert tools == TOOLS
    assert not result.is_error, result.content
    assert result.structured_content["status"] == "success"
    assert emulator.creates == 1

    _, result = await run_entry(entry, launch_env("openclaw", entry, home, {}) | api)
    assert result.is_error
    assert isinstance(result.content[0], TextContent)
    assert "No Monet API key is set" in result.content[0].text
    assert emulator.creates == 1


# -- what it does to the file ------------------------------------------------------------------------------

OTHERS: dict[install.Host, dict[str, Any]] = {
    "claude-desktop": {"mcpServers": {"files": {"command": "npx", "args": ["fs"]}}, "globalShortcut": "Ctrl+Space"},
    "claude-code": {
        "numStartups": 12,
        "mcpServers": {"github": {"type": "http", "url": "https://example.invalid/mcp"}},
        "projects": {"/src/app": {"mcpServers": {"db": {"type": "stdio", "command": "db-mcp", "args": []}}}},
    },
    "cursor": {"mcpServers": {"docs": {"url": "https://example.invalid/sse"}}},
    "openclaw": {
        "agents": {"defaults": {"model": "x"}},
        "mcp": {"sessionIdleTtlMs": 0, "servers": {"memory": {"command": "npx", "args": ["-y", "memory"]}}},
    },
}


@pytest.mark.parametrize("host", install.HOSTS)
def test_install_keeps_other_servers_and_keys_and_a_backup(host: install.Host, tmp_path: Path) -> None:
    """Merging adds ours and changes nothing else; the previous file is kept as <file>.bak; uninstall takes out
    only ours."""
    env = host_env(tmp_path)
    path = install.config_path(host, home=tmp_path, platform="linux", environ=env)
    path.parent.mkdir(parents=True, exist_ok=True)
    original = json.dumps(OTHERS[host], indent=4)
    path.write_text(original, encoding="utf-8")

    change = install.install(host, command=["/opt/nb"], home=tmp_path, platform="linux", environ=env)
    assert change.action == "added"
    assert change.backup == path.with_name(path.name + ".bak")
    assert change.backup.read_text(encoding="utf-8") == original
    document = json.loads(path.read_text(encoding="utf-8"))
    assert install.servers_in(document, host)[install.DEFAULT_NAME]["command"] == "/opt/nb"
    others = {k: v for k, v in install.servers_in(document, host).items() if k != install.DEFAULT_NAME}
    assert others == install.servers_in(OTHERS[host], host)
    assert install.remove(document, host, install.DEFAULT_NAME) == (OTHERS[host], True)

    again = install.install(host, command=["/opt/nb"], home=tmp_path, platform="linux", environ=env)
    assert again.action == "unchanged"

    change = install.uninstall(host, home=tmp_path, platform="linux", environ=env)
    assert change.action == "removed"
    assert json.loads(path.read_text(encoding="utf-8")) == OTHERS[host]


def test_uninstall_removes_only_ours_and_says_when_there_is_none(command: str, tmp_path: Path) -> None:
    """`uninstall` leaves a server of another name alone and exits 0 when ours is not there."""
    env = host_env(tmp_path)
    assert run(command, "install", "cursor", "--offline", env=env).returncode == 0
    assert run(command, "install", "cursor", "--offline", "--name", "banana-2", env=env).returncode == 0
    done = run(command, "uninstall", "cursor", env=env)
    assert done.returncode == 0, done.stderr
    assert "removed `mcpServers.nano-banana`" in done.stdout
    document = json.loads((tmp_path / ".cursor" / "mcp.json").read_text(encoding="utf-8"))
    assert list(document["mcpServers"]) == ["banana-2"]
    done = run(command, "uninstall", "cursor", env=env)
    assert (done.returncode, "has no `mcpServers.nano-banana`" in done.stdout) == (0, True)


def test_dry_run_writes_nothing(command: str, tmp_path: Path) -> None:
    """--dry-run prints the entry it would write and leaves the disk as it was, for install and uninstall."""
    env = host_env(tmp_path)
    done = run(command, "install", "claude-code", "--dry-run", env=env)
    assert done.returncode == 0, done.stderr
    assert "would add `mcpServers.nano-banana`" in done.stdout
    assert '"type": "stdio"' in done.stdout
    assert list(tmp_path.iterdir()) == []

    claude_json = tmp_path / ".claude.json"
    assert run(command, "install", "claude-code", env=env).returncode == 0
    before = claude_json.read_bytes()
    assert "would remove" in run(command, "uninstall", "claude-code", "--dry-run", env=env).stdout
    assert "would replace" in run(command, "install", "claude-code", "--offline", "--dry-run", env=env).stdout
    assert claude_json.read_bytes() == before
    assert not claude_json.with_name(".claude.json.bak").exists()


@pytest.mark.parametrize(
    ("host", "text"),
    [
        ("claude-desktop", '{"mcpServers": {"a": {"command": "x",}}}'),  # trailing comma
        ("openclaw", "{\n  // JSON5: OpenClaw reads it, we do not\n  mcp: {servers: {}},\n}\n"),
        ("cursor", "[]"),
        ("claude-code", '{"mcpServers": ["not", "an", "object"]}'),
        ("cursor", '{"note": "\\ud800", "mcpServers": {}}'),  # a lone surrogate: no UTF-8 file can hold it
        ("claude-desktop", '{"\\udfff": 1, "mcpServers": {}}'),  # in a key
        ("openclaw", '{"limit": NaN, "mcp": {"servers": {}}}'),  # Python reads NaN; JSON has no such number
    ],
    ids=["trailing-comma", "json5", "array", "servers-array", "lone-surrogate", "surrogate-key", "nan"],
)
def test_a_file_that_is_not_a_json_object_is_refused_and_untouched(
    command: str, tmp_path: Path, host: install.Host, text: str
) -> None:
    """Exit 3 with what is wrong and the entry to add by hand; the file keeps its bytes and no backup is made."""
    env = host_env(tmp_path)
    path = install.config_path(host, home=tmp_path, platform=sys.platform, environ=env)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    done = run(command, "install", host, "--offline", env=env)
    assert done.returncode == 3
    assert "Traceback" not in done.stderr
    [error] = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert str(path) in error
    assert "left untouched" in error
    assert "The entry to add by hand" in done.stderr
    if host == "openclaw":
        assert "openclaw mcp set nano-banana '" in done.stderr
    assert path.read_text(encoding="utf-8") == text
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]
    assert run(command, "uninstall", host, env=env).returncode == 3


def test_the_key_is_written_only_when_asked(command: str, tmp_path: Path) -> None:
    """No flag: no key in the file, and the output says how the host gets one. --key-from-env: the key from the
    environment, in a file only its owner can read, and never printed."""
    env = host_env(tmp_path) | {"MONET_API_KEY": SECRET}
    path = tmp_path / "xdg-config" / "Claude" / "claude_desktop_config.json"
    done = run(command, "install", "claude-desktop", env=env)
    assert done.returncode == 0, done.stderr
    assert SECRET not in path.read_text(encoding="utf-8")
    assert "--key-from-env" in done.stdout

    done = run(command, "install", "claude-desktop", "--key-from-env", env=env)
    assert done.returncode == 0, done.stderr
    assert written_entry("claude-desktop", env)["env"] == {"MONET_API_KEY": SECRET}
    assert SECRET not in done.stdout + done.stderr
    assert "redacted" in done.stdout
    if os.name == "posix":
        assert stat.S_IMODE(path.stat().st_mode) == 0o600

    done = run(command, "install", "cursor", "--key-from-env", env=host_env(tmp_path))
    assert done.returncode == 3
    assert "MONET_API_KEY is not set" in done.stderr
    done = run(command, "install", "cursor", "--key-from-env", "--offline", env=env)
    assert done.returncode == 2  # an offline entry needs no key


# -- the pure parts ------------------------------------------------------------------------------------------

HOME = Path("/home/ada")


@pytest.mark.parametrize(
    ("host", "platform", "environ", "expected"),
    [
        ("claude-desktop", "darwin", {}, HOME / "Library/Application Support/Claude/claude_desktop_config.json"),
        (
            "claude-desktop",
            "win32",
            {"APPDATA": "/c/Users/ada/AppData/Roaming"},
            Path("/c/Users/ada/AppData/Roaming/Claude/claude_desktop_config.json"),
        ),
        ("claude-desktop", "win32", {}, HOME / "AppData/Roaming/Claude/claude_desktop_config.json"),
        ("claude-desktop", "linux", {}, HOME / ".config/Claude/claude_desktop_config.json"),
        ("claude-desktop", "linux", {"XDG_CONFIG_HOME": "/xdg"}, Path("/xdg/Claude/claude_desktop_config.json")),
        ("claude-code", "darwin", {}, HOME / ".claude.json"),
        ("claude-code", "linux", {"CLAUDE_CONFIG_DIR": "/cc"}, Path("/cc/.claude.json")),
        ("cursor", "win32", {"APPDATA": "/c/x"}, HOME / ".cursor/mcp.json"),
        ("openclaw", "darwin", {}, HOME / ".openclaw/openclaw.json"),
        ("openclaw", "linux", {"OPENCLAW_STATE_DIR": "/state"}, Path("/state/openclaw.json")),
        (
            "openclaw",
            "linux",
            {"OPENCLAW_CONFIG_PATH": "/etc/oc.json", "OPENCLAW_STATE_DIR": "/s"},
            Path("/etc/oc.json"),
        ),
    ],
)
def test_config_path_per_platform(host: install.Host, platform: str, environ: dict[str, str], expected: Path) -> None:
    """Each host's user-wide file on macOS, Windows (%APPDATA%) and Linux, and the variables that move it."""
    assert install.config_path(host, home=HOME, platform=platform, environ=environ) == expected


def test_server_command_is_this_installation(command: str, tmp_path: Path) -> None:
    """The console script beside the running interpreter, by absolute path; without one, `python -m` with the same
    interpreter, which runs the same command."""
    assert install.server_command() == [command]
    lone_python = tmp_path / "bin" / "python3"
    python, *module = install.server_command(str(lone_python))
    assert (python, module) == (str(lone_python), ["-m", "nano_banana_mcp"])
    done = subprocess.run([sys.executable, *module, "--version"], capture_output=True, text=True, check=True)
    assert done.stdout.startswith("nano-banana-mcp ")
    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "nano-banana-mcp.exe").touch()
    assert install.server_command(str(lone_python), platform="win32") == [str(tmp_path / "bin" / "nano-banana-mcp.exe")]


def test_entries_have_each_hosts_shape() -> None:
    """Claude Code's user scope has `type: stdio` and an env object; OpenClaw's has its request timeout; a key
    appears only when given, and printing redacts it."""
    cmd = ["/opt/nb"]
    assert install.entry_for("claude-desktop", cmd) == {"command": "/opt/nb", "args": []}
    assert install.entry_for("cursor", cmd, offline=True) == {"command": "/opt/nb", "args": ["--offline"]}
    assert install.entry_for("claude-code", cmd) == {"type": "stdio", "command": "/opt/nb", "args": [], "env": {}}
    assert install.entry_for("openclaw", cmd, offline=True) == {
        "command": "/opt/nb",
        "args": ["--offline"],
        "requestTimeoutMs": install.OPENCLAW_REQUEST_TIMEOUT_MS,
    }
    with_key = install.entry_for("claude-desktop", cmd, key=SECRET)
    assert with_key["env"] == {"MONET_API_KEY": SECRET}
    assert SECRET not in json.dumps(install.redacted(with_key))
    assert install.redacted(install.entry_for("openclaw", cmd))["env"] == {"MONET_API_KEY": "${MONET_API_KEY}"}


def test_a_servers_key_that_is_not_an_object_is_refused() -> None:
    """`merge` and `remove` never replace something they do not understand."""
    with pytest.raises(ConfigError, match=r"`mcp\.servers` is a JSON list"):
        install.merge({"mcp": {"servers": []}}, "openclaw", "nb", {})
    with pytest.raises(ConfigError, match="`mcpServers` is a JSON str"):
        install.remove({"mcpServers": "x"}, "cursor", "nb")
    assert install.remove({}, "cursor", "nb") == ({}, False)


# -- the host's file: its numbers, concurrent installs, owner and mode, links -------------------------------------

SPELLED = """{
  "limits": {
    "huge": 1e999,
    "precise": 0.10000000000000000001,
    "big": 123456789012345678901234567890,
    "exponent": 1E+2,
    "tiny": 5e-324,
    "zero": -0,
    "list": [
      1.50,
      -0.0
    ]
  },
  "mcpServers": {
    "docs": {
      "url": "https://example.invalid/sse",
      "timeoutMs": 30000.000
    }
  }
}
"""


def test_numbers_in_the_file_are_written_back_as_spelled(tmp_path: Path) -> None:
    """A `1e999` is not rewritten as `Infinity` (which no JSON reader takes), nor does any other number lose or
    change a digit: install then uninstall gives back the very bytes the file had."""
    env = host_env(tmp_path)
    path = install.config_path("cursor", home=tmp_path, platform="linux", environ=env)
    path.parent.mkdir(parents=True)
    path.write_text(SPELLED, encoding="utf-8")
    change = install.install("cursor", command=["/opt/nb"], home=tmp_path, platform="linux", environ=env)
    assert change.action == "added"
    written = path.read_text(encoding="utf-8")
    assert "Infinity" not in written
    for number in ("1e999", "0.10000000000000000001", "123456789012345678901234567890", "1E+2", "5e-324", "-0,"):
        assert number in written, number
    assert install.uninstall("cursor", home=tmp_path, platform="linux", environ=env).action == "removed"
    assert path.read_text(encoding="utf-8") == SPELLED


def test_concurrent_installs_keep_every_entry(command: str, tmp_path: Path) -> None:
    """16 installs of 16 names started at once into one file that lists another server: all 17 are there after,
    and the file is valid JSON (each install read the file under the lock, after the one before had written)."""
    env = host_env(tmp_path)
    path = tmp_path / ".cursor" / "mcp.json"
    path.parent.mkdir()
    path.write_text('{"mcpServers": {"theirs": {"command": "x"}}}\n', encoding="utf-8")
    names = [f"banana-{i}" for i in range(16)]
    procs = [
        subprocess.Popen(
            [command, "install", "cursor", "--offline", "--name", name],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in names
    ]
    failures = [(p.wait(timeout=120), p.stderr.read()) for p in procs if p.stderr is not None]
    assert [f for f in failures if f[0] != 0] == []
    servers = json.loads(path.read_text(encoding="utf-8"))["mcpServers"]
    assert sorted(servers) == sorted(["theirs", *names])


USER = 65534  # nobody: a user other than the one running the tests (root)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() != 0, reason="needs root, to install into another user's file")
def test_root_installing_into_a_users_file_keeps_its_owner_and_mode(tmp_path: Path) -> None:
    """Root running `install` for a user leaves that user's file (and its backup) the user's, with its mode; with
    a key the file is made private but stays the user's; a new file in the user's folder is the user's too."""
    env = host_env(tmp_path)
    path = install.config_path("cursor", home=tmp_path, platform="linux", environ=env)
    path.parent.mkdir()
    os.chown(path.parent, USER, USER)
    path.write_text('{"mcpServers": {}}\n', encoding="utf-8")
    os.chown(path, USER, USER)
    path.chmod(0o640)

    change = install.install("cursor", command=["/opt/nb"], home=tmp_path, platform="linux", environ=env)
    assert change.backup is not None
    for each in (path, change.backup):
        info = each.stat()
        assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (USER, USER, 0o640), each

    install.install("cursor", command=["/opt/nb"], key=SECRET, home=tmp_path, platform="linux", environ=env)
    info = path.stat()
    assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (USER, USER, 0o600)

    path.unlink()
    change.backup.unlink()
    install.install("cursor", command=["/opt/nb"], home=tmp_path, platform="linux", environ=env)
    assert (path.stat().st_uid, path.stat().st_gid) == (USER, USER)
    assert all(each.stat().st_uid == USER for each in path.parent.iterdir())  # the lock file too


def test_a_dangling_symlink_is_refused_and_makes_no_folder(command: str, tmp_path: Path) -> None:
    """A config file that is a link to nothing: exit 3 naming the link, no folder made along its target, the link
    kept; a link to an existing file is written through (the link stays a link)."""
    env = host_env(tmp_path)
    path = tmp_path / ".cursor" / "mcp.json"
    path.parent.mkdir()
    target = tmp_path / "elsewhere" / "deep" / "mcp.json"
    path.symlink_to(target)
    done = run(command, "install", "cursor", "--offline", env=env)
    assert done.returncode == 3
    assert "Traceback" not in done.stderr
    assert f"error: {path} is a symbolic link to {target}, which does not exist" in done.stderr
    assert not (tmp_path / "elsewhere").exists()
    assert path.is_symlink()
    assert sorted(p.name for p in path.parent.iterdir()) == ["mcp.json"]

    target.parent.mkdir(parents=True)
    target.write_text("{}", encoding="utf-8")
    assert run(command, "install", "cursor", "--offline", env=env).returncode == 0
    assert path.is_symlink()
    assert "nano-banana" in json.loads(target.read_text(encoding="utf-8"))["mcpServers"]


# -- what the docs tell ----------------------------------------------------------------------------------------

DOCS = {name: (ROOT / name).read_text(encoding="utf-8") for name in ("README.md", "SKILL.md")}
NEEDS_PYPI = re.compile(r"uvx nano-banana-mcp|uv tool install nano-banana-mcp|pip install nano-banana-mcp")


@pytest.mark.parametrize("doc", DOCS)
def test_docs_offer_only_what_works_from_a_clone(doc: str) -> None:
    """A command that needs the package on PyPI sits in a paragraph marked as what the first release enables; a
    local `claude mcp add` says `-s user`; the OpenClaw skill is installed from a path; no undefined $SKILL_DIR."""
    text = DOCS[doc]
    for paragraph in re.split(r"\n\s*\n", text):
        if NEEDS_PYPI.search(paragraph):
            assert "first PyPI release" in paragraph, paragraph
        for line in paragraph.splitlines():
            if "claude mcp add" in line and " -- " in line:
                assert "-s user" in line, line
            for source in re.findall(r"openclaw skills install (\S+)", line):
                assert source.startswith(("./", "~/", "/")), line
    assert "$SKILL_DIR" not in text
    assert "install openclaw" in text
    if doc == "README.md":
        assert "mcpb pack . nano-banana-mcp.mcpb" in text  # named: `mcpb pack .` alone names it after the folder
        assert all(f"install {host}" in text or f"`{host}`" in text for host in install.HOSTS)
