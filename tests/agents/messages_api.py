"""A local HTTP server that speaks enough of Anthropic's Messages API for the real client.

Each POST /v1/messages takes the next scripted reply: a status, a JSON body and
an optional delay (to provoke client timeouts). Requests are kept for asserts.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    status: int
    body: dict[str, Any]
    delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)


def message(
    content: list[dict[str, Any]],
    stop_reason: str,
    usage: dict[str, int],
    model: str = "claude-test",
) -> Reply:
    """A Messages API reply: the assistant's ``content`` and why it stopped."""
    return Reply(
        200,
        {
            "id": "msg_test",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": content,
            "stop_reason": stop_reason,
            "stop_sequence": None,
            "usage": usage,
        },
    )


def tool_use(
    name: str,
    arguments: dict[str, Any],
    input_tokens: int = 100,
    output_tokens: int = 20,
    cache_read: int = 0,
    cache_write: int = 0,
    model: str = "claude-test",
    stop_reason: str = "tool_use",
) -> Reply:
    """A forced tool call; ``stop_reason="max_tokens"`` makes it one cut off mid-answer."""
    return message(
        [{"type": "tool_use", "id": "toolu_test", "name": name, "input": arguments}],
        stop_reason,
        {
            "input_tokens": input_tokens,
            "output_tokens": output_tokens,
            "cache_read_input_tokens": cache_read,
            "cache_creation_input_tokens": cache_write,
        },
        model,
    )


def refusal(model: str = "claude-test") -> Reply:
    """The model declined: no tool call, ``stop_reason`` ``refusal``."""
    return message(
        [{"type": "text", "text": "I can't help with that."}],
        "refusal",
        {"input_tokens": 100, "output_tokens": 10},
        model,
    )


def error(status: int, kind: str, message: str, **headers: str) -> Reply:
    """An error reply as the Messages API sends it (``retry_after="2"`` sets that header)."""
    return Reply(
        status,
        {"type": "error", "error": {"type": kind, "message": message}},
        headers={name.replace("_", "-"): value for name, value in headers.items()},
    )


def overloaded() -> Reply:
    return error(529, "overloaded_error", "Overloaded")


def rate_limited(retry_after: float) -> Reply:
    return error(429, "rate_limit_error", "slow down", retry_after=str(retry_after))


@dataclass
class MessagesAPI:
    replies: list[Reply] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> None:
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", 0))
                api.requests.append(json.loads(self.rfile.read(length)))
                reply = api.replies.pop(0) if api.replies else Reply(500, {"type": "error"})
                time.sleep(reply.delay)
                body = json.dumps(reply.body).encode()
                try:
                    self.send_response(reply.status)
                    self.send_header("content-type", "application/json")
                    self.send_header("content-length", str(len(body)))
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up waiting (a timeout test)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self.server:
            self.server.shutdown()
            self.server.server_close()
