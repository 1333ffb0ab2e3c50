"""Bounded resources per client at the HTTP layer, in-process on Trio's clock: bodies that
stop arriving, the memory of bodies buffered at once, the cap on requests in progress, and
running out of file descriptors."""

from __future__ import annotations

import errno
import gc
import logging
import resource
from collections.abc import AsyncIterator

import pytest
import trio
import trio.testing

from actors.faults import LOG_INTERVAL
from actors.registry import EXPIRY_RETRY_SECS, Registry
from actors.service import Streams
from actors.storage import Fold, Log, Restore
from actors.storage.memory import MemoryStorage
from streams.app import create_app
from streams.config import Settings
from streams.http import StreamsHTTP
from streams.protocol.machine import CreateRequest
from streams.protocol.records import StreamConfig
from streams.resources import FD_RESERVE, default_max_connections
from tests.asgi import request, start
from tests.stored import stored_data

TEXT = {"Content-Type": "text/plain"}


async def serving(
    nursery: trio.Nursery, storage: MemoryStorage | None = None, **settings: object
) -> StreamsHTTP:
    registry = Registry(storage or MemoryStorage())
    await nursery.start(registry.run)
    return StreamsHTTP(Streams(registry), Settings(storage_mode="memory", **settings))  # type: ignore[arg-type]


async def stored(app: StreamsHTTP, name: str) -> bytes:
    return (await request(app, "GET", name, query="offset=-1")).body


# ---- bodies ---------------------------------------------------------------------------------


async def test_a_body_that_stops_arriving_gets_408_and_the_connection_closes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        app = await serving(nursery, body_timeout=30)
        assert (await request(app, "PUT", "s", headers=TEXT)).status == 201
        began = trio.current_time()
        with trio.fail_after(1000):  # the old code waits forever
            stalled = start(nursery, app, "POST", "s", None, {**TEXT, "Content-Length": "100"})
            stalled.feed(b"x" * 50)
            await stalled.done.wait()
        assert trio.current_time() - began == pytest.approx(30)
        response = stalled.response
        assert response.status == 408
        assert response.problem()["code"] == "BODY_TIMEOUT"
        assert response.headers["connection"] == "close"
        assert await stored(app, "s") == b""
        assert app.budget.used == 0
        nursery.cancel_scope.cancel()


