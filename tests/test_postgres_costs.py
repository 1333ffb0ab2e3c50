"""What an append costs in postgres mode (docs/scaling.md, "Throughput"): two worker-thread
calls per committed batch; another process's commit costs a resident actor nothing until a
reader watches it or its next request comes; and the readers parked on B get A's append
from one read of the database, however many they are."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Iterable
from typing import Any

import psycopg
import pytest
import trio
import trio.testing

from actors.registry import Registry
from actors.service import Streams
from actors.storage import Fold
from actors.storage.postgres import PostgresLog, PostgresStorage
from streams.protocol.extents import Slice
from streams.protocol.machine import AppendRequest, CreateRequest
from streams.protocol.offsets import Sentinel
from streams.protocol.records import StreamConfig
from tests.on_disk import started
from tests.test_postgres_live import BOUND, Process, pair, parked

__all__ = ["pair"]  # the fixture, used by name
TEXT = "text/plain"


@contextlib.asynccontextmanager
async def one_process(url: str, access_secs: float) -> AsyncIterator[Streams]:
    storage = PostgresStorage.connect(url, max_size=4, access_secs=access_secs)
    try:
        async with trio.open_nursery() as nursery:
            yield Streams(await started(storage, nursery))
            nursery.cancel_scope.cancel()
    finally:
        storage.close()


@pytest.mark.parametrize("access_secs", [3600.0, 0.0])
async def test_an_append_costs_two_worker_thread_calls(
    postgres_url: str, access_secs: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The row locked and what others committed folded in one call; the records, the tail,
    the last access (even when every access is written: `access_secs` 0), the notification
    and COMMIT, and the connection given back, in the other."""
    async with one_process(postgres_url, access_secs) as streams:
        await streams.create("s", CreateRequest(StreamConfig(TEXT)))
        assert (await streams.append("s", AppendRequest(TEXT, b"one"))).status == 204
        real = trio.to_thread.run_sync
        calls: list[Any] = []

        async def counted(function: Any, *args: Any, **kwargs: Any) -> Any:
            calls.append(function)
            return await real(function, *args, **kwargs)

        monkeypatch.setattr(trio.to_thread, "run_sync", counted)
        before = time.time()
        assert (await streams.append("s", AppendRequest(TEXT, b"two"))).status == 204
        monkeypatch.undo()
        assert len(calls) == 2, calls
        assert (await streams.read("s", Sentinel.START, 100)).data == b"onetwo"
    with psycopg.connect(postgres_url) as connection:
        row = connection.execute("SELECT accessed_at FROM ds_streams").fetchone()
    assert row is not None and row[0] >= before  # the append's access, shared


def spy(
    monkeypatch: pytest.MonkeyPatch, storage: PostgresStorage
) -> tuple[list[tuple[str, bool]], list[str]]:
    """The refreshes (name, whether the tail moved) and reads (name) of `storage`'s logs."""
    refreshes: list[tuple[str, bool]] = []
    reads: list[str] = []
    refresh, read = PostgresLog.refresh, PostgresLog.read

    async def refreshed(log: PostgresLog, fold: Fold) -> bool:
        moved = await refresh(log, fold)
        if log._storage is storage:
            refreshes.append((log._name, moved))
        return moved

    async def counted(log: PostgresLog, slices: Iterable[Slice]) -> bytes:
        if log._storage is storage:
            reads.append(log._name)
        return await read(log, slices)

    monkeypatch.setattr(PostgresLog, "refresh", refreshed)
    monkeypatch.setattr(PostgresLog, "read", counted)
    return refreshes, reads


def resident(registry: Registry, name: str) -> bool:
    return name in registry._actors


async def test_a_commit_elsewhere_costs_an_actor_nobody_watches_nothing_until_asked(
    pair: tuple[Process, Process], monkeypatch: pytest.MonkeyPatch
) -> None:
    """B's actor of `s` (resident: it appended) is not woken by A's append to `s`; its next
    request folds it. A reader parked on B's `sync`, to which A appends next, says when B
    has had A's notification for `s` (notifications come in commit order)."""
    a, b = pair
    for name in ("s", "sync"):
        await a.streams.create(name, CreateRequest(StreamConfig(TEXT)))
    assert (await b.streams.append("s", AppendRequest(TEXT, b"one"))).status == 204
    following = await parked(b.streams.follow("sync", Sentinel.START))
    refreshes, _ = spy(monkeypatch, b.storage)
    await a.streams.append("s", AppendRequest(TEXT, b"two"))
    await a.streams.append("sync", AppendRequest(TEXT, b"now"))
    with trio.fail_after(BOUND):
        assert (await following()).data == b"now"
    assert resident(b.registry, "s")
    assert (await b.streams.read("s", Sentinel.START, 100)).data == b"onetwo"
    assert [r for r in refreshes if r[0] == "s"] == [("s", True)]  # the read's, only


async def test_readers_parked_on_b_get_a_s_append_from_one_read(
    pair: tuple[Process, Process], monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b = pair
    await a.streams.create("s", CreateRequest(StreamConfig(TEXT)))
    followers = [await parked(b.streams.follow("s", Sentinel.START)) for _ in range(3)]
    _, reads = spy(monkeypatch, b.storage)
    got: list[bytes] = []

    async def follow(following: Any) -> None:
        got.append((await following()).data)

    with trio.fail_after(BOUND):
        async with trio.open_nursery() as nursery:
            for following in followers:
                nursery.start_soon(follow, following)
            await trio.testing.wait_all_tasks_blocked()  # the followers wait at the tail
            await a.streams.append("s", AppendRequest(TEXT, b"hello"))
    assert got == [b"hello"] * 3
    assert reads == ["s"]
    # Kept in B's tail cache: a reader from there reads no more.
    assert (await b.streams.read("s", Sentinel.START, 100)).data == b"hello"
    assert reads == ["s"]
