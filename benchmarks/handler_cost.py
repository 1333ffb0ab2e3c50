"""What the protocol and the actor cost per append, without the HTTP stack: the ASGI handler
called in-process (memory storage, 100 B bodies), so its share of a request's time under
hypercorn can be read off against the raw ASGI ceiling. The access log is off unless asked
for (`text` or `json`, written to /dev/null), so its cost can be read off too.

    .venv/bin/python -m benchmarks.handler_cost [appends] [off|text|json]
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import trio

from actors.registry import Registry
from actors.service import Streams
from actors.storage.memory import MemoryStorage
from streams import access
from streams.config import Settings
from streams.http import StreamsHTTP
from streams.protocol.machine import CreateRequest
from streams.protocol.records import StreamConfig

OCTETS = "application/octet-stream"
BODY = b"x" * 100
SCOPE = {
    "type": "http",
    "method": "POST",
    "path": "/v1/stream/cost",
    "query_string": b"",
    "headers": [(b"host", b"127.0.0.1"), (b"content-type", OCTETS.encode())],
}


async def measure(appends: int, access_log: str = "off") -> None:
    registry = Registry(MemoryStorage())
    streams = Streams(registry)
    logged = access_log != "off"
    if logged:
        access.configure(access_log, open(os.devnull, "w"))  # noqa: SIM115
    handler = StreamsHTTP(streams, Settings(storage_mode="memory", access_log=logged))

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": BODY, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        pass

    async def client(count: int) -> None:
        for _ in range(count):
            await handler(SCOPE, receive, send)

    async with trio.open_nursery() as nursery:
        await nursery.start(registry.run)
        await streams.create("cost", CreateRequest(StreamConfig(OCTETS)))
        for clients in (1, 16, 64):
            began = time.perf_counter()
            async with trio.open_nursery() as load:
                for _ in range(clients):
                    load.start_soon(client, appends // clients)
            seconds = time.perf_counter() - began
            print(f"{clients:>2} concurrent: {seconds / appends * 1e6:6.1f} µs per append")
        nursery.cancel_scope.cancel()


if __name__ == "__main__":
    trio.run(
        measure,
        int(sys.argv[1]) if len(sys.argv) > 1 else 20_000,
        sys.argv[2] if len(sys.argv) > 2 else "off",
    )
