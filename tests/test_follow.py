"""`Streams.follow`, in process (memory storage, Trio's mock clock): batches from a position
and then as they are committed, across forks, to the end of a closed stream, until a delete,
for a follower that fell behind the tail cache, and for many followers at once."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing

from actors import messages as m
from actors.follow import Batch, Follower
from actors.registry import Registry
from actors.service import Fork, Streams
from actors.storage.memory import MemoryStorage
from streams.protocol.errors import ProtocolError
from streams.protocol.machine import AppendRequest, CreateRequest
from streams.protocol.offsets import Sentinel
from streams.protocol.records import StreamConfig

TEXT = "text/plain"


class CountingRegistry(Registry):
    """Counts the Read messages actors were sent."""

    reads = 0

    async def call(self, name: str, message: m.Ask[m.R]) -> m.R:
        if isinstance(message, m.Read):
            self.reads += 1
        return await super().call(name, message)


@asynccontextmanager
async def service(**options: Any) -> AsyncIterator[tuple[Streams, CountingRegistry]]:
    registry = CountingRegistry(MemoryStorage(), **options)
    streams = Streams(registry)
    async with trio.open_nursery() as nursery:
        await nursery.start(registry.run)
        yield streams, registry
        nursery.cancel_scope.cancel()


async def create(streams: Streams, name: str, data: bytes = b"") -> None:
    await streams.create(name, CreateRequest(StreamConfig(TEXT), body=data))


async def append(streams: Streams, name: str, data: bytes, *, close: bool = False) -> None:
    await streams.append(name, AppendRequest(TEXT if data else None, data, close))


def shape(batch: Batch) -> tuple[int, int, bytes, bool, bool]:
    return batch.start, batch.end, batch.data, batch.up_to_date, batch.closed


async def next_batch(follower: Follower) -> Batch:
    with trio.fail_after(60):
        return await anext(follower)


async def test_the_first_batch_is_what_is_there_then_each_commit_follows(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with service() as (streams, _):
        await create(streams, "s", b"abc")
        follower = streams.follow("s", Sentinel.START)
        assert shape(await next_batch(follower)) == (0, 3, b"abc", True, False)
        assert follower.position == 3
        batches: list[Batch] = []

        async def follow() -> None:
            async for batch in follower:
                batches.append(batch)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(follow)
            for data in (b"de", b"f"):
                await trio.sleep(1)
                await append(streams, "s", data)
            await trio.sleep(1)
            await append(streams, "s", b"", close=True)
        assert [shape(b) for b in batches] == [
            (3, 5, b"de", True, False),
            (5, 6, b"f", True, False),
            (6, 6, b"", True, True),  # closed: the last batch
        ]
        assert follower.gone is None


async def test_at_the_tail_the_first_batch_is_empty_and_says_where_it_stands() -> None:
    async with service() as (streams, _):
        await create(streams, "s", b"abc")
        follower = streams.follow("s", Sentinel.NOW)
        assert shape(await next_batch(follower)) == (3, 3, b"", True, False)
        with trio.move_on_after(1) as waited:  # a timeout around a wait loses nothing
            await anext(follower)
        assert waited.cancelled_caught
        await append(streams, "s", b"de", close=True)
        assert shape(await next_batch(follower)) == (3, 5, b"de", True, True)
        with pytest.raises(StopAsyncIteration):
            await anext(follower)


async def test_a_closed_stream_followed_from_its_end_ends_at_once() -> None:
    async with service() as (streams, _):
        await create(streams, "s", b"abc")
        await append(streams, "s", b"", close=True)
        assert [shape(b) async for b in streams.follow("s", 3)] == [(3, 3, b"", True, True)]
        # from inside its last record: that record whole; from past its end: the end at once
        assert [shape(b) async for b in streams.follow("s", 1)] == [(0, 3, b"abc", True, True)]
        assert [shape(b) async for b in streams.follow("s", 7)] == [(7, 7, b"", True, True)]


async def test_errors_of_the_first_read_are_raised() -> None:
    async with service() as (streams, _):
        with pytest.raises(ProtocolError) as missing:
            await anext(streams.follow("nothing", Sentinel.START))
        assert missing.value.status == 404


async def test_a_follow_from_inside_a_record_starts_with_that_record_whole() -> None:
    async with service() as (streams, _):
        await create(streams, "s", b"abc")
        await append(streams, "s", b"defg")
        follower = streams.follow("s", 4)
        assert shape(await next_batch(follower)) == (3, 7, b"defg", True, False)


async def test_a_follow_from_past_the_tail_waits_for_a_record_that_ends_after_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Upstream's Yjs server reads from one byte past offsets it was given (its bug #397):
    it must get the next record whole, as from the reference server, not part of it."""
    async with service() as (streams, _):
        await create(streams, "s", b"abc")
        follower = streams.follow("s", 5)  # the tail is 3
        assert shape(await next_batch(follower)) == (5, 5, b"", True, False)
        got: list[tuple[int, int, bytes, bool, bool]] = []

        async def follow(follower: Follower) -> None:
            got.append(shape(await next_batch(follower)))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(follow, follower)
            await trio.testing.wait_all_tasks_blocked()
            await append(streams, "s", b"d")  # ends at 4: before the position
            await append(streams, "s", b"e")  # ends at 5: at it, so not after it
            await trio.testing.wait_all_tasks_blocked()
            assert got == []
            await append(streams, "s", b"fghij")  # [5, 10)
        assert got == [(5, 10, b"fghij", True, False)]
        assert follower.position == 10  # a record boundary again
        beyond = streams.follow("s", 12)
        assert shape(await next_batch(beyond)) == (12, 12, b"", True, False)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(follow, beyond)
            await trio.testing.wait_all_tasks_blocked()
            await append(streams, "s", b"klmnopq")  # [10, 17) holds 12: from 10, whole
        assert got[1] == (10, 17, b"klmnopq", True, False)


