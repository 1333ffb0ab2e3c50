"""Two registries on one database, as two server processes would run (docs/scaling.md): each
commit holds the stream's row lock and folds what the other committed first, and each read
looks at the row's tail first."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
import trio

from actors import messages as m
from actors.registry import Registry
from actors.service import Streams
from actors.storage import Superseded, framing
from actors.storage.postgres import PostgresStorage
from streams.protocol import records
from streams.protocol.errors import ProtocolError
from streams.protocol.extents import Slice
from streams.protocol.headers import Producer
from streams.protocol.machine import AppendRequest, CreateRequest
from streams.protocol.offsets import Sentinel
from streams.protocol.records import AppendRecord, BaseRecord, StreamConfig
from streams.protocol.requests import Fork
from tests.on_disk import started
from tests.test_storage_contract import commit, create, restoring

TEXT = "text/plain"
JSON = "application/json"
WRITERS = 4
APPENDS = 12  # per writer


@pytest.fixture
async def pair(postgres_url: str) -> AsyncIterator[tuple[Streams, Streams]]:
    """Two services, each with its registry and its own connection pool, on one database."""
    storages = [PostgresStorage.connect(postgres_url, max_size=4) for _ in range(2)]
    try:
        async with trio.open_nursery() as nursery:
            registries: list[Registry] = [await started(s, nursery) for s in storages]
            yield Streams(registries[0]), Streams(registries[1])
            nursery.cancel_scope.cancel()
    finally:
        for storage in storages:
            storage.close()


def next_offset(headers: dict[str, str]) -> int:
    return int(headers["Stream-Next-Offset"].split("_")[1])


async def read_all(streams: Streams, name: str) -> bytes:
    return (await streams.read(name, Sentinel.START, 1 << 20)).data


async def test_interleaved_appends_on_two_processes_leave_no_gap_nor_overlap(
    pair: tuple[Streams, Streams],
) -> None:
    """Writers send each append to one process and its retry to the other, concurrently:
    every message is in the stream once, where its acknowledgement said it ends."""
    a, b = pair
    await a.create("s", CreateRequest(StreamConfig(TEXT)))
    acknowledged: dict[bytes, int] = {}  # message -> the offset its 200 named
    duplicates = 0

    async def writer(index: int) -> None:
        nonlocal duplicates
        for seq in range(APPENDS):
            body = b"<w%d:%02d>" % (index, seq)
            request = AppendRequest(TEXT, body, producer=Producer(f"w{index}", 0, seq))
            first, retry = (a, b) if (index + seq) % 2 else (b, a)
            reply = await first.append("s", request)
            assert reply.status == 200, reply
            acknowledged[body] = next_offset(reply.headers)
            again = await retry.append("s", request)  # a retry that reached the other process
            assert again.status == 204, again
            duplicates += 1
            await trio.sleep(0)

    async with trio.open_nursery() as nursery:
        for index in range(WRITERS):
            nursery.start_soon(writer, index)

    data = await read_all(a, "s")
    assert await read_all(b, "s") == data
    assert len(data) == sum(len(body) for body in acknowledged)
    assert duplicates == WRITERS * APPENDS
    for body, offset in acknowledged.items():
        assert data.count(body) == 1
        assert data.index(body) + len(body) == offset
    for index in range(WRITERS):  # each producer's messages in its order
        positions = [data.index(b"<w%d:%02d>" % (index, seq)) for seq in range(APPENDS)]
        assert positions == sorted(positions)


async def test_a_delete_and_create_elsewhere_is_seen_by_the_next_request(
    pair: tuple[Streams, Streams],
) -> None:
    a, b = pair
    await a.create("s", CreateRequest(StreamConfig(TEXT)))
    await a.append("s", AppendRequest(TEXT, b"old"))
    assert await read_all(b, "s") == b"old"  # b's actor now holds the old stream
    assert (await a.delete("s")).status == 204
    with pytest.raises(ProtocolError) as error:
        await read_all(b, "s")
    assert error.value.status == 404
    await a.create("s", CreateRequest(StreamConfig(TEXT)))
    assert (await b.append("s", AppendRequest(TEXT, b"new"))).status == 204
    assert await read_all(a, "s") == b"new"


async def test_closure_on_one_process_holds_on_the_other(pair: tuple[Streams, Streams]) -> None:
    a, b = pair
    await a.create("s", CreateRequest(StreamConfig(TEXT)))
    assert await read_all(b, "s") == b""
    await a.append("s", AppendRequest(TEXT, b"last", close=True))
    with pytest.raises(ProtocolError) as error:
        await b.append("s", AppendRequest(TEXT, b"more"))
    assert error.value.status == 409
    assert await read_all(b, "s") == b"last"


async def test_concurrent_creates_on_two_processes_make_one_stream(
    pair: tuple[Streams, Streams],
) -> None:
    """Both actors find no stream and create it; the second to insert the row answers as for
    an existing stream (same config: 200; another: 409)."""
    a, b = pair
    statuses: list[int] = []

    async def create(streams: Streams, name: str, content_type: str) -> None:
        try:
            statuses.append(
                (await streams.create(name, CreateRequest(StreamConfig(content_type)))).status
            )
        except ProtocolError as error:
            statuses.append(error.status)

    for name, other in (("s", TEXT), ("t", "application/octet-stream")):
        statuses.clear()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(create, a, name, TEXT)
            nursery.start_soon(create, b, name, other)
        expected = [200, 201] if other == TEXT else [201, 409]
        assert sorted(statuses) == expected, name
        assert await read_all(a, name) == await read_all(b, name) == b""


async def test_a_checkpoint_of_a_log_compacted_elsewhere_is_not_kept(postgres_url: str) -> None:
    """B's actor, retiring, checkpoints its state of the log as it was before A compacted it
    (and appended past B's end): that state's index points at rows that moved, so no open
    may start from it. A checkpoint or view of a stream deleted elsewhere is dropped too."""
    a, b = (PostgresStorage.connect(postgres_url, max_size=2) for _ in range(2))
    try:
        log_a = await a.create("s")
        await commit(log_a, [[create()], [AppendRecord(2.0, b"x" * 100)]])
        log_b = await b.open("s", lambda *_: None)
        assert log_b is not None
        end_b = log_b.end
        await log_a.prepare_restart(*records.encode(BaseRecord(create(), 0, 2.0, data=b"v")))
        await log_a.restart(log_a.end)  # nothing kept: the base alone
        await commit(log_a, [[AppendRecord(3.0, b"y" * 200)]])
        assert log_a.end > end_b  # so a checkpoint at end_b would look usable by its tail
        await log_b.checkpoint(b"stale")
        offered: list[bytes] = []
        log = await a.open("s", lambda *_: None, restoring(offered))
        assert log is not None and offered == []
        await a.remove("s")
        await log_b.checkpoint(b"gone")  # its row is gone: nothing to keep, no error
        await log_b.save_view(b"gone")
    finally:
        a.close()
        b.close()


async def test_a_read_of_a_log_compacted_elsewhere_never_returns_other_data(
    postgres_url: str,
) -> None:
    """A compaction on A between B's look at the tail and B's read moves the rows: a row of
    the new generation may sit where B's slice points (here the kept record lands where the
    first append was). B's read raises `Superseded` (its actor looks again), never serving
    another record's bytes."""
    a, b = (PostgresStorage.connect(postgres_url, max_size=2) for _ in range(2))
    try:
        log_a = await a.create("s")
        created = create(data=b"c" * 300)
        appends = [AppendRecord(2.0, b"%d" % n * 10) for n in range(3)]
        staged = await commit(log_a, [[created], [*appends]])
        log_b = await b.open("s", lambda *_: None)
        assert log_b is not None
        first = Slice(staged[1][1], 0, 10)
        assert await log_b.read([first]) == b"0" * 10
        # A base as long as the create's frame: the kept record then moves to the first's place.
        base = base_of_size(framing.frame_size(records.encode(created)[0], 300))
        await log_a.prepare_restart(*base)
        kept = staged[3][1] - framing.data_offset(records.encode(appends[2])[0])
        assert await log_a.restart(kept) + staged[3][1] == staged[1][1]
        with pytest.raises(Superseded):
            await log_b.read([first])
    finally:
        a.close()
        b.close()


