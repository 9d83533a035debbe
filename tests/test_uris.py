"""The nano-banana:// URIs a result hands out are the ones the server reads back."""

from __future__ import annotations

from nano_banana_mcp.uris import ImageRef, image_uri, parse_image_uri, parse_task_uri, task_uri


def test_an_image_uri_a_result_gives_is_read_back() -> None:
    assert parse_image_uri(image_uri("3f2a-task_ID", 2)) == ImageRef("3f2a-task_ID", 2)
    assert parse_task_uri(image_uri("abc", 0)) == "abc"
    assert parse_task_uri(task_uri("abc")) == "abc"


def test_what_is_not_one_of_ours_is_not_read_as_one() -> None:
    for uri in (
        "nano-banana://tasks/abc",  # a task, not an image
        "nano-banana://tasks/../../etc/images/0",
        "nano-banana://tasks/abc/images/0/extra",
        "nano-banana://tasks/abc/images/1234",
        "nano-banana://tasks/" + "a" * 201 + "/images/0",
        "https://example.com/nano-banana://tasks/abc/images/0",
    ):
        assert parse_image_uri(uri) is None, uri
    assert parse_task_uri("nano-banana://tasks/a?b") is None
    assert parse_task_uri("nano-banana://sets/hero") is None