async def test_the_body_timeout_counts_from_the_last_chunk(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with trio.open_nursery() as nursery:
        app = await serving(nursery, body_timeout=30)
        assert (await request(app, "PUT", "s", headers=TEXT)).status == 201
        slow = start(nursery, app, "POST", "s", None, TEXT)
        for _ in range(3):  # 60 s in all, never 30 s without data
            slow.feed(b"ab")
            await trio.sleep(20)
        slow.feed(b"c", more=False)
        await slow.done.wait()
        assert slow.response.status == 204
        assert await stored(app, "s") == b"abababc"
        nursery.cancel_scope.cancel()


async def test_bodies_buffered_at_once_are_bounded() -> None:
    async with trio.open_nursery() as nursery:
        app = await serving(nursery, max_append_bytes=1000, max_buffered_body_bytes=1000)
        assert (await request(app, "PUT", "s", headers=TEXT)).status == 201
        first = start(nursery, app, "POST", "s", None, {**TEXT, "Content-Length": "800"})
        first.feed(b"a" * 400)
        await trio.testing.wait_all_tasks_blocked()
        assert app.budget.used == 800  # its declared length, before the rest arrives

        declared = await request(app, "POST", "s", b"b" * 300, headers=TEXT)
        assert declared.status == 503  # refused before its body is read
        assert declared.headers["retry-after"] == "1"
        assert declared.headers["connection"] == "close"
        assert declared.problem()["code"] == "BUSY"

        chunked = start(nursery, app, "POST", "s", None, TEXT)  # no Content-Length
        for _ in range(3):
            chunked.feed(b"c" * 100)
        await chunked.done.wait()
        assert chunked.response.status == 503  # counted as it arrives: refused at 1100
        assert app.budget.used == 800

        first.feed(b"a" * 400, more=False)
        await first.done.wait()
        assert first.response.status == 204
        assert app.budget.used == 0  # given back once the append is answered
        retried = await request(app, "POST", "s", b"b" * 300, headers=TEXT)
        assert retried.status == 204
        assert await stored(app, "s") == b"a" * 800 + b"b" * 300
        nursery.cancel_scope.cancel()


# ---- requests in progress ------------------------------------------------------------------


async def test_requests_beyond_the_cap_get_503_and_one_log_line(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="streams.http")
    async with trio.open_nursery() as nursery:
        app = await serving(nursery, max_connections=3, long_poll_timeout=600)
        assert (await request(app, "PUT", "s", headers=TEXT)).status == 201
        polls = [
            start(nursery, app, "GET", "s", query="offset=-1&live=long-poll") for _ in range(3)
        ]
        await trio.testing.wait_all_tasks_blocked()
        assert app.active == 3
        with trio.fail_after(60):  # the old code makes these wait for data too
            refused = [
                await request(app, "GET", "s", query="offset=-1&live=long-poll") for _ in range(5)
            ]
        for response in refused:
            assert response.status == 503
            assert response.headers["retry-after"] == "1"
            assert response.headers["connection"] == "close"
            assert response.problem()["code"] == "BUSY"
        assert len(caplog.records) == 1  # not one per refusal
        assert (await request(app, "POST", "s", b"x", headers=TEXT)).status == 503

        app.max_requests = 4  # room for the append that ends the long polls
        assert (await request(app, "POST", "s", b"x", headers=TEXT)).status == 204
        for poll in polls:
            await poll.done.wait()
            assert poll.response.status == 200
        assert app.active == 0
        assert (await request(app, "HEAD", "s")).status == 200
        nursery.cancel_scope.cancel()


class ExhaustedStorage(MemoryStorage):
    """Opening or creating a log fails as at the process's descriptor limit (names starting
    with "new" are absent, so their creation fails instead)."""

    async def open(self, name: str, fold: Fold, restore: Restore | None = None) -> Log | None:
        if name.startswith("new"):
            return None
        raise OSError(errno.EMFILE, "Too many open files")

    async def create(self, name: str) -> Log:
        raise OSError(errno.EMFILE, "Too many open files")


def server_lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """What the server logged, but the access log's line per request."""
    return [record for record in caplog.records if record.name != "streams.access"]


async def test_out_of_descriptors_is_503_and_logged_once_per_interval(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with trio.open_nursery() as nursery:
        app = await serving(nursery, ExhaustedStorage())
        for round in range(2):
            for i in range(20):
                method, name = ("PUT", f"new{i}") if i % 2 else ("GET", f"old{i}")
                response = await request(app, method, name, headers=TEXT)
                assert response.status == 503
                assert response.headers["retry-after"] == "5"
                assert response.problem()["code"] == "RESOURCE_EXHAUSTED"
            assert len(server_lines(caplog)) == round + 1
            await trio.sleep(LOG_INTERVAL)
        first, second = (record.getMessage() for record in server_lines(caplog))
        assert "out of file descriptors" in first and ": 1 stream actor(s)" in first
        assert ": 20 stream actor(s)" in second  # all since the first line
        nursery.cancel_scope.cancel()


class SometimesExhausted(MemoryStorage):
    exhausted = False

    async def open(self, name: str, fold: Fold, restore: Restore | None = None) -> Log | None:
        if self.exhausted:
            raise OSError(errno.EMFILE, "Too many open files")
        return await super().open(name, fold, restore)


async def test_an_expiry_that_runs_out_of_descriptors_is_retried_quietly(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    now = [1_000_000.0]
    storage = SometimesExhausted()
    async with trio.open_nursery() as nursery:
        registry = Registry(storage, idle_timeout=1, clock=lambda: now[0])
        await nursery.start(registry.run)
        await Streams(registry).create("s", CreateRequest(StreamConfig("text/plain", ttl=10)))
        await trio.sleep(2)  # its actor stops: expiring it must open the log again
        storage.exhausted = True
        now[0] += 11
        await trio.sleep(2)
        assert storage._logs.get("s")  # not expired yet
        storage.exhausted = False
        now[0] += EXPIRY_RETRY_SECS
        await trio.sleep(2)
        assert await stored_data(storage, "s") is None  # expired once descriptors came back
        assert [r.getMessage()[:23] for r in caplog.records if r.levelno >= logging.ERROR] == [
            "out of file descriptors"
        ]
        nursery.cancel_scope.cancel()


# ---- start-up --------------------------------------------------------------------------------


@pytest.fixture
async def lowered_fd_limit() -> AsyncIterator[int]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard < 4 * FD_RESERVE:
        pytest.skip("needs a finite hard descriptor limit")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard // 2, hard))
    thresholds = gc.get_threshold()
    try:
        yield hard
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        gc.unfreeze()  # undo what the app's start-up does to the collector
        gc.set_threshold(*thresholds)


async def test_start_raises_the_descriptor_limit_and_caps_requests_below_it(
    lowered_fd_limit: int,
) -> None:
    app = create_app(Settings(storage_mode="memory"))
    async with trio.open_nursery() as nursery:
        app.nursery = nursery
        await app.startup()
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == lowered_fd_limit
        assert app.protocol is not None
        assert app.protocol.max_requests == default_max_connections(lowered_fd_limit)
        assert app.protocol.max_requests == (lowered_fd_limit - FD_RESERVE) // 2
        nursery.cancel_scope.cancel()
