"""SKILL.md read as OpenClaw reads it, and checked against ClawHub's schema (issue 24: ClawHub-ready).

The reading is ported from OpenClaw 2026.9.6 (npm ``openclaw@2026.9.6``; the files name the TypeScript sources):

- ``packages/markdown-core/src/frontmatter.ts`` (``dist/frontmatter-BdjKgRi1.mjs`` lines 151-199): BOM and CR
  removed, the block between an opening ``---`` line and the next ``---`` line;
- the same file, lines 14-32 and 83-138: parsed as one YAML mapping, without errors (``src/skills/loading/
  frontmatter.ts`` ``parseSkillFrontmatter`` throws on any issue: the skill is then not loaded); each value becomes a
  string: text trimmed, numbers and booleans spelled out, mappings and lists as their JSON;
- ``src/skills/loading/local-loader.ts`` (``dist/local-loader-DP-Jr6_I.mjs`` lines 179-186): a name and a
  description, both non-empty; a library bundle's description at most 1,024 characters (``dist/bundle-*.mjs`` 128);
- ``src/shared/frontmatter.ts`` (``dist/frontmatter-BdjKgRi1.mjs`` lines 216-246): ``metadata`` parsed as JSON
  (JSON5 as a fallback), its ``openclaw`` object is the manifest; ``requires`` lists;
- ``src/skills/loading/frontmatter.ts`` (``dist/frontmatter-2H_F0IFB.mjs`` lines 13, 26-31, 43-104): ``emoji``,
  ``homepage``, ``primaryEnv`` strings; an install entry of kind ``uv`` is kept only with a ``package`` that matches
  its pattern, and a ``kind`` OpenClaw knows.

ClawHub's schema is ``clawhub@0.23.3`` ``dist/schema/schemas.js`` lines 1010-1041 (``ClawdisSkillMetadataSchema``).
.ci/clients.sh also installs the skill with OpenClaw itself and reads ``openclaw skills info --json``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]  # PyYAML (through moto): OpenClaw parses YAML, strictyaml would not

from nano_banana_mcp import catalog

SKILL = Path(__file__).resolve().parents[1] / "SKILL.md"

_OPENING = re.compile(r"^---[^\S\n]*\n")
_CLOSING = re.compile(r"(?:^|\n)---[^\S\n]*(?:\n|(?![\s\S]))")
_UV_PACKAGE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-[\]=<>!~+,]*$")
_INSTALL_KINDS = ("brew", "node", "go", "uv", "download")  # OpenClaw's parseInstallSpec
_CLAWHUB_INSTALL_KINDS = ("brew", "node", "go", "uv")  # ClawHub's SkillInstallSpecSchema


def openclaw_frontmatter(content: str) -> dict[str, str]:
    """``parseSkillFrontmatter``: the frontmatter's values as the strings OpenClaw keeps; AssertionError where it
    would refuse the skill."""
    normalized = content.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    opening = _OPENING.match(normalized)
    assert opening, "no opening --- line"
    tail = normalized[opening.end() :]
    closing = _CLOSING.search(tail)
    assert closing, "UNTERMINATED_FRONTMATTER: missing closing --- delimiter"
    parsed = yaml.safe_load(tail[: closing.start()])
    assert isinstance(parsed, dict), "INVALID_ROOT: frontmatter must be a YAML mapping"
    kept: dict[str, str] = {}
    for raw_key, value in parsed.items():
        key = str(raw_key).strip()
        if not key or value is None:
            continue
        if isinstance(value, str):
            kept[key] = value.strip()
        elif isinstance(value, bool):
            kept[key] = "true" if value else "false"
        elif isinstance(value, int | float):
            kept[key] = str(value)
        else:
            kept[key] = json.dumps(value, ensure_ascii=False)
    return kept


def openclaw_manifest(frontmatter: dict[str, str]) -> dict[str, Any]:
    """``resolveOpenClawManifestBlock``: the ``openclaw`` object of ``metadata``."""
    metadata = json.loads(frontmatter["metadata"])
    manifest = metadata.get("openclaw")
    assert isinstance(manifest, dict), "no metadata.openclaw object"
    return manifest


def string_list(value: Any) -> list[str]:
    """``normalizeStringList``: a list of strings, or comma-separated text."""
    if isinstance(value, list):
        return [str(v).strip() for v in value if str(v).strip()]
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return []


def kept_install(entry: Any) -> dict[str, Any] | None:
    """``parseInstallSpec`` for what this skill uses (kind, id, label, bins, package): None where OpenClaw drops it."""
    if not isinstance(entry, dict):
        return None
    kind = str(entry.get("kind") or entry.get("type") or "").strip().lower()
    if kind not in _INSTALL_KINDS:
        return None
    spec: dict[str, Any] = {"kind": kind}
    for key in ("id", "label"):
        if isinstance(entry.get(key), str):
            spec[key] = entry[key]
    if bins := string_list(entry.get("bins")):
        spec["bins"] = bins
    package = str(entry.get("package") or "").strip()
    if kind == "uv":
        if not package or package.startswith("-") or "\\" in package or "://" in package:
            return None
        if not _UV_PACKAGE.match(package):
            return None
        spec["package"] = package
    return spec


def test_openclaw_loads_the_skill_with_its_name_and_description() -> None:
    frontmatter = openclaw_frontmatter(SKILL.read_text(encoding="utf-8"))
    assert frontmatter["name"] == "nano-banana-mcp"
    description = frontmatter["description"]
    assert 0 < len(description) <= 1024


def test_the_description_matches_what_people_search_clawhub_for() -> None:
    """The exact name, every model's name and title, and "image"."""
    description = openclaw_frontmatter(SKILL.read_text(encoding="utf-8"))["description"]
    assert "nano-banana-mcp" in description
    for model in catalog.MODELS.values():
        assert model.name in description
        assert model.title in description
    assert re.search(r"\bimages?\b", description)