def base_of_size(size: int) -> tuple[bytes, bytes]:
    """A base record (metadata, data) whose frame is `size` bytes."""
    for length in range(size):
        meta, data = records.encode(BaseRecord(create(), 0, 2.0, data=b"v" * length))
        if framing.frame_size(meta, len(data)) == size:
            return meta, data
    raise AssertionError(f"no base record of {size} bytes")


class Meddled:
    """A storage that lets another process act (`before_links`, once) when asked for a
    stream's links: between an actor's look at its tail and its commit of a delete."""

    def __init__(self, storage: PostgresStorage) -> None:
        self.storage = storage
        self.before_links: Callable[[], Awaitable[object]] | None = None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.storage, name)

    async def links(self, source: str) -> dict[str, str]:
        before, self.before_links = self.before_links, None
        if before is not None:
            await before()
        return await self.storage.links(source)


async def test_a_soft_delete_while_another_process_appends_is_answered(
    postgres_url: str,
) -> None:
    """B soft-deletes a forked stream A appended to after B looked at its tail: B's commit
    finds the row moved, and B looks again and deletes (it answered 503 CONCURRENT_CHANGE,
    and its actor failed)."""
    storages = [PostgresStorage.connect(postgres_url, max_size=4) for _ in range(2)]
    meddled = Meddled(storages[1])
    try:
        async with trio.open_nursery() as nursery:
            a = Streams(await started(storages[0], nursery))
            b = Streams(await started(meddled, nursery))
            await a.create("s", CreateRequest(StreamConfig(TEXT)))
            await a.create("f", CreateRequest(StreamConfig(TEXT)), Fork("s"))
            assert await read_all(b, "s") == b""
            meddled.before_links = lambda: a.append("s", AppendRequest(TEXT, b"late"))
            assert (await b.delete("s")).status == 204
            for streams in (a, b):
                with pytest.raises(ProtocolError) as error:
                    await read_all(streams, "s")
                assert error.value.status == 410
            nursery.cancel_scope.cancel()
    finally:
        for storage in storages:
            storage.close()