async def test_a_closed_stream_followed_from_past_its_tail_ends_when_it_closes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with service() as (streams, _):
        await create(streams, "s", b"abc")
        follower = streams.follow("s", 9)
        assert shape(await next_batch(follower)) == (9, 9, b"", True, False)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(append, streams, "s", b"de")  # [3, 5): before 9
            await trio.testing.wait_all_tasks_blocked()
            await append(streams, "s", b"", close=True)
            assert shape(await next_batch(follower)) == (9, 9, b"", True, True)
        with pytest.raises(StopAsyncIteration):
            await anext(follower)


async def test_batches_are_bounded_and_pieces_hold_only_their_first_bytes() -> None:
    async with service() as (streams, _):
        await create(streams, "s")
        for data in (b"aaaa", b"bbbb", b"cccc"):
            await append(streams, "s", data)
        whole = [
            (b.start, b.end, b.data) async for b in _until_tail(streams.follow("s", 0, max_bytes=8))
        ]
        assert whole == [(0, 8, b"aaaabbbb"), (8, 12, b"cccc")]
        pieces = streams.follow("s", 0, max_bytes=8, piece=3)
        first = await next_batch(pieces)
        assert (first.start, first.end, first.data, first.complete) == (0, 8, b"aaa", False)


async def _until_tail(follower: Follower) -> AsyncIterator[Batch]:
    async for batch in follower:
        yield batch
        if batch.up_to_date:
            return


async def test_a_fork_is_followed_through_its_source_then_on_its_own() -> None:
    async with service() as (streams, _):
        await create(streams, "src", b"abc")
        await streams.create("fork", CreateRequest(StreamConfig("")), Fork("src", 2))
        await append(streams, "src", b"SOURCE-ONLY")  # after the fork point: not the fork's
        await append(streams, "fork", b"x")
        await append(streams, "fork", b"y")
        follower = streams.follow("fork", Sentinel.START, max_bytes=3)
        first = await next_batch(follower)
        assert shape(first) == (0, 3, b"abx", False, False)  # stitched across the boundary
        assert shape(await next_batch(follower)) == (3, 4, b"y", True, False)
        await append(streams, "fork", b"z", close=True)
        assert shape(await next_batch(follower)) == (4, 5, b"z", True, True)


@pytest.mark.parametrize("soft", [False, True])
async def test_a_delete_ends_the_follow(autojump_clock: trio.testing.MockClock, soft: bool) -> None:
    async with service() as (streams, _):
        await create(streams, "s", b"abc")
        if soft:  # a stream with a fork is only soft-deleted: 410 from then on
            await streams.create("fork", CreateRequest(StreamConfig("")), Fork("s"))
        follower = streams.follow("s", Sentinel.NOW)
        await next_batch(follower)
        ended = trio.Event()

        async def follow() -> None:
            async for _ in follower:
                raise AssertionError("no batch after a delete")
            ended.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(follow)
            await trio.sleep(1)
            assert (await streams.delete("s")).status == 204
            with trio.fail_after(1):
                await ended.wait()
        assert follower.gone is not None
        assert follower.gone.status == (410 if soft else 404)


async def test_a_stream_deleted_and_created_again_is_not_followed_into() -> None:
    async with service() as (streams, _):
        await create(streams, "s", b"abc")
        await append(streams, "s", b"def")
        follower = streams.follow("s", 0, max_bytes=3)
        assert (await next_batch(follower)).data == b"abc"
        await streams.delete("s")
        await create(streams, "s", b"ABCDEFGH")  # same name, other bytes at the same offsets
        with pytest.raises(StopAsyncIteration):
            await anext(follower)
        assert follower.gone is not None and follower.gone.status == 404


async def test_a_follower_behind_the_tail_cache_reads_the_log_in_order() -> None:
    async with service(cache_bytes=64) as (streams, _):
        await create(streams, "s")
        follower = streams.follow("s", Sentinel.START, max_bytes=100)
        await next_batch(follower)
        sent = [bytes([65 + i % 26]) * 30 for i in range(40)]  # 1200 B, the cache holds 64
        for data in sent:
            await append(streams, "s", data)
        got = b""
        async for batch in follower:
            assert batch.end - batch.start <= 100 + 30 and batch.data  # whole records
            got += batch.data
            if batch.up_to_date:
                break
        assert got == b"".join(sent)


async def test_many_followers_cost_one_event_per_commit(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with service() as (streams, registry):
        await create(streams, "s")
        followers = [streams.follow("s", Sentinel.NOW) for _ in range(200)]
        for follower in followers:
            await next_batch(follower)
        got: list[list[bytes]] = [[] for _ in followers]

        async def follow(index: int) -> None:
            async for batch in followers[index]:
                got[index].append(batch.data)

        async with trio.open_nursery() as nursery:
            for index in range(len(followers)):
                nursery.start_soon(follow, index)
            await trio.testing.wait_all_tasks_blocked()
            reads = registry.reads
            for data in (b"one", b"two"):
                await append(streams, "s", data)
                await trio.testing.wait_all_tasks_blocked()
            assert registry.reads == reads  # each commit handed its data to all 200
            await append(streams, "s", b"", close=True)
        assert got == [[b"one", b"two", b""]] * len(followers)
