"""Named reference sets through the service, on a real runtime against the emulator: made once, used by name in later
calls (after a restart, on another replica, never by another tenant), expanded before anything is paid, renewed at
the API from the kept copy when its upload has expired."""

from __future__ import annotations

import base64
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from pydantic import SecretStr

from nano_banana_mcp.catalog import GenerateRequest
from nano_banana_mcp.config import Settings
from nano_banana_mcp.emulator import Emulator
from nano_banana_mcp.errors import InvalidRequest, NanoBananaError
from nano_banana_mcp.images.provenance import read_provenance
from nano_banana_mcp.runtime import open_service
from nano_banana_mcp.tasks.records import now
from nano_banana_mcp.tasks.sets import MAX_SET_IMAGES, MAX_SETS, SetNotFound

if TYPE_CHECKING:
    from tests.conftest import MakePng, MakeSettings

pytestmark = pytest.mark.anyio

HERO = "nano-banana://sets/hero"


def pngs(png: MakePng, folder: Path, n: int) -> list[Path]:
    """``n`` small PNGs, each different (so each is its own image in a set)."""
    return [png(folder / f"ref-{i}.png", (16 + i, 16)) for i in range(n)]


def created_inputs(emulator: Emulator) -> list[list[str]]:
    """The ``images`` of every task the emulator created, in order."""
    return [list(task.input.get("images") or []) for task in emulator.state.tasks.values()]


async def test_a_set_made_once_is_used_after_a_restart_in_order_with_other_references(
    settings: Settings, emulator: Emulator, png: MakePng, tmp_path: Path
) -> None:
    """A set made by one process is used by name by the next one: its images in order, mixed with another reference,
    one create, and the result (structured and in the file) names the set."""
    character = pngs(png, tmp_path / "hero", 3)
    prop = png(tmp_path / "prop.png", (40, 20))
    async with open_service(settings) as service:
        urls = [(await service.upload(str(p), into="Hero")).url for p in character]  # names are case-folded
    assert emulator.uploads == 3

    async with open_service(settings) as service:  # a restart: nothing of the set is in memory
        listed = await service.sets.list_sets("default")
        assert [(s.name, s.uri, s.size) for s in listed.sets] == [("hero", HERO, 3)]
        result = await service.generate(GenerateRequest(prompt="the hero", images=(str(prop), HERO)), 30)

    assert result.status == "success", result.error
    assert result.sets == [HERO]
    [sent] = created_inputs(emulator)
    assert sent[1:] == urls  # the set's uploads, still valid, in the order they were added, after the prop
    assert emulator.creates == 1
    assert emulator.uploads == 4  # the prop only
    assert read_provenance(Path(result.images[0].path or ""))["reference_sets"] == HERO


async def test_a_set_over_the_models_limit_is_refused_before_any_upload_or_create(
    settings: Settings, emulator: Emulator, png: MakePng, tmp_path: Path
) -> None:
    """nano-banana-1 takes 5 references: a set of 4 with 2 more is refused, naming the set, its size and the limit,
    before anything is uploaded or created; the same request on nano-banana-2 goes through."""
    async with open_service(settings) as service:
        for path in pngs(png, tmp_path / "hero", 4):
            await service.sets.add("hero", await service.references.read_one(str(path), None, "default"), "default")
        extra = [str(p) for p in pngs(png, tmp_path / "extra", 2)]
        request = GenerateRequest(prompt="too many", model="nano-banana-1", images=(HERO, *extra))
        with pytest.raises(InvalidRequest) as refused:
            await service.submit(request)
        assert emulator.creates == 0 and emulator.uploads == 0
        message = str(refused.value)
        assert "'hero' has 4 images" in message and "nano-banana-1 takes at most 5" in message
        assert "\n" not in message
        ok = await service.generate(request.model_copy(update={"model": "nano-banana-2"}), 30)
    assert ok.status == "success" and emulator.creates == 1
    assert len(created_inputs(emulator)[0]) == 6