async def test_a_compaction_overtaken_by_another_process_waits_for_the_next_commit(
    postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A appends between B's commit and B's compaction step after it: B's restart finds the
    row moved and is left for a later commit (its actor failed, an error logged)."""
    storages = [PostgresStorage.connect(postgres_url, max_size=4) for _ in range(2)]
    meddled = Meddled(storages[1])
    try:
        async with trio.open_nursery() as nursery:
            a = Streams(await started(storages[0], nursery))
            registry = await started(meddled, nursery)
            b = Streams(registry)
            await b.create("s", CreateRequest(StreamConfig(JSON, state_compaction=1)))
            actor = registry._actors["s"]

            async def write(streams: Streams, n: int) -> None:
                message = [{"type": "card", "key": f"k{n % 3}", "value": n,
                            "headers": {"operation": "upsert"}}]  # fmt: skip
                request = AppendRequest(JSON, json.dumps(message).encode())
                assert (await streams.append("s", request)).status == 204

            for n in range(20):  # until B prepared a compaction
                await write(b, n)
                await registry.call("s", m.Describe())  # its step after the commit done
                if actor.compactor.prepared is not None:
                    break
            assert actor.compactor.prepared is not None
            meddled.before_links = lambda: write(a, 100)  # as B is about to restart the log
            await write(b, 101)
            assert meddled.before_links is None and registry._actors.get("s") is actor
            for n in range(102, 122):  # it compacts later, everything kept
                await write(b, n)
                if (await registry.call("s", m.Describe())).base:
                    break
            assert (await registry.call("s", m.Describe())).base
            assert registry._actors.get("s") is actor
            nursery.cancel_scope.cancel()
    finally:
        for storage in storages:
            storage.close()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_a_starting_process_keeps_the_link_of_a_fork_another_is_creating(
    pair: tuple[Streams, Streams],
) -> None:
    """A fork's link is written before the fork: a process starting meanwhile (B) finds a
    link to no stream, and must not drop it as a crash's leftover while A still creates it
    (the source could then be removed under the fork). Only a link that is still stale when
    B looks again (after `link_grace`, in a server) goes."""
    a, b = pair
    await a.create("src", CreateRequest(StreamConfig(TEXT), body=b"abc"))
    request = await a._fork_request("f", CreateRequest(StreamConfig(TEXT)), Fork("src", None))
    linked, go = trio.Event(), trio.Event()

    async def link(incarnation: str) -> None:
        await a.registry.call_source("src", m.Link("f", incarnation))
        linked.set()
        await go.wait()  # A's create of the fork, between its link and its commit

    async with trio.open_nursery() as nursery:
        nursery.start_soon(a.registry.call, "f", m.CreateMessage(request, link))
        await linked.wait()
        await a.registry.call("src", m.Link("gone", "never-created"))
        stale = await b.registry.stale_links()
        assert stale == {"src": ["f", "gone"]}
        go.set()
    await b.registry.collect(await b.registry.stale_links(stale))  # as after the grace
    links: dict[str, str] = await a.registry.call("src", m.Links())
    assert set(links) == {"f"}
    assert await read_all(b, "f") == b"abc"
