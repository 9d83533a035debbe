"""The MCP Bundle (manifest.json, .mcpbignore) against the real server, and what real clients saw.

`.ci/clients.sh` packs the bundle and drives the server with the MCP Inspector CLI (over stdio, over HTTP,
and as Claude Desktop would start the bundle), saving the results in `.ci/.out/`; CI runs it before pytest.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from PIL import Image

from nano_banana_mcp import catalog
from nano_banana_mcp.config import Settings
from nano_banana_mcp.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
MANIFEST: dict[str, Any] = json.loads((ROOT / "manifest.json").read_text(encoding="utf-8"))
OUT = ROOT / ".ci" / ".out"
MCPB_SCHEMA = ROOT / ".ci/.node/node_modules/@anthropic-ai/mcpb/dist/mcpb-manifest-v0.4.schema.json"
PLACEHOLDER = re.compile(r"\$\{([^}]+)\}")


def declared_tools() -> list[str]:
    return [tool["name"] for tool in MANIFEST["tools"]]


def client_outputs(*names: str) -> list[Path]:
    """The named files of `.ci/clients.sh`; skipped (failed under CI) when it has not been run."""
    paths = [OUT / name for name in names]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        reason = f"no {', '.join(missing)} in .ci/.out/: run `bash .ci/clients.sh` to drive the real clients"
        if os.environ.get("CI"):
            pytest.fail(f"{reason} (CI runs it before pytest)")
        pytest.skip(reason)
    return paths


# -- the manifest against the server -------------------------------------------------------------


@pytest.mark.anyio
async def test_manifest_declares_exactly_the_servers_tools(mcp_client: Client) -> None:
    """The manifest lists the tools `tools/list` returns, in order, each described by the start of its description."""
    tools = (await mcp_client.list_tools()).tools
    assert declared_tools() == [t.name for t in tools]
    for declared, tool in zip(MANIFEST["tools"], tools, strict=True):
        assert declared["description"].strip(), tool.name
        assert (tool.description or "").startswith(declared["description"]), (
            f"{tool.name}: manifest.json says {declared['description']!r}, the server says {tool.description!r}"
        )


def test_manifest_version_is_the_packages() -> None:
    """The bundle and the Python package carry one version."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert MANIFEST["version"] == pyproject["project"]["version"]
    assert MANIFEST["name"] == pyproject["project"]["name"]
    assert MANIFEST["license"] == pyproject["project"]["license"]


def test_manifest_runs_the_bundled_project_with_uv() -> None:
    """A 0.4 `uv` server: the host runs the console script from the unpacked bundle, no key on the command line."""
    server = MANIFEST["server"]
    assert MANIFEST["manifest_version"] == "0.4"
    assert server["type"] == "uv"
    assert (ROOT / server["entry_point"]).is_file()
    config = server["mcp_config"]
    assert config["command"] == "uv"
    assert config["args"] == ["run", "--directory", "${__dirname}", "nano-banana-mcp"]
    assert not any("api_key" in arg for arg in config["args"])
    assert MANIFEST["compatibility"]["runtimes"]["python"] == ">=3.11"
    assert set(MANIFEST["compatibility"]["platforms"]) == {"darwin", "win32", "linux"}


def test_user_config_maps_to_the_servers_settings() -> None:
    """The key is sensitive and optional; each setting reaches its environment variable, and every option is used."""
    options = MANIFEST["user_config"]
    api_key = options["api_key"]
    assert (api_key["type"], api_key["sensitive"], api_key["required"]) == ("string", True, False)
    assert options["output_dir"]["type"] == "directory"
    assert options["offline"]["type"] == "boolean"
    env = MANIFEST["server"]["mcp_config"]["env"]
    assert env == {
        "MONET_API_KEY": "${user_config.api_key}",
        "NANO_BANANA_OUTPUT_DIR": "${user_config.output_dir}",
        "NANO_BANANA_OFFLINE": "${user_config.offline}",
    }
    used = {name.removeprefix("user_config.") for value in env.values() for name in PLACEHOLDER.findall(value)}
    assert used == set(options)


