"""`nano-banana-mcp sets add|list|show|remove`: the sets the server uses, made and kept from the command line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from nano_banana_mcp.cli import main
from nano_banana_mcp.emulator import Emulator

if TYPE_CHECKING:
    from tests.conftest import MakePng

Run = tuple[int, str, str]


@pytest.fixture
def folders(tmp_path: Path) -> list[str]:
    """The settings flags of one machine's CLI: its data and output folders, and where images may be read."""
    return ["--data-dir", str(tmp_path / "data"), "--out", str(tmp_path / "out"), "--allowed-dir", str(tmp_path)]


def run(capsys: pytest.CaptureFixture[str], *args: str) -> Run:
    """``nano-banana-mcp ARGS`` in this process: its exit code, stdout and stderr."""
    with pytest.raises(SystemExit) as ended:
        main(list(args))
    out, err = capsys.readouterr()
    return int(ended.value.code or 0), out, err


def test_add_list_show_and_remove(
    tmp_path: Path, png: MakePng, folders: list[str], capsys: pytest.CaptureFixture[str], emulator: Emulator
) -> None:
    """A set is made from files (no key needed: nothing is uploaded until it is used), listed, shown numbered from 0,
    and emptied one image or all at once; each mistake is one line with exit code 2."""
    images = [str(png(tmp_path / f"hero-{i}.png", (20 + i, 20))) for i in range(3)]
    code, out, err = run(capsys, "sets", "add", "Hero", *images, *folders)
    assert code == 0, err
    assert out.splitlines()[0] == "nano-banana://sets/hero: 3 images"

    code, out, _ = run(capsys, "sets", "list", "--json", *folders)
    listed = json.loads(out)
    assert [(s["name"], s["uri"], s["size"]) for s in listed["sets"]] == [("hero", "nano-banana://sets/hero", 3)]

    code, out, _ = run(capsys, "sets", "show", "HERO", "--json", *folders)
    shown = json.loads(out)
    assert [i["uri"] for i in shown["images"]] == [f"nano-banana://sets/hero/images/{n}" for n in range(3)]

    code, out, _ = run(capsys, "sets", "remove", "hero", "1", *folders)
    assert code == 0 and out.splitlines()[0] == "nano-banana://sets/hero: 2 images"

    for args, words in (
        (("sets", "remove", "hero", "5"), "no image 5"),
        (("sets", "show", "villain"), "There is no set 'villain'"),
        (("sets", "add", "two words", images[0]), "is not usable"),
        (("sets", "remove", "hero", "-1"), "not an image number"),
    ):
        code, out, err = run(capsys, *args, *folders)
        assert code == 2, (args, err)
        assert words in err and len(err.strip().splitlines()) == 1, err

    code, out, _ = run(capsys, "sets", "remove", "hero", *folders)
    assert code == 0 and out.strip() == "Removed set hero."
    code, out, err = run(capsys, "sets", "list", *folders)
    assert code == 0 and out == "" and "No sets yet" in err
    assert emulator.uploads == 0


def test_a_set_made_on_the_command_line_is_used_by_generate(
    tmp_path: Path,
    png: MakePng,
    folders: list[str],
    capsys: pytest.CaptureFixture[str],
    emulator: Emulator,
    api_key: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`generate --image nano-banana://sets/hero` sends the set's images: uploaded once, in order, one create."""
    monkeypatch.setenv("MONET_API_KEY", api_key)
    monkeypatch.setenv("MONET_BASE_URL", emulator.base_url or "")
    images = [str(png(tmp_path / f"hero-{i}.png", (30 + i, 20))) for i in range(2)]
    assert run(capsys, "sets", "add", "hero", *images, *folders)[0] == 0
    code, out, err = run(capsys, "generate", "the hero", "--image", "nano-banana://sets/hero", "--json", *folders)
    assert code == 0, err
    assert json.loads(out)["sets"] == ["nano-banana://sets/hero"]
    [task] = emulator.state.tasks.values()
    assert len(task.input["images"]) == 2
    assert (emulator.creates, emulator.uploads) == (1, 2)
