"""Sliding TTLs across processes (docs/scaling.md, "TTL"): two registries on one database, as
two server processes would run, on one wall clock the test moves (their sweepers off: expiry
runs when the test calls `expire_due`). A read on B extends the stream's life for A; a
stream is expired by the row's shared last access, under its row lock; once expired it is
gone for every process, including one that never saw it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import attrs
import pytest
import trio

from actors.registry import Registry
from actors.service import Streams
from actors.storage.postgres import PostgresStorage
from streams.protocol.errors import ProtocolError
from streams.protocol.machine import AppendRequest, CreateRequest
from streams.protocol.offsets import Sentinel
from streams.protocol.records import StreamConfig
from tests.on_disk import started

TEXT = "text/plain"
START = 1_000_000.0
TTL = 10
GRACE = 1.0  # DS_STORAGE__POSTGRES_ACCESS_SECS


@attrs.define
class Clock:
    now: float = START

    def __call__(self) -> float:
        return self.now


@attrs.define
class Process:
    streams: Streams
    registry: Registry
    storage: PostgresStorage


@pytest.fixture
async def pair(postgres_url: str) -> AsyncIterator[tuple[Process, Process, Clock]]:
    clock = Clock()
    storages = [PostgresStorage.connect(postgres_url, max_size=4, access_secs=GRACE)]
    storages.append(PostgresStorage.connect(postgres_url, max_size=4, access_secs=GRACE))
    try:
        async with trio.open_nursery() as nursery:
            processes = []
            for storage in storages:
                registry = await started(storage, nursery, clock=clock, sweep_interval=1e9)
                processes.append(Process(Streams(registry), registry, storage))
            yield processes[0], processes[1], clock
            nursery.cancel_scope.cancel()
    finally:
        for storage in storages:
            storage.close()


async def status(streams: Streams, name: str) -> int:
    try:
        await streams.read(name, Sentinel.START, 100)
    except ProtocolError as error:
        return error.status
    return 200


@pytest.mark.parametrize("access", ["read", "append"])
async def test_an_access_on_b_extends_the_stream_for_a(
    pair: tuple[Process, Process, Clock], access: str
) -> None:
    a, b, clock = pair
    await a.streams.create("s", CreateRequest(StreamConfig(TEXT, ttl=TTL)))
    clock.now = START + 8
    if access == "read":  # B's access, 8 s in
        assert await status(b.streams, "s") == 200
    else:
        assert (await b.streams.append("s", AppendRequest(TEXT, b"x"))).status == 204
    clock.now = START + 12  # past the TTL from A's create, not from B's read
    await a.registry.expire_due()
    assert (await a.streams.head("s")).status == 200
    clock.now = START + 8 + TTL + GRACE  # the TTL from B's read, and the precision, passed
    await a.registry.expire_due()
    assert await status(b.streams, "s") == 404  # gone for B too
    assert await status(a.streams, "s") == 404


async def test_an_access_within_the_precision_is_not_written_and_never_expires_early(
    pair: tuple[Process, Process, Clock], postgres_url: str
) -> None:
    """B's read half a second after the create is not written (the row's time is within
    the precision of it), so A counts the precision on top: late, never early."""
    a, b, clock = pair
    await a.streams.create("s", CreateRequest(StreamConfig(TEXT, ttl=TTL)))
    clock.now = START + 0.5
    assert await status(b.streams, "s") == 200
    clock.now = START + 0.5 + TTL  # B's read was TTL ago, just
    await a.registry.expire_due()
    assert (await a.streams.head("s")).status == 200
    clock.now = START + TTL + GRACE
    await a.registry.expire_due()
    assert await status(b.streams, "s") == 404


async def test_a_process_that_never_saw_a_stream_finds_it_expired(
    pair: tuple[Process, Process, Clock],
) -> None:
    """A expires nothing (as if it had stopped); B's first request for the stream, past its
    TTL, finds it expired instead of counting its opening as an access."""
    a, b, clock = pair
    await a.streams.create("s", CreateRequest(StreamConfig(TEXT, ttl=TTL)))
    clock.now = START + TTL + GRACE + 1
    assert await status(b.streams, "s") == 404
    assert await status(a.streams, "s") == 404


async def test_an_expiry_is_decided_by_the_row_under_its_lock(
    pair: tuple[Process, Process, Clock],
) -> None:
    """A's actor holds an old last access (it has not looked at the row since B's read):
    the removal itself checks the row's, and the stream lives on."""
    a, b, clock = pair
    await a.streams.create("s", CreateRequest(StreamConfig(TEXT, ttl=TTL)))
    clock.now = START + 8
    assert await status(b.streams, "s") == 200
    assert not await a.storage.remove("s", expired_at=START + TTL + GRACE)
    assert await status(a.streams, "s") == 200
    assert await a.storage.remove("s", expired_at=START + 8 + TTL + GRACE)
    assert await status(b.streams, "s") == 404


async def test_a_stream_another_process_created_is_expired_by_a_scan_here(
    pair: tuple[Process, Process, Clock],
) -> None:
    """A creates the stream and then expires nothing (as if it had stopped); B never saw it:
    B's scan of the rows learns its deadline, and B's sweep removes it, records and all."""
    a, b, clock = pair
    await a.streams.create("s", CreateRequest(StreamConfig(TEXT, ttl=TTL)))
    await a.streams.create("forever", CreateRequest(StreamConfig(TEXT)))
    await b.registry.rescan(60)  # due within the next scan: the TTL stream only
    assert b.registry.scheduled_expiries == 1
    clock.now = START + TTL + GRACE
    await b.registry.expire_due()
    assert "s" not in await a.storage.names()
    assert await status(a.streams, "s") == 404
    assert await status(a.streams, "forever") == 200


async def test_a_scan_learns_nothing_not_due_before_the_next(
    pair: tuple[Process, Process, Clock],
) -> None:
    a, b, clock = pair
    await a.streams.create("s", CreateRequest(StreamConfig(TEXT, ttl=TTL)))
    await b.registry.rescan(1)
    assert b.registry.scheduled_expiries == 0
    clock.now = START + 8
    await b.registry.rescan(10)  # due at START + TTL + GRACE, before START + 18
    assert b.registry.scheduled_expiries == 1
