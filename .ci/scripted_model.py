"""A scripted model behind a loopback Anthropic-messages endpoint, for real OpenClaw agent turns in .ci/clients.sh.

    python3 .ci/scripted_model.py PORT_FILE LOG_FILE

Listens on 127.0.0.1 (a free port, written to PORT_FILE), answers ``POST /v1/messages`` (streamed or not) with
the next turn of a fixed script, and appends every request it got to LOG_FILE (one JSON object a line), so the
caller can measure what the model was shown. Standard library only: it runs under any python3.

The script plays a model that makes one image:

1. first turn: with Tool Search (``tool_search`` offered), search for the image tool; without it, call the MCP tool
   ``<server>__generate_image`` (whatever prefix the host gave it) directly. The prompt may say ``wait_seconds=N``:
   that is passed to ``generate_image``.
2. after ``tool_search``: ``tool_call`` the hit whose id names ``generate_image``.
3. after a result: a saved image path in the tool result's text -> the final answer, a standalone
   ``MEDIA:<path>`` line; a task still running -> ``get_task(task_id, wait_seconds=45)`` the same way; the host
   refusing the arguments ("wait_seconds: must be <= 45", OpenClaw checking the schema without Tool Search) -> the
   same call again within that bound, as a model does; anything else -> "The image tool did not return a saved
   file".

It reads only the text the host put in the tool results (as a model would), never the server's files.
"""

from __future__ import annotations

import json
import re
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

IMAGE_PATH = re.compile(r"(/[^\s\"'`\\]+?\.(?:png|jpe?g|webp))\b")
TASK_ID = re.compile(r'get_task\(task_id=\\?"([^"\\]+)\\?"')
WAIT = re.compile(r"wait_seconds=(\d+)")
REFUSED_WAIT = re.compile(r"wait_seconds: must be <= (\d+)")
NO_FILE = "The image tool did not return a saved file."

_lock = threading.Lock()


def _text_of(block: Any) -> str:
    """All the text of a tool_result (its content is a string or a list of blocks; images count as nothing)."""
    if isinstance(block, str):
        return block
    if isinstance(block, list):
        return "\n".join(_text_of(b) for b in block)
    if isinstance(block, dict):
        if block.get("type") == "text":
            return str(block.get("text", ""))
        if block.get("type") == "tool_result":
            return _text_of(block.get("content", ""))
    return ""


def _history(messages: list[dict[str, Any]]) -> tuple[str, list[tuple[str, dict[str, Any]]], str]:
    """The first user prompt, the tool calls made so far (name, input), and the text of the last tool result."""
    prompt = ""
    calls: list[tuple[str, dict[str, Any]]] = []
    last_result = ""
    for message in messages:
        content = message.get("content")
        blocks = content if isinstance(content, list) else [{"type": "text", "text": content or ""}]
        for block in blocks:
            if not isinstance(block, dict):
                continue
            if message.get("role") == "user" and block.get("type") == "text" and not prompt:
                prompt = str(block.get("text", ""))
            elif block.get("type") == "tool_use":
                calls.append((str(block.get("name")), dict(block.get("input") or {})))
            elif block.get("type") == "tool_result":
                last_result = _text_of(block)
    return prompt, calls, last_result


