"""Images in object storage (NANO_BANANA_STORAGE_URL): a real S3 API (moto's server on loopback), reached the way any
S3-compatible service is, through the standard AWS variables."""

from __future__ import annotations

import io
import json
import logging
import sqlite3
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import httpx
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError
from mcp_types import BlobResourceContents
from PIL import Image

from nano_banana_mcp.catalog import GenerateRequest
from nano_banana_mcp.config import Settings
from nano_banana_mcp.errors import ConfigError
from nano_banana_mcp.mcp_server import create_server
from nano_banana_mcp.runtime import open_service

pytestmark = pytest.mark.anyio


@pytest.fixture
def bucket_settings(settings: Settings, storage_url: str) -> Settings:
    return settings.model_copy(update={"storage_url": storage_url, "storage_link_seconds": 600})


@pytest.fixture
async def client(bucket_settings: Settings) -> AsyncIterator[Client]:
    async with Client(create_server(bucket_settings), read_timeout_seconds=30) as client:
        yield client


def _bucket_and_prefix(storage_url: str) -> tuple[str, str]:
    _, _, bucket, prefix = storage_url.split("/", 3)
    return bucket, prefix


async def test_images_are_kept_in_the_bucket_and_given_as_presigned_links(
    client: Client, bucket_settings: Settings, storage_url: str, s3_server: Any
) -> None:
    """A saved image lives in the bucket under the prefix, not on the replica's disk; the result's url is a link to
    it that works without credentials until url_expires_at; the preview and the resource come from the bucket."""
    before = datetime.now(UTC)
    result = await client.call_tool("generate_image", {"prompt": "a banana in a bucket", "count": 2})
    data = result.structured_content
    assert data["status"] == "success"
    bucket, prefix = _bucket_and_prefix(storage_url)
    keys = s3_server.keys(bucket)
    assert len(keys) == 2
    assert all(key.startswith(f"{prefix}/nano-banana-") for key in keys)
    assert sorted(image["path"] for image in data["images"]) == [f"s3://{bucket}/{key}" for key in keys]
    assert data["output_dir"] == f"s3://{bucket}/{prefix}/"
    on_disk = [p for p in bucket_settings.output_dir.rglob("*") if p.is_file()]
    staged = [p for p in (bucket_settings.data_dir / "staging").rglob("*") if p.is_file()]
    assert on_disk == [] and staged == []

    for image in data["images"]:
        expires = datetime.fromisoformat(image["url_expires_at"])
        assert before + timedelta(seconds=590) < expires < datetime.now(UTC) + timedelta(seconds=610)
        got = httpx.get(image["url"])  # no credentials: the signature in the link is the permission
        assert got.status_code == 200
        with Image.open(io.BytesIO(got.content)) as im:
            assert (im.width, im.height) == (image["width"], image["height"])
        [content] = (await client.read_resource(image["uri"])).contents
        assert isinstance(content, BlobResourceContents)
        assert content.blob  # base64 of the same bytes
        assert len(got.content) == image["size_bytes"]
    assert [block.type for block in result.content].count("image") == 2  # previews, made from the bucket's bytes


async def test_an_image_in_the_bucket_can_be_edited_by_its_uri(client: Client) -> None:
    """An earlier result in the bucket is a reference like any other: its nano-banana:// URI is read from there."""
    first = await client.call_tool("generate_image", {"prompt": "a plain banana"})
    uri = first.structured_content["images"][0]["uri"]
    edit = await client.call_tool("generate_image", {"prompt": "make it blue", "images": [uri]})
    assert edit.structured_content["status"] == "success", edit.structured_content


