"""A plain HTTP client for the console tests (the standard library's, off the event loop)."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: str

    def json(self) -> Any:
        return json.loads(self.body)


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def _call(
    url: str, method: str, body: bytes | None, headers: dict[str, str], follow: bool
) -> Answer:
    request = urllib.request.Request(url, data=body, method=method, headers=headers)
    opener = urllib.request.build_opener() if follow else urllib.request.build_opener(NoRedirect)
    try:
        with opener.open(request, timeout=30) as response:
            return Answer(response.status, dict(response.headers), response.read().decode())
    except urllib.error.HTTPError as error:
        return Answer(error.code, dict(error.headers), error.read().decode())


async def get(url: str, headers: dict[str, str] | None = None) -> Answer:
    return await asyncio.to_thread(_call, url, "GET", None, headers or {}, True)


async def post_json(url: str, payload: Any, headers: dict[str, str] | None = None) -> Answer:
    body = json.dumps(payload).encode()
    heads = {"Content-Type": "application/json", **(headers or {})}
    return await asyncio.to_thread(_call, url, "POST", body, heads, True)


async def post_form(url: str, fields: dict[str, str], headers: dict[str, str]) -> Answer:
    body = urlencode(fields).encode()
    heads = {"Content-Type": "application/x-www-form-urlencoded", **headers}
    return await asyncio.to_thread(_call, url, "POST", body, heads, False)


async def live_updates(
    url: str, into: list[dict[str, Any]], until: Callable[[dict[str, Any]], bool]
) -> None:
    """Read the console's server-sent events into ``into`` until one satisfies ``until``."""
    parsed = urllib.parse.urlparse(url)
    reader, writer = await asyncio.open_connection(parsed.hostname, parsed.port)
    try:
        writer.write(
            f"GET {parsed.path} HTTP/1.1\r\nHost: {parsed.netloc}\r\n"
            "Accept: text/event-stream\r\n\r\n".encode()
        )
        await writer.drain()
        while line := await reader.readline():
            text = line.decode().strip()
            if text.startswith("data: {"):
                into.append(json.loads(text.removeprefix("data: ")))
                if until(into[-1]):
                    return
    finally:
        writer.close()
