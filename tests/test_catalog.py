"""The catalogue: one table drives the schema, the refusals and the docs."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import strictyaml
from mcp import Client
from skills_ref.parser import parse_frontmatter
from skills_ref.validator import validate

from nano_banana_mcp import catalog
from nano_banana_mcp.config import Settings
from nano_banana_mcp.errors import InvalidRequest
from nano_banana_mcp.mcp_server import create_server

MODELS = list(catalog.MODELS.values())


@pytest.fixture(scope="module")
async def generate_schema(tmp_path_factory: pytest.TempPathFactory, anyio_backend: str) -> dict[str, Any]:
    """generate_image's input schema as a host reads it from tools/list."""
    root = tmp_path_factory.mktemp("catalog")
    settings = Settings(api_key=None, base_url="https://monet.vision", output_dir=root, data_dir=root)
    async with Client(create_server(settings)) as client:
        tools = await client.list_tools()
    return next(t for t in tools.tools if t.name == "generate_image").input_schema


def _valid(schema: dict[str, Any], arguments: dict[str, Any]) -> bool:
    try:
        jsonschema.validate(arguments, schema)
    except jsonschema.ValidationError:
        return False
    return True


@pytest.mark.parametrize(("model", "ratio"), list(itertools.product(MODELS, catalog.ASPECT_RATIOS)))
def test_schema_and_check_agree_on_aspect_ratios(
    generate_schema: dict[str, Any], model: catalog.Model, ratio: str
) -> None:
    """The JSON schema a host sees and the server's own check accept exactly the model's ratios."""
    accepted = ratio in model.aspect_ratios
    assert _valid(generate_schema, {"prompt": "p", "model": model.name, "aspect_ratio": ratio}) is accepted
    if accepted:
        catalog.check(model.name, prompt="p", aspect_ratio=ratio)
    else:
        with pytest.raises(InvalidRequest) as info:
            catalog.check(model.name, prompt="p", aspect_ratio=ratio)
        message = str(info.value)
        assert ratio in message
        assert ", ".join(model.aspect_ratios) in message  # says what the model does accept


@pytest.mark.parametrize(("model", "resolution"), list(itertools.product(MODELS, catalog.RESOLUTIONS)))
def test_schema_and_check_agree_on_resolutions(
    generate_schema: dict[str, Any], model: catalog.Model, resolution: str
) -> None:
    """A model without a resolution option refuses every resolution, and says which models take one."""
    accepted = resolution in model.resolutions
    assert _valid(generate_schema, {"prompt": "p", "model": model.name, "resolution": resolution}) is accepted
    if accepted:
        catalog.check(model.name, prompt="p", resolution=resolution)
        return
    with pytest.raises(InvalidRequest) as info:
        catalog.check(model.name, prompt="p", resolution=resolution)
    takers = [m.name for m in MODELS if resolution in m.resolutions]
    assert all(name in str(info.value) for name in takers)


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.name)
def test_reference_image_limit(generate_schema: dict[str, Any], model: catalog.Model) -> None:
    """Up to max_images references pass; one more is refused with the limit in the message."""
    at_limit = {"prompt": "p", "model": model.name, "images": ["https://x/a.png"] * model.max_images}
    over = at_limit | {"images": ["https://x/a.png"] * (model.max_images + 1)}
    assert _valid(generate_schema, at_limit)
    assert not _valid(generate_schema, over)
    catalog.check(model.name, prompt="p", image_count=model.max_images)
    with pytest.raises(InvalidRequest, match=f"at most {model.max_images} reference images"):
        catalog.check(model.name, prompt="p", image_count=model.max_images + 1)


def test_absent_model_means_default_rules(generate_schema: dict[str, Any]) -> None:
    """Without a model the default's rules apply, so the schema allows its widest ratio."""
    default = catalog.MODELS[catalog.DEFAULT]
    assert _valid(generate_schema, {"prompt": "p", "aspect_ratio": default.aspect_ratios[-1]})
    assert not _valid(generate_schema, {"prompt": "p", "aspect_ratio": "7:3"})


def test_every_problem_reported_at_once() -> None:
    """One refusal lists all problems, so one correction fixes the call."""
    with pytest.raises(InvalidRequest) as info:
        catalog.check("nano-banana-1", prompt="p", image_count=6, aspect_ratio="21:9", resolution="2K")
    message = str(info.value)
    assert "at most 5" in message
    assert "21:9" in message
    assert "resolution" in message


@pytest.mark.parametrize("prompt", ["", "   ", "x" * (catalog.MAX_PROMPT_CHARS + 1)])
def test_bad_prompts_refused(prompt: str) -> None:
    """Empty and runaway prompts never reach the API."""
    with pytest.raises(InvalidRequest, match="prompt"):
        catalog.check(catalog.DEFAULT, prompt=prompt)


def test_unknown_model_lists_the_models() -> None:
    """An unknown model name is refused with the list of real ones."""
    with pytest.raises(InvalidRequest) as info:
        catalog.check("nano-banana-9", prompt="p")
    assert all(name in str(info.value) for name in catalog.MODELS)


def test_api_input_leaves_out_unset_options() -> None:
    """The create body carries only what the caller chose, in the API's own names."""
    request = catalog.GenerateRequest(prompt="a cat", model="nano-banana-1", aspect_ratio="16:9")
    assert request.api_input() == {"model": "nano-banana-1", "prompt": "a cat", "aspect_ratio": "16:9"}


def test_readme_model_table_matches_the_catalogue() -> None:
    """The README's model table is the catalogue's, character for character."""
    readme = (Path(__file__).parents[1] / "README.md").read_text(encoding="utf-8")
    assert catalog.markdown_table() in readme


def test_skill_model_table_matches_the_catalogue() -> None:
    """SKILL.md teaches agents the catalogue's own table."""
    skill = (Path(__file__).parents[1] / "SKILL.md").read_text(encoding="utf-8")
    assert catalog.markdown_table() in skill


def test_skill_md_passes_the_agent_skills_validator(tmp_path: Path) -> None:
    """The strict Agent Skills validator accepts SKILL.md installed in a folder named after the skill."""
    source = (Path(__file__).parents[1] / "SKILL.md").read_text(encoding="utf-8")
    meta, _ = parse_frontmatter(source)
    folder = tmp_path / meta["name"]
    folder.mkdir()
    (folder / "SKILL.md").write_text(source, encoding="utf-8")
    assert validate(folder) == []
    description = meta["description"]
    assert "\n" not in description
    assert len(description) <= 1024
    assert "<" not in description
    assert ">" not in description
    frontmatter = source.split("---")[1]
    openclaw = strictyaml.load(frontmatter).data["metadata"]["openclaw"]  # block YAML, no flow maps
    assert set(openclaw) <= {"emoji", "homepage", "primaryEnv", "envVars", "requires", "install"}
    assert openclaw["primaryEnv"] == "MONET_API_KEY"  # what skills.entries.nano-banana-mcp.apiKey sets
    # requires.env would hide the skill from an agent without a key, though --offline needs none (issue 24: the key
    # is declared in envVars as not required); the uv install entry is for after the first PyPI release.
    assert set(openclaw["requires"]) == {"bins"}
    assert "$SKILL_DIR" not in source  # never defined by OpenClaw