def test_user_config_defaults_work_as_the_host_passes_them() -> None:
    """Defaults reach the server verbatim (hosts don't expand `${HOME}` in them: mcpb#251), and mean what they say.

    An untouched key arrives as "", which is no key; the output folder arrives as `~/...`, which the server
    expands; the offline switch arrives as "true"/"false".
    """
    defaults = {name: option.get("default") for name, option in MANIFEST["user_config"].items()}
    assert not any(PLACEHOLDER.search(str(value)) for value in defaults.values()), defaults
    assert defaults["api_key"] == ""
    with pytest.raises(ConfigError):
        Settings(api_key=defaults["api_key"]).require_key()
    assert (
        Settings(output_dir=defaults["output_dir"]).output_dir == (Path.home() / "Pictures" / "nano-banana").resolve()
    )
    assert defaults["offline"] is False
    as_text: list[dict[str, Any]] = [{"offline": "false"}, {"offline": "true"}]  # as the environment gives them
    assert [Settings(**raw).offline for raw in as_text] == [False, True]


def test_manifest_model_table_is_the_catalogue() -> None:
    """The long description shows the catalogue's model table, character for character."""
    assert catalog.markdown_table() in MANIFEST["long_description"]


def test_manifest_validates_against_the_mcpb_schema() -> None:
    """The manifest passes the 0.4 JSON schema shipped in @anthropic-ai/mcpb (installed by .ci/clients.sh)."""
    if not MCPB_SCHEMA.is_file():
        pytest.skip("@anthropic-ai/mcpb is not in .ci/.node/: run `bash .ci/clients.sh` (it also runs `mcpb validate`)")
    jsonschema = pytest.importorskip("jsonschema")
    jsonschema.validate(MANIFEST, json.loads(MCPB_SCHEMA.read_text(encoding="utf-8")))


# -- what the bundle carries -------------------------------------------------------------------------

HEAVY_OR_PRIVATE = [".venv", "__pycache__", ".pytest_cache", ".ruff_cache", ".hypothesis", ".git", "*.egg-info"]
ROOT_ONLY = ["/tests", "/bench", "/dist", "/.ci", "/docs"]
NOT_FOR_THE_HOST = ["SKILL.md", "SECURITY.md", "server.json"]


def test_mcpbignore_leaves_out_heavy_and_private_folders() -> None:
    """.mcpbignore names every environment, cache, test, benchmark, CI and build folder."""
    patterns = {
        line.strip()
        for line in (ROOT / ".mcpbignore").read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.startswith("#")
    }
    missing = [p for p in HEAVY_OR_PRIVATE + ROOT_ONLY + [f"/{name}" for name in NOT_FOR_THE_HOST] if p not in patterns]
    assert not missing, f".mcpbignore lacks {missing}"


def test_packed_bundle_carried_only_the_server() -> None:
    """The bundle `mcpb pack` made holds the server, pyproject.toml and README.md (and uv.lock when there is one),
    and none of the excluded folders and files (the example image, the skill, the security notes, server.json)."""
    [listing] = client_outputs("mcpb-contents.txt")
    names = listing.read_text(encoding="utf-8").split()
    excluded = {p.strip("/").removeprefix("*") for p in HEAVY_OR_PRIVATE + ROOT_ONLY}
    leaked = [n for n in names if any(part.endswith(tuple(excluded)) for part in n.split("/")[:-1])]
    assert not leaked
    assert not set(NOT_FOR_THE_HOST) & set(names)
    assert {
        "manifest.json",
        "pyproject.toml",
        "README.md",
        "server/nano_banana_mcp/mcp_server/app.py",
        "server/nano_banana_mcp/mcp_server/viewer/viewer.html",
    } <= set(names)
    assert ("uv.lock" in names) == (ROOT / "uv.lock").is_file()  # the release workflow locks before packing