async def test_an_expired_upload_is_renewed_from_the_kept_copy_before_the_create(
    settings: Settings, emulator: Emulator, png: MakePng, tmp_path: Path
) -> None:
    """A day later the set's upload is gone at the API: the image is uploaded again from the kept copy before the
    create, which the API accepts at once; no create is ever refused or sent twice."""
    [path] = pngs(png, tmp_path, 1)
    async with open_service(settings) as service:
        first = await service.upload(str(path), into="hero")
        # 24 hours pass: the API forgets the upload, and the cache's entry is past its expiry.
        assert emulator.expire_uploads() == 1
        await service.ledger.remember_upload(first.sha256, first.url, now() - timedelta(minutes=1), tenant="default")
        result = await service.generate(GenerateRequest(prompt="a day later", images=(HERO,)), 30)
    assert result.status == "success", result.error
    [sent] = created_inputs(emulator)
    assert sent != [first.url] and len(sent) == 1
    assert emulator.uploads == 2
    creates = [r for r in emulator.requests if r.method == "POST" and "/tasks/" in r.path]
    assert [r.status for r in creates] == [200]  # one create, accepted: the renewal came before it


async def test_a_set_is_blind_across_tenants(
    settings: Settings, emulator: Emulator, png: MakePng, tmp_path: Path
) -> None:
    """Alice's set does not exist for bob: not listed, not readable, not usable, with the very words a name nobody
    made gets; bob's own set of the same name is his, and alice's is untouched."""
    mine, his = pngs(png, tmp_path, 2)
    async with open_service(settings) as service:
        await service.sets.add("hero", await service.references.read_one(str(mine), None, "alice"), "alice")
        assert (await service.sets.list_sets("bob")).sets == []

        async def refusal(name: str) -> str:
            with pytest.raises(SetNotFound) as caught:
                await service.submit(GenerateRequest(prompt="x", images=(f"nano-banana://sets/{name}",)), tenant="bob")
            return str(caught.value).replace(name, "<name>")

        assert await refusal("hero") == await refusal("nobody")
        for read in (service.sets.get("hero", "bob"), service.sets.image("hero", 0, "bob")):
            with pytest.raises(SetNotFound):
                await read
        with pytest.raises(SetNotFound):
            await service.sets.remove("hero", None, "bob")
        assert emulator.creates == 0

        await service.sets.add("hero", await service.references.read_one(str(his), None, "bob"), "bob")
        alice_set, bob_set = await service.sets.get("hero", "alice"), await service.sets.get("hero", "bob")
    assert alice_set.images[0].sha256 != bob_set.images[0].sha256
    assert len(alice_set.images) == len(bob_set.images) == 1


async def test_two_replicas_on_one_database_and_bucket_share_a_set(
    tmp_path: Path,
    emulator: Emulator,
    png: MakePng,
    database_url: str,
    storage_url: str,
    make_settings: MakeSettings,
) -> None:
    """A set made on one replica (PostgreSQL, images in a bucket) is listed, read and used on another, which has
    none of its files on disk."""

    def replica(name: str) -> Settings:
        own = make_settings(emulator.base_url, tmp_path / name)
        return own.model_copy(update={"database_url": SecretStr(database_url), "storage_url": storage_url})

    character = pngs(png, tmp_path / "a" / "refs", 2)
    async with open_service(replica("a")) as a, open_service(replica("b")) as b:
        for path in character:
            await a.upload(str(path), into="hero")
        shown = await b.sets.get("HERO", "default")
        assert [i.sha256 for i in shown.images] == [
            (await a.sets.get("hero", "default")).images[i].sha256 for i in range(2)
        ]
        assert await b.sets.image("hero", 1, "default") == character[1].read_bytes()
        result = await b.generate(GenerateRequest(prompt="on the other replica", images=(HERO,)), 30)
    assert result.status == "success", result.error
    assert result.sets == [HERO]
    assert emulator.creates == 1
    assert not (tmp_path / "b" / "out" / "references").exists()  # b read the bucket, not a folder of its own


