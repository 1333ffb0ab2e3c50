"""Drive the protocol's ASGI handler in-process: requests whose body the test feeds (or
withholds) event by event, and the response collected as it is sent."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import attrs
import trio

Handler = Callable[
    [dict[str, Any], Callable[[], Awaitable[dict[str, Any]]], Callable[..., Awaitable[None]]],
    Awaitable[None],
]


@attrs.define
class Response:
    status: int = 0
    headers: dict[str, str] = attrs.field(factory=dict)
    body: bytes = b""
    complete: bool = False  # the last body event was sent (more_body false)

    def problem(self) -> dict[str, Any]:
        assert self.headers["content-type"] == "application/problem+json"
        doc: dict[str, Any] = json.loads(self.body)
        return doc


class Exchange:
    """One request: `feed` hands the server body chunks; `response` is set once it is sent."""

    def __init__(self, method: str, path: str, headers: dict[str, str], query: str) -> None:
        self.scope = {
            "type": "http",
            "method": method,
            "path": path,
            "query_string": query.encode(),
            "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        }
        self._feed, self._events = trio.open_memory_channel[dict[str, Any]](100)
        self.response = Response()
        self.done = trio.Event()

    def feed(self, chunk: bytes, more: bool = True) -> None:
        self._feed.send_nowait({"type": "http.request", "body": chunk, "more_body": more})

    def disconnect(self) -> None:
        """The client goes away (after the body, if any, was taken)."""
        self._feed.send_nowait({"type": "http.disconnect"})

    async def receive(self) -> dict[str, Any]:
        return await self._events.receive()

    async def send(self, event: dict[str, Any]) -> None:
        if event["type"] == "http.response.start":
            self.response.status = event["status"]
            self.response.headers = {k.decode(): v.decode() for k, v in event["headers"]}
        else:
            self.response.body += event.get("body", b"")
            if not event.get("more_body", False):
                self.response.complete = True
                self.done.set()

    async def serve(self, app: Handler) -> None:
        await app(self.scope, self.receive, self.send)
        self.done.set()


def start(
    nursery: trio.Nursery,
    app: Handler,
    method: str,
    name: str,
    body: bytes | None = b"",
    headers: dict[str, str] | None = None,
    query: str = "",
) -> Exchange:
    """Start a request; a `body` is sent whole at once (None: the test feeds it)."""
    exchange = Exchange(method, f"/v1/stream/{name}", headers or {}, query)
    if body is not None:
        exchange.feed(body, more=False)
    nursery.start_soon(exchange.serve, app)
    return exchange


async def request(app: Handler, method: str, name: str, body: bytes = b"", **kw: Any) -> Response:
    async with trio.open_nursery() as nursery:
        exchange = start(nursery, app, method, name, body, **kw)
        await exchange.done.wait()
    return exchange.response
