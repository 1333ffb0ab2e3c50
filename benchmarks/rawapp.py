"""The ceiling of the HTTP stack: a trivial raw ASGI app under `hypercorn --worker-class trio`.

POST reads the body (chunks joined once), wakes every live reader and answers 204 with a
Stream-Next-Offset header, as an append does; PUT answers 201 with one. A GET with
`live=sse` streams each later POST's body as one event, `live=long-poll` answers the next
POST's body; any other GET answers 200 with a short body. No protocol at all: one in-memory
"stream" whatever the path, no offsets, no validation.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import trio

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class Tail:
    """The last POST's body and the event the next POST sets."""

    def __init__(self) -> None:
        self.offset = 0
        self.body = b""
        self.appended = trio.Event()

    def append(self, body: bytes) -> None:
        self.offset += len(body)
        self.body = body
        self.appended.set()
        self.appended = trio.Event()

    def next_offset(self) -> list[tuple[bytes, bytes]]:
        return [(b"stream-next-offset", b"%016d_%016d" % (0, self.offset))]


tail = Tail()


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        while True:
            event = await receive()
            if event["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif event["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    if scope["type"] != "http":
        return
    chunks = []
    while True:
        event = await receive()
        if event["type"] != "http.request":
            return
        chunks.append(event.get("body", b""))
        if not event.get("more_body", False):
            break
    if scope["method"] == "POST":
        tail.append(b"".join(chunks))
    if scope["method"] in ("POST", "PUT"):
        status = 204 if scope["method"] == "POST" else 201
        await send({"type": "http.response.start", "status": status, "headers": tail.next_offset()})
        await send({"type": "http.response.body", "body": b""})
        return
    query = scope["query_string"]
    if b"live=sse" in query:
        await _sse(receive, send)
        return
    payload = b"ready\n"
    if b"live=long-poll" in query:
        await tail.appended.wait()
        payload = tail.body
    headers = [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(payload))]
    await send(
        {"type": "http.response.start", "status": 200, "headers": headers + tail.next_offset()}
    )
    await send({"type": "http.response.body", "body": payload})


async def _sse(receive: Receive, send: Send) -> None:
    headers = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})

    async def events() -> None:
        while True:
            await tail.appended.wait()
            event = b"event: data\ndata: " + tail.body + b"\n\n"
            await send({"type": "http.response.body", "body": event, "more_body": True})

    async def until_disconnect() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        nursery.cancel_scope.cancel()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(events)
        nursery.start_soon(until_disconnect)
