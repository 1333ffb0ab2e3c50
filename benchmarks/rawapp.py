"""The ceiling of the HTTP stack: a trivial raw ASGI app under `hypercorn --worker-class trio`.

POST reads the body (chunks joined once) and answers 204 with a Stream-Next-Offset header, as
an append does; GET answers 200 with a short body; /readyz answers 200. No protocol at all.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

_offset = 0


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    global _offset
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
    body = b"".join(chunks)
    if scope["method"] == "POST":
        _offset += len(body)
        headers = [(b"stream-next-offset", b"%016d_%016d" % (0, _offset))]
        await send({"type": "http.response.start", "status": 204, "headers": headers})
        await send({"type": "http.response.body", "body": b""})
        return
    payload = b"ready\n"
    headers = [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(payload))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": payload})
