"""Sends to a client that stops reading end the response, in-process on Trio's mock clock:
after DS_SERVER__SEND_TIMEOUT_SECS without progress, and for SSE at the reconnect interval even
when the client is only slow. (tests/test_stalled_readers.py checks the real server.)"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio
import trio.testing

from actors.registry import Registry
from actors.service import Streams
from actors.storage.memory import MemoryStorage
from streams.config import Settings
from streams.http import StreamsHTTP
from streams.protocol.machine import AppendRequest, CreateRequest
from streams.protocol.records import StreamConfig
from streams.sending import MAX_SWEEP_INTERVAL

PIECE = 1000
RECORD = 20 * PIECE
Send = Callable[[dict[str, Any]], Awaitable[None]]


def stalling_after(bodies: int, *, delay: float | None = None) -> tuple[Send, list[bool]]:
    """A client that reads `bodies` body messages, then never reads again (or, with `delay`,
    takes that long over each send). Also records each body's `more_body`."""
    more: list[bool] = []

    async def send(event: dict[str, Any]) -> None:
        if event["type"] != "http.response.body":
            return
        if len(more) >= bodies:
            if delay is None:
                await trio.sleep_forever()
            await trio.sleep(delay)
        more.append(event.get("more_body", False))

    return send, more


async def serve(settings: Settings, query: str, send: Send) -> float:
    """Run one GET of a closed stream holding one large record; how long it took."""
    registry = Registry(MemoryStorage(), piece_bytes=PIECE)
    streams = Streams(registry)
    app = StreamsHTTP(streams, settings)

    async def receive() -> dict[str, Any]:
        if not requested.is_set():
            requested.set()
            return {"type": "http.request", "body": b"", "more_body": False}
        await trio.sleep_forever()  # a stalled client never disconnects either
        raise AssertionError

    requested = trio.Event()
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/v1/stream/s",
        "query_string": query.encode(),
        "headers": [],
    }
    async with trio.open_nursery() as nursery:
        await nursery.start(registry.run)
        nursery.start_soon(app.sends.run)
        await streams.create("s", CreateRequest(StreamConfig("application/octet-stream")))
        await streams.append("s", AppendRequest("application/octet-stream", b"x" * RECORD))
        began = trio.current_time()
        with trio.fail_after(1000):
            await app(scope, receive, send)
        took = trio.current_time() - began
        nursery.cancel_scope.cancel()
    return took


def settings(send_timeout: float, reconnect: float) -> Settings:
    return Settings(
        storage_mode="memory",
        read_piece_bytes=PIECE,
        send_timeout=send_timeout,
        sse_reconnect_interval=reconnect,
    )


@pytest.mark.parametrize("query", ["offset=-1", "offset=-1&live=sse"])
async def test_a_send_without_progress_ends_the_response_after_the_send_timeout(
    autojump_clock: trio.testing.MockClock, query: str
) -> None:
    send, more = stalling_after(2)
    took = await serve(settings(send_timeout=30, reconnect=600), query, send)
    assert 30 <= took <= 30 + MAX_SWEEP_INTERVAL
    assert more == [True, True]  # two pieces went out; the response was never finished


async def test_slow_sends_that_progress_are_not_cut_off(
    autojump_clock: trio.testing.MockClock,
) -> None:
    send, more = stalling_after(1, delay=20)  # each send takes 20 s, under the 30 s timeout
    took = await serve(settings(send_timeout=30, reconnect=600), "offset=-1", send)
    assert len(more) == RECORD // PIECE and more[-1] is False  # the whole body, finished
    assert took >= 20 * (len(more) - 1)


@pytest.mark.parametrize("delay", [None, 3.0])  # stalled for good, or only slow
async def test_sse_closes_at_the_reconnect_interval_even_when_the_client_is_slow(
    autojump_clock: trio.testing.MockClock, delay: float | None
) -> None:
    send, more = stalling_after(1, delay=delay)
    took = await serve(settings(send_timeout=600, reconnect=5), "offset=-1&live=sse", send)
    assert 5 <= took <= 5 + MAX_SWEEP_INTERVAL
    assert False not in more  # the interrupted stream is cut, not ended as if complete