async def test_a_ledger_row_pointing_outside_the_bucket_prefix_is_not_served(
    client: Client, bucket_settings: Settings, storage_url: str, s3_server: Any
) -> None:
    """The ledger is not trusted: a row edited to another object of the bucket, outside the prefix, is refused."""
    bucket, _ = _bucket_and_prefix(storage_url)
    s3_server.client().put_object(Bucket=bucket, Key="private/secret.png", Body=b"not for you")
    result = await client.call_tool("generate_image", {"prompt": "mine"})
    task_id = result.structured_content["task_id"]
    path = result.structured_content["images"][0]["path"]
    db = sqlite3.connect(bucket_settings.data_dir / "ledger.sqlite3")
    images = db.execute("SELECT images FROM tasks WHERE task_id=?", (task_id,)).fetchone()[0]
    db.execute(
        "UPDATE tasks SET images=? WHERE task_id=?",
        (images.replace(path, f"s3://{bucket}/private/secret.png"), task_id),
    )
    db.commit()
    db.close()
    with pytest.raises(MCPError, match="not in s3://"):
        await client.read_resource(f"nano-banana://tasks/{task_id}/images/0")


async def test_a_bucket_lost_while_serving_keeps_the_task_until_it_is_back(
    bucket_settings: Settings, storage_url: str, s3_server: Any, emulator: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A bucket that cannot be written any more keeps the task, says why, and saves it once it can: nothing is lost,
    the image is downloaded from the API once (kept on the replica's disk meanwhile: the API's URL may expire), and
    the error names neither the secret key nor the access key."""
    bucket, _ = _bucket_and_prefix(storage_url)
    caplog.set_level(logging.INFO)
    async with open_service(bucket_settings) as service:
        s3_server.client().delete_bucket(Bucket=bucket)
        result = await service.generate(GenerateRequest(prompt="patience"), wait_seconds=3)
        assert result.status == "running"
        assert result.error is not None
        assert f"could not be stored in s3://{bucket}/images/" in result.error
        s3_server.client().create_bucket(Bucket=bucket)
        done = await service.wait(result.task_id, wait_seconds=15)
    assert done.status == "success"
    assert s3_server.keys(bucket) == [(done.images[0].path or "").split("/", 3)[3]]
    assert emulator.downloads == 1
    assert not any((bucket_settings.data_dir / "staging").iterdir())  # stored: the replica keeps no copy
    for secret in s3_server.env["AWS_SECRET_ACCESS_KEY"], s3_server.env["AWS_ACCESS_KEY_ID"]:
        assert secret not in caplog.text
        assert secret not in (result.error or "")


async def test_a_bucket_that_cannot_be_reached_at_start_is_a_clear_error_before_any_call(
    bucket_settings: Settings, emulator: Any, s3_server: Any
) -> None:
    """A missing bucket (or wrong endpoint, or credentials) stops the server at start, naming the bucket and the
    setting: no task is paid for whose image could not be kept."""
    settings = bucket_settings.model_copy(update={"storage_url": "s3://nano-banana-never-made/images"})
    with pytest.raises(ConfigError) as caught:
        async with open_service(settings):
            pass
    message = str(caught.value)
    assert "nano-banana-never-made" in message and "NANO_BANANA_STORAGE_URL" in message
    assert s3_server.env["AWS_SECRET_ACCESS_KEY"] not in message
    assert emulator.creates == 0


@pytest.mark.parametrize(
    "url", ["https://bucket/x", "s3://", "s3://UPPER/x", "s3://b/x", "s3://bucket/a/../b", "s3://bucket/x?y=1"]
)
async def test_a_bad_storage_url_is_one_clear_error_before_anything_starts(settings: Settings, url: str) -> None:
    with pytest.raises(ConfigError, match=r"NANO_BANANA_STORAGE_URL .* must read s3://bucket"):
        async with open_service(settings.model_copy(update={"storage_url": url})):
            pass


async def test_credentials_written_into_the_storage_url_are_never_repeated(settings: Settings) -> None:
    url = "s3://AKIAEXAMPLE:wJalrXUtnFEMI-secret@bucket/images"
    with pytest.raises(ConfigError) as caught:
        async with open_service(settings.model_copy(update={"storage_url": url})):
            pass
    assert "wJalrXUtnFEMI-secret" not in str(caught.value)
    assert "credentials" in str(caught.value)


async def test_a_bad_s3_endpoint_is_one_clear_error(
    settings: Settings, storage_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "not a url")
    with pytest.raises(ConfigError, match="AWS_ENDPOINT_URL"):
        async with open_service(settings.model_copy(update={"storage_url": storage_url})):
            pass


async def test_a_preview_made_once_is_not_downloaded_again(client: Client, storage_url: str, s3_server: Any) -> None:
    """Showing a result again (get_task) reuses its kept preview: the object is not read from the bucket again (here it
    is gone, and the preview still comes back; the full image, read on demand, does not)."""
    result = await client.call_tool("generate_image", {"prompt": "shown twice"})
    bucket, _ = _bucket_and_prefix(storage_url)
    [key] = s3_server.keys(bucket)
    s3_server.client().delete_object(Bucket=bucket, Key=key)
    again = await client.call_tool("get_task", {"task_id": result.structured_content["task_id"]})
    assert [block.type for block in again.content].count("image") == 1
    with pytest.raises(MCPError, match="cannot be served"):
        await client.read_resource(result.structured_content["images"][0]["uri"])


# -- no credential or internal address reaches a tenant ---------------------------------------------------------


async def test_an_s3_endpoint_with_a_password_in_it_is_refused_at_start_without_repeating_it(
    settings: Settings, storage_url: str, s3_server: Any, emulator: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """AWS_ENDPOINT_URL=http://user:password@host: boto3 would put the password into every presigned link a tenant
    gets, and into every connection error. The server refuses to start, saying what to do, without the password."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.endpoint.replace("://", "://minio:Hunter2-never-shown@"))
    with pytest.raises(ConfigError, match="AWS_ENDPOINT_URL") as caught:
        async with open_service(settings.model_copy(update={"storage_url": storage_url})):
            pass
    assert "Hunter2-never-shown" not in str(caught.value)
    assert emulator.creates == 0


@pytest.fixture
def lost_s3(s3_server: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """An S3 server of this test's own (to stop while serving), with one bucket; the AWS variables reach it."""
    server = type(s3_server)()
    server.start()
    try:
        for name, value in server.env.items():
            monkeypatch.setenv(name, value)
        server.bucket = server.new_bucket()
        yield server
    finally:
        server.stop()


async def test_a_storage_outage_tells_tenants_storage_unavailable_and_the_operator_why(
    settings: Settings, lost_s3: Any, text_of: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """The bucket's endpoint goes down while serving: the tenant's get_task says "storage unavailable" without the
    endpoint's host:port (nor does the ledger row); the operator's log has the endpoint."""
    caplog.set_level(logging.INFO)
    internal = lost_s3.endpoint.removeprefix("http://")  # 127.0.0.1:port
    bucket_settings = settings.model_copy(update={"storage_url": f"s3://{lost_s3.bucket}/images"})
    async with Client(create_server(bucket_settings), read_timeout_seconds=30) as client:
        lost_s3.stop()
        made = await client.call_tool("generate_image", {"prompt": "during an outage", "wait_seconds": 0})
        task_id = made.structured_content["task_id"]
        with anyio.fail_after(30):  # until the first try to store the image has failed
            while True:
                shown = await client.call_tool("get_task", {"task_id": task_id})
                if shown.structured_content.get("error"):
                    break
                await anyio.sleep(0.05)
    told = text_of(shown) + json.dumps(shown.structured_content)
    assert "storage unavailable" in told, told
    assert internal not in told
    db = sqlite3.connect(settings.data_dir / "ledger.sqlite3")
    [(error,)] = db.execute("SELECT error FROM tasks").fetchall()
    db.close()
    assert "storage unavailable" in error and internal not in error
    assert internal in caplog.text  # the operator learns where the endpoint is that failed