def test_the_openclaw_manifest_is_clawhub_ready() -> None:
    """primaryEnv and envVars (the key is not required: offline works without it), requires.bins, the uv install
    entry for after the first release, homepage and emoji; as OpenClaw keeps them and as ClawHub's schema takes
    them."""
    manifest = openclaw_manifest(openclaw_frontmatter(SKILL.read_text(encoding="utf-8")))
    assert manifest["primaryEnv"] == "MONET_API_KEY"
    assert isinstance(manifest["emoji"], str) and manifest["emoji"]
    assert isinstance(manifest["homepage"], str) and manifest["homepage"].startswith("https://")

    requires = manifest["requires"]
    assert string_list(requires.get("bins")) == ["nano-banana-mcp"]
    assert string_list(requires.get("env")) == []  # a key would hide the skill from offline use

    [install] = manifest["install"]
    assert kept_install(install) == {
        "kind": "uv",
        "id": "uv",
        "label": install["label"],
        "bins": ["nano-banana-mcp"],
        "package": "nano-banana-mcp",
    }
    assert install["kind"] in _CLAWHUB_INSTALL_KINDS
    assert set(install) <= {"id", "kind", "label", "bins", "formula", "tap", "package", "module"}

    env_vars = manifest["envVars"]
    assert isinstance(env_vars, list)
    for declared in env_vars:
        assert set(declared) <= {"name", "required", "description"}
        assert isinstance(declared["name"], str)
        assert isinstance(declared.get("required", False), bool)
        assert isinstance(declared.get("description", ""), str)
    assert {d["name"]: d.get("required") for d in env_vars} == {"MONET_API_KEY": False}
    assert set(manifest) <= {
        "always",
        "skillKey",
        "primaryEnv",
        "emoji",
        "homepage",
        "os",
        "requires",
        "install",
        "envVars",
    }


def test_the_port_refuses_what_openclaw_refuses() -> None:
    """The parser is not vacuous: an unterminated block, a YAML error and a bad uv package are refused."""
    for broken in ("---\nname: x\n", "---\nname: [x\n---\n"):
        try:
            openclaw_frontmatter(broken)
        except (AssertionError, yaml.YAMLError):
            continue
        raise AssertionError(f"accepted {broken!r}")
    assert kept_install({"kind": "uv", "package": "https://evil.example/x"}) is None
    assert kept_install({"kind": "uv"}) is None
    assert kept_install({"kind": "pipx", "package": "x"}) is None
    assert openclaw_frontmatter("\ufeff---\r\nname: x\r\ndescription: y\r\n---\r\nbody") == {
        "name": "x",
        "description": "y",
    }
