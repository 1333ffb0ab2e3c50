"""A live SSE response driven in-process on Trio's mock clock: events as data arrives, and a
keep-alive comment only after a quiet heartbeat interval."""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing

from actors.registry import Registry
from actors.service import Fork, Streams
from actors.storage.memory import MemoryStorage
from streams.config import Settings
from streams.http import StreamsHTTP
from streams.protocol.machine import AppendRequest, CreateRequest
from streams.protocol.records import StreamConfig

HEARTBEAT = 5.0  # min(long-poll timeout, 15 s)
KEEP_ALIVE = b": keep-alive\n\n"


async def test_keep_alive_comes_only_after_a_quiet_heartbeat(
    autojump_clock: trio.testing.MockClock,
) -> None:
    registry = Registry(MemoryStorage())
    streams = Streams(registry)
    app = StreamsHTTP(streams, Settings(storage_mode="memory", long_poll_timeout=HEARTBEAT))
    sent_to, received = trio.open_memory_channel[dict[str, Any]](100)
    gone = trio.Event()
    requested = False

    async def receive() -> dict[str, Any]:
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await gone.wait()
        return {"type": "http.disconnect"}

    async def next_chunk() -> bytes:
        message = await received.receive()
        assert message["type"] == "http.response.body"
        return bytes(message["body"])

    scope = {
        "type": "http",
        "method": "GET",
        "path": "/v1/stream/s",
        "query_string": b"offset=-1&live=sse",
        "headers": [],
    }
    async with trio.open_nursery() as nursery:
        await nursery.start(registry.run)
        await streams.create("s", CreateRequest(StreamConfig("text/plain")))
        done = trio.Event()

        async def serve() -> None:
            await app(scope, receive, sent_to.send)
            done.set()

        nursery.start_soon(serve)
        assert (await received.receive())["status"] == 200
        assert b"event: control" in await next_chunk()
        began = trio.current_time()
        assert await next_chunk() == KEEP_ALIVE
        assert trio.current_time() - began == pytest.approx(HEARTBEAT)

        await trio.sleep(HEARTBEAT / 2)
        await streams.append("s", AppendRequest("text/plain", b"hello"))
        assert b"data:hello" in await next_chunk()
        after_data = trio.current_time()
        assert await next_chunk() == KEEP_ALIVE  # the data restarted the quiet interval
        assert trio.current_time() - after_data == pytest.approx(HEARTBEAT)

        gone.set()
        await done.wait()
        last = await received.receive()
        assert last["type"] == "http.response.body" and not last["more_body"]
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("soft", [False, True])
async def test_a_delete_ends_live_reads_cleanly(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture, soft: bool
) -> None:
    """SSE ends its response; a parked long-poll answers 404 (410 after a soft delete)."""
    registry = Registry(MemoryStorage())
    streams = Streams(registry)
    app = StreamsHTTP(streams, Settings(storage_mode="memory"))
    sse_events: list[dict[str, Any]] = []
    long_poll: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        await trio.sleep_forever()
        raise AssertionError

    async def read(query: bytes, into: list[dict[str, Any]]) -> None:
        scope = {"type": "http", "method": "GET", "path": "/v1/stream/s", "headers": []}

        async def send(message: dict[str, Any]) -> None:
            into.append(message)

        await app({**scope, "query_string": query}, receive, send)

    async with trio.open_nursery() as nursery:
        await nursery.start(registry.run)
        await streams.create("s", CreateRequest(StreamConfig("text/plain")))
        if soft:
            await streams.create("fork", CreateRequest(StreamConfig("")), Fork("s"))
        async with trio.open_nursery() as readers:
            readers.start_soon(read, b"offset=now&live=sse", sse_events)
            readers.start_soon(read, b"offset=now&live=long-poll", long_poll)
            await trio.sleep(1)
            assert (await streams.delete("s")).status == 204
        nursery.cancel_scope.cancel()
    assert sse_events[0]["status"] == 200
    assert sse_events[-1] == {"type": "http.response.body", "body": b"", "more_body": False}
    assert long_poll[0]["status"] == (410 if soft else 404)
    assert not [r for r in caplog.records if r.levelname == "ERROR"]