# -- what the MCP Inspector saw -------------------------------------------------------------------


@pytest.mark.parametrize("transport", ["stdio", "http", "bundle"])
def test_inspector_listed_the_tools_and_generated_an_image(transport: str) -> None:
    """The Inspector CLI got the manifest's tools and a saved offline image, over each way a host connects."""
    tools_file, generate_file = client_outputs(
        f"inspector-{transport}-tools.json", f"inspector-{transport}-generate.json"
    )
    stale = "(stale? re-run `bash .ci/clients.sh`)"
    tools = json.loads(tools_file.read_text(encoding="utf-8"))["tools"]
    assert [t["name"] for t in tools] == declared_tools(), stale

    result = json.loads(generate_file.read_text(encoding="utf-8"))
    assert result.get("isError") is False, result["content"]
    data = result["structuredContent"]
    assert data["status"] == "success"
    assert data["offline"] is True
    [image] = data["images"]
    path = Path(image["path"])
    assert path.is_file(), f"{path} is gone {stale}"
    assert path.is_relative_to(OUT), path
    assert path.stat().st_size == image["size_bytes"]
    with Image.open(path) as im:
        assert im.size == (image["width"], image["height"]) == (1024, 576)  # the 16:9 asked for
    kinds = [block["type"] for block in result["content"]]
    assert kinds[0] == "text"
    assert "image" in kinds
    assert str(path) in result["content"][0]["text"]


# -- the MCP Registry's server.json ---------------------------------------------------------------------------

SERVER_JSON: dict[str, Any] = json.loads((ROOT / "server.json").read_text(encoding="utf-8"))
REGISTRY_NAME = re.compile(r"^[a-zA-Z0-9.-]+/[a-zA-Z0-9._-]+$")  # the registry schema's `name` pattern


def test_server_json_has_the_registrys_required_fields_and_pyprojects_values() -> None:
    """server.json (published by the release workflow) names the package pyproject.toml builds, at its version.

    The registry's JSON schema is not shipped in a package we can install, so its rules are checked here: name in
    reverse-DNS form with one slash, description of at most 100 characters, a PyPI package over stdio with an exact
    version. The release workflow also runs `mcp-publisher validate` on it.
    """
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert SERVER_JSON["$schema"].startswith("https://static.modelcontextprotocol.io/schemas/")
    assert REGISTRY_NAME.fullmatch(SERVER_JSON["name"])
    assert SERVER_JSON["name"].startswith("io.github.")  # GitHub OIDC login grants io.github.<owner>/*
    assert SERVER_JSON["name"].endswith("/" + project["name"])
    assert SERVER_JSON["description"] == project["description"]
    assert 1 <= len(SERVER_JSON["description"]) <= 100
    assert SERVER_JSON["version"] == project["version"] == MANIFEST["version"]
    [package] = SERVER_JSON["packages"]
    assert (package["registryType"], package["identifier"]) == ("pypi", project["name"])
    assert package["version"] == project["version"]
    assert package["transport"] == {"type": "stdio"}
    assert SERVER_JSON["repository"]["source"] == "github"


def test_server_json_environment_is_what_the_server_reads() -> None:
    """Each variable it declares is a setting the server reads; the key is secret and optional (offline mode)."""
    [package] = SERVER_JSON["packages"]
    declared = {var["name"]: var for var in package["environmentVariables"]}
    assert declared["MONET_API_KEY"]["isSecret"] is True
    assert declared["MONET_API_KEY"]["isRequired"] is False
    for name in declared:
        field = "api_key" if name == "MONET_API_KEY" else name.removeprefix("NANO_BANANA_").lower()
        assert field in Settings.model_fields, name


def test_readme_carries_the_registry_ownership_marker() -> None:
    """The MCP Registry accepts a PyPI package only if its description (README.md) says `mcp-name: <name>`."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert re.search(rf"mcp-name: {re.escape(SERVER_JSON['name'])}(\s|-->)", readme)