async def test_the_bounds_each_refuse_in_one_line(
    settings: Settings, emulator: Emulator, png: MakePng, tmp_path: Path
) -> None:
    """Names are short, printable and case-folded; a set keeps 14 images, a tenant 100 sets, an image up to the
    reference limit: each past that is refused in one line saying what to do."""
    images = pngs(png, tmp_path, MAX_SET_IMAGES + 1)
    small = settings.model_copy(update={"max_reference_bytes": 10_000})
    async with open_service(small) as service:
        refs = [await service.references.read_one(str(p), None, "default") for p in images]
        problems: list[NanoBananaError] = []
        for bad in ("", "a" * 33, "hé", "two words", "../up", "-dash", "tab\there"):
            with pytest.raises(InvalidRequest) as caught:
                await service.sets.add(bad, refs[0], "default")
            problems.append(caught.value)
        for ref in refs[:MAX_SET_IMAGES]:
            await service.sets.add("Full", ref, "default")
        again = await service.sets.add("full", refs[0], "default")  # the same image again: not added twice
        assert again == (await service.sets.get("FULL", "default"), 0)
        with pytest.raises(InvalidRequest) as full:
            await service.sets.add("full", refs[MAX_SET_IMAGES], "default")
        problems.append(full.value)
        assert "is full" in str(full.value)

        for n in range(MAX_SETS - 1):
            await service.sets.add(f"s{n}", refs[0], "default")
        with pytest.raises(InvalidRequest) as too_many:
            await service.sets.add("one-more", refs[0], "default")
        problems.append(too_many.value)
        assert f"{MAX_SETS} sets" in str(too_many.value)
        await service.sets.add("s0", refs[1], "default")  # an existing set still takes images

        big = png(tmp_path / "big.png", (400, 400))
        big.write_bytes(big.read_bytes() + b"\0" * 20_000)
        with pytest.raises(NanoBananaError) as too_big:
            await service.upload(str(big), into="s1")
        problems.append(too_big.value)
        assert "limit" in str(too_big.value)
    assert emulator.uploads == 0
    for problem in problems:
        assert "\n" not in str(problem) and len(str(problem)) < 300, problem


async def test_images_are_removed_by_index_or_with_their_set(
    settings: Settings, emulator: Emulator, png: MakePng, tmp_path: Path
) -> None:
    """Removing image 1 closes the gap (the set expands in its new order); removing the set forgets it."""
    images = pngs(png, tmp_path, 3)
    async with open_service(settings) as service:
        for path in images:
            await service.upload(str(path), into="hero")
        before = await service.sets.get("hero", "default")
        left = await service.sets.remove("hero", 1, "default")
        assert left is not None
        assert [i.sha256 for i in left.images] == [before.images[0].sha256, before.images[2].sha256]
        assert [i.uri for i in left.images] == [f"{HERO}/images/0", f"{HERO}/images/1"]
        with pytest.raises(InvalidRequest, match="no image 2"):
            await service.sets.remove("hero", 2, "default")
        assert await service.sets.remove("hero", None, "default") is None
        assert (await service.sets.list_sets("default")).sets == []
        with pytest.raises(SetNotFound):
            await service.submit(GenerateRequest(prompt="gone", images=(HERO,)))
    assert emulator.creates == 0


async def test_any_reference_joins_a_set_but_urls_only_from_allowed_hosts(
    settings: Settings, emulator: Emulator, png: MakePng, tmp_path: Path
) -> None:
    """A data: URI, an earlier result and a URL of the API's own files join a set as kept copies; a URL of a host
    off the download allowlist is refused in one line, and nothing is fetched from it."""
    data_uri = "data:image/png;base64," + base64.b64encode(png(tmp_path / "d.png", (9, 9)).read_bytes()).decode()
    async with open_service(settings) as service:
        made = await service.generate(GenerateRequest(prompt="a result"), 30)
        uploaded = await service.upload(str(png(tmp_path / "u.png", (11, 11))))
        for ref in (data_uri, made.images[0].uri or "", uploaded.url):
            await service.upload(ref, into="mixed")
        kept = await service.sets.get("mixed", "default")
        with pytest.raises(InvalidRequest) as refused:
            await service.upload("https://example.com/hero.png", into="mixed")
    assert len(kept.images) == 3
    assert "download allowlist" in str(refused.value) and "\n" not in str(refused.value)
    assert not any("example.com" in r.path for r in emulator.requests)
