"""Writers first: an append's response goes out before any live reader it wakes runs, and a
writer that never gets its response out holds them DS_SERVER__READER_WAKE_DELAY_SECS at most.
In process, through the ASGI handler; each fake `send` yields as hypercorn's does."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing

from actors.registry import Registry
from actors.service import Streams
from actors.storage.memory import MemoryStorage
from actors.wakeups import Change, Wakeups
from streams.config import Settings
from streams.http import StreamsHTTP
from streams.protocol.machine import CreateRequest
from streams.protocol.records import StreamConfig

READERS = 20
DELAY = 5.0


@asynccontextmanager
async def server(*, writers_first: bool = True) -> AsyncIterator[tuple[StreamsHTTP, trio.Nursery]]:
    registry = Registry(MemoryStorage())
    streams = Streams(registry, reader_wake_delay=DELAY)
    app = StreamsHTTP(streams, Settings(storage_mode="memory"))
    async with trio.open_nursery() as nursery:
        await nursery.start(registry.run)
        nursery.start_soon(app.sends.run)
        if writers_first:
            nursery.start_soon(streams.run)
        await trio.testing.wait_all_tasks_blocked()
        await streams.create("s", CreateRequest(StreamConfig("text/plain")))
        yield app, nursery
        nursery.cancel_scope.cancel()


def scope(method: str, query: str = "", headers: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "type": "http",
        "method": method,
        "path": "/v1/stream/s",
        "query_string": query.encode(),
        "headers": [(k.encode(), v.encode()) for k, v in (headers or {}).items()],
    }


def request_body(body: bytes) -> Any:
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await trio.sleep_forever()
        raise AssertionError

    return receive


async def post(app: StreamsHTTP, body: bytes, log: list[tuple[str, float]], stall: bool) -> None:
    async def send(event: dict[str, Any]) -> None:
        if event["type"] == "http.response.start":
            assert event["status"] == 204
            if stall:  # a client that does not read: this send never ends
                await trio.sleep_forever()
            log.append(("writer", trio.current_time()))
        await trio.lowlevel.checkpoint()  # hypercorn yields on its send lock

    headers = {"content-type": "text/plain"}
    await app(scope("POST", headers=headers), request_body(body), send)


def start_readers(app: StreamsHTTP, nursery: trio.Nursery, log: list[tuple[str, float]]) -> None:
    async def send(event: dict[str, Any]) -> None:
        if b"event: data" in event.get("body", b""):
            log.append(("reader", trio.current_time()))
        await trio.lowlevel.checkpoint()

    for _ in range(READERS):
        nursery.start_soon(app, scope("GET", "offset=now&live=sse"), request_body(b""), send)


async def test_the_response_to_an_append_goes_out_before_its_readers_run() -> None:
    async with server() as (app, nursery):
        log: list[tuple[str, float]] = []
        start_readers(app, nursery, log)
        for round in range(20):  # the order of tasks woken together is random: many rounds
            await trio.testing.wait_all_tasks_blocked()
            log.clear()
            await post(app, b"round %d" % round, log, stall=False)
            await trio.testing.wait_all_tasks_blocked()
            assert [who for who, _ in log] == ["writer"] + ["reader"] * READERS


async def test_a_writer_that_never_gets_its_response_out_holds_readers_a_while(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with server() as (app, nursery):
        log: list[tuple[str, float]] = []
        start_readers(app, nursery, log)
        await trio.testing.wait_all_tasks_blocked()
        began = trio.current_time()
        nursery.start_soon(post, app, b"stuck", log, True)
        while len(log) < READERS:
            await trio.sleep(0.5)
        assert {who for who, _ in log} == {"reader"}
        assert all(when - began == pytest.approx(DELAY) for _, when in log)


async def test_without_readers_nothing_is_held() -> None:
    async with server() as (app, _):
        await post(app, b"nobody reads", [], stall=False)
        assert app.streams.wakeups.held == 0


async def test_a_change_wakes_once_every_receipt_is_released() -> None:
    wakeups = Wakeups(DELAY)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(wakeups.run)
        await trio.testing.wait_all_tasks_blocked()
        first, second, late = wakeups.receipt(), wakeups.receipt(), wakeups.receipt()
        assert first is not None and second is not None and late is not None
        late.release()  # released before the commit (a cancelled writer): holds nothing
        change = Change()
        nursery.start_soon(change.wait)
        await trio.testing.wait_all_tasks_blocked()
        change.publish(None, [first, None, second, late])
        first.release()
        first.release()  # idempotent
        assert not change.is_set()
        second.release()
        assert change.is_set()
        nursery.cancel_scope.cancel()


async def test_a_change_nobody_waits_for_is_not_held() -> None:
    wakeups = Wakeups(DELAY)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(wakeups.run)
        await trio.testing.wait_all_tasks_blocked()
        change = Change()
        change.publish(None, [wakeups.receipt()])
        assert change.is_set() and wakeups.held == 0
        nursery.cancel_scope.cancel()