def next_turn(request: dict[str, Any]) -> list[dict[str, Any]]:
    """The content blocks of the scripted model's next message."""
    tools = [str(t.get("name")) for t in request.get("tools") or [] if isinstance(t, dict)]
    prompt, calls, result = _history(request.get("messages") or [])
    wait = WAIT.search(prompt)
    generate_args: dict[str, Any] = {"prompt": "a watercolor fox in the snow"}
    if wait:
        generate_args["wait_seconds"] = int(wait.group(1))
    searching = "tool_search" in tools
    direct = {name.rsplit("__", 1)[-1]: name for name in tools if "__" in name}

    def use(tool: str, args: dict[str, Any]) -> list[dict[str, Any]]:
        """Call a nano-banana tool: through tool_call with Tool Search, else by its own (prefixed) name."""
        if searching:
            ids = re.findall(r'"id"\s*:\s*"([^"]*generate_image[^"]*)"', "\n".join(_all_results(request)))
            if not ids:
                return [_text(f"{NO_FILE} (tool_search found no generate_image)")]
            return [_tool("tool_call", {"id": ids[0].replace("generate_image", tool), "args": args})]
        if tool not in direct:
            return [_text(f"{NO_FILE} (no {tool} tool among {tools})")]
        return [_tool(direct[tool], args)]

    if not calls:
        if searching:
            return [_tool("tool_search", {"query": "generate an image with nano banana"})]
        return use("generate_image", generate_args)
    last_name, _ = calls[-1]
    if last_name == "tool_search":
        return use("generate_image", generate_args)
    refused = REFUSED_WAIT.search(result)
    if refused and len(calls) < 8:
        tool, args = calls[-1]
        if tool == "tool_call":
            return [_tool(tool, args | {"args": args.get("args", {}) | {"wait_seconds": int(refused.group(1))}})]
        return [_tool(tool, args | {"wait_seconds": int(refused.group(1))})]
    path = IMAGE_PATH.search(result)
    if path:
        return [_text(f"Here is the watercolor fox.\n\nMEDIA:{path.group(1)}")]
    task = TASK_ID.search(result)
    if task and len(calls) < 8:
        return use("get_task", {"task_id": task.group(1), "wait_seconds": 45})
    return [_text(f"{NO_FILE} Tool result: {result[:300]}")]


def _all_results(request: dict[str, Any]) -> list[str]:
    found = []
    for message in request.get("messages") or []:
        content = message.get("content")
        for block in content if isinstance(content, list) else []:
            if isinstance(block, dict) and block.get("type") == "tool_result":
                found.append(_text_of(block))
    return found


_counter = 0


def _next_id(prefix: str) -> str:
    global _counter
    with _lock:
        _counter += 1
        return f"{prefix}_{_counter:06d}"


def _tool(name: str, args: dict[str, Any]) -> dict[str, Any]:
    return {"type": "tool_use", "id": _next_id("toolu"), "name": name, "input": args}


def _text(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


class Handler(BaseHTTPRequestHandler):
    log_file: Path

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        if not self.path.rstrip("/").endswith("/messages"):
            self.send_error(404)
            return
        blocks = next_turn(body)
        with _lock, self.log_file.open("a") as log:
            log.write(json.dumps({"path": self.path, "request": body, "reply": blocks}) + "\n")
        stop = "tool_use" if any(b["type"] == "tool_use" for b in blocks) else "end_turn"
        message = {
            "id": _next_id("msg"),
            "type": "message",
            "role": "assistant",
            "model": body.get("model", "scripted"),
            "content": blocks,
            "stop_reason": stop,
            "stop_sequence": None,
            "usage": {"input_tokens": 1, "output_tokens": 1},
        }
        if not body.get("stream"):
            data = json.dumps(message).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("cache-control", "no-cache")
        self.end_headers()
        self._event("message_start", {"type": "message_start", "message": message | {"content": []}})
        for index, block in enumerate(blocks):
            if block["type"] == "text":
                self._event(
                    "content_block_start",
                    {"type": "content_block_start", "index": index, "content_block": {"type": "text", "text": ""}},
                )
                delta = {"type": "text_delta", "text": block["text"]}
            else:
                start = block | {"input": {}}
                self._event("content_block_start", {"type": "content_block_start", "index": index, "content_block": start})
                delta = {"type": "input_json_delta", "partial_json": json.dumps(block["input"])}
            self._event("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})
            self._event("content_block_stop", {"type": "content_block_stop", "index": index})
        self._event(
            "message_delta",
            {"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": None}, "usage": {"output_tokens": 1}},
        )
        self._event("message_stop", {"type": "message_stop"})

    def _event(self, name: str, data: dict[str, Any]) -> None:
        self.wfile.write(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode())
        self.wfile.flush()


def main() -> None:
    port_file, log_file = sys.argv[1:]
    Handler.log_file = Path(log_file)
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    Path(port_file).write_text(str(server.server_address[1]))
    server.serve_forever()


if __name__ == "__main__":
    main()
