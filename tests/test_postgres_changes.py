"""Deletes and compactions across processes (docs/scaling.md): two registries on one database,
each with its listening connection, as two server processes would run. A reader parked on B
ends when A deletes the stream, as if B had (also through HTTP, SSE and long-poll, on two
server processes); B's resident actor of a stream A compacted opens
the new log at once; a checkpoint B writes of a log A compacted since is not kept."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg
import pytest
import trio

from actors import actor as actor_module
from actors import messages as m
from actors.follow import Follower
from actors.registry import Registry
from actors.service import Streams
from actors.storage.postgres import PostgresLog, PostgresStorage
from streams.protocol.errors import ProtocolError
from streams.protocol.machine import AppendRequest, CreateRequest
from streams.protocol.offsets import Sentinel
from streams.protocol.records import StreamConfig
from streams.protocol.requests import Fork
from tests.on_disk import started
from tests.test_postgres import BASE, postgres_env, two_servers
from tests.test_postgres_live import BOUND, Process, pair, parked

__all__ = ["pair"]  # the fixture, used by name
TEXT = "text/plain"
JSON = "application/json"


async def ended(follower: Follower) -> ProtocolError:
    """How the follower's iteration ended (it must end, with the stream gone)."""
    with trio.fail_after(BOUND):
        async for batch in follower:
            assert not batch.data, batch
    assert follower.gone is not None
    return follower.gone


@pytest.mark.parametrize("forked", [False, True], ids=["removed", "soft-deleted"])
async def test_a_reader_parked_on_b_ends_when_a_deletes_the_stream(
    pair: tuple[Process, Process], forked: bool
) -> None:
    """As it ends when the delete is made on B itself: 404, or 410 while a fork reads it."""
    a, b = pair
    statuses = []
    for deleter in (b, a):  # the same stream's life on B, then across processes
        await a.streams.create("s", CreateRequest(StreamConfig(TEXT)))
        if forked:
            await a.streams.create("f", CreateRequest(StreamConfig(TEXT)), Fork("s"))
        follower = b.streams.follow("s", Sentinel.START)
        await parked(follower)
        await deleter.streams.delete("s")
        statuses.append((await ended(follower)).status)
        if forked:
            await a.streams.delete("f")  # collects the soft-deleted source
            with pytest.raises(ProtocolError):
                await b.streams.head("s")
    assert statuses == ([410, 410] if forked else [404, 404])


def change(key: str, value: int) -> bytes:
    message = {"type": "t", "key": key, "value": value, "headers": {"operation": "upsert"}}
    return json.dumps([message]).encode()


async def compacted(streams: Streams, name: str) -> int:
    """Appends on `streams` until its actor has compacted `name`; the base."""
    for i in range(300):
        await streams.append(name, AppendRequest(JSON, change(f"k{i % 3}", i)))
        described: m.Snapshot = await streams.registry.call(name, m.Describe())
        if described.base:
            return described.base
    raise AssertionError(f"{name} did not compact")


def generation(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as connection:
        row = connection.execute("SELECT generation FROM ds_streams").fetchone()
    assert row is not None
    return int(row[0])


def resident_log(registry: Registry, name: str) -> PostgresLog | None:
    actor = registry._actors.get(name)
    log = None if actor is None else actor.log
    assert log is None or isinstance(log, PostgresLog)
    return log


async def test_a_compaction_on_a_has_b_open_the_new_log_at_once(
    pair: tuple[Process, Process], postgres_url: str
) -> None:
    """A's compaction is notified with the row's new generation, and B's actor, resident
    (its stream read), recovers from that generation without a request."""
    a, b = pair
    await a.streams.create("s", CreateRequest(StreamConfig(JSON, state_compaction=1)))
    await b.streams.read("s", Sentinel.START, 100)
    notified, reopened = trio.Event(), trio.Event()
    moved, committed = b.listener._moved, b.registry.committed

    def notice(stream: int, tail: int, generation: int | None) -> None:
        if generation:
            notified.set()
        moved(stream, tail, generation)

    def watch(name: str, tail: int | None) -> None:
        committed(name, tail)
        log = resident_log(b.registry, "s")
        if log is not None and log.generation == generation(postgres_url) > 0:
            reopened.set()

    b.listener._moved = notice
    b.registry.committed = watch  # type: ignore[method-assign]
    await compacted(a.streams, "s")
    with trio.fail_after(BOUND):
        await notified.wait()
        await reopened.wait()


async def test_a_checkpoint_of_a_log_compacted_elsewhere_is_not_kept(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """B's actor retires (checkpointing its state) after A compacted the stream, with no
    notification to tell it: the record positions it would save are the old log's, so a
    process opening the stream later must not use them."""
    monkeypatch.setattr(actor_module, "CHECKPOINT", 1)
    storages = [PostgresStorage.connect(postgres_url, max_size=4) for _ in range(3)]
    try:
        async with trio.open_nursery() as nursery:
            a, b, c = [Streams(await started(s, nursery, idle_timeout=3600)) for s in storages]
            await a.create("s", CreateRequest(StreamConfig(JSON, state_compaction=1)))
            for i in range(3):
                await b.append("s", AppendRequest(JSON, change(f"b{i}", i)))
            base = await compacted(a, "s")
            actor: Any = b.registry._actors["s"]
            assert actor.retire()  # idle: it checkpoints its (old) state and stops
            with trio.fail_after(BOUND):
                await b.registry.all_stopped()
            for i in range(40):  # the new log grows past the old one's end
                await a.append("s", AppendRequest(JSON, change(f"a{i}", i)))
            expected = (await a.read("s", base, 1 << 20)).data
            assert len(expected) > 40
            assert (await c.read("s", base, 1 << 20)).data == expected
            nursery.cancel_scope.cancel()
    finally:
        for storage in storages:
            storage.close()


async def test_a_compaction_on_a_between_b_s_commit_and_b_s_compaction(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Both processes compact the stream: A's lands after B's commit released the row lock
    and before B's own compaction step. B's step gives way (its actor does not fail), and
    B's next request reads A's compacted log."""
    storages = [PostgresStorage.connect(postgres_url, max_size=4) for _ in range(2)]
    armed = False
    release = PostgresLog.release

    async def released(log: PostgresLog) -> None:
        nonlocal armed
        await release(log)
        if armed and log._storage is storages[1]:
            armed = False
            await compacted(a, "s")

    monkeypatch.setattr(PostgresLog, "release", released)
    try:
        async with trio.open_nursery() as nursery:
            a, b = [Streams(await started(s, nursery, idle_timeout=3600)) for s in storages]
            await a.create("s", CreateRequest(StreamConfig(JSON, state_compaction=1)))
            for i in range(20):  # until B prepares a compaction
                await b.append("s", AppendRequest(JSON, change("b", i)))
                await b.registry.call("s", m.Describe())  # after its compaction step
                actor = b.registry._actors["s"]
                if actor.compactor.prepared is not None:
                    break
            assert actor.compactor.prepared is not None
            armed = True
            assert (await b.append("s", AppendRequest(JSON, change("b", 1)))).status == 204
            assert not armed
            assert b.registry._actors.get("s") is actor  # it did not fail
            described: m.Snapshot = await b.registry.call("s", m.Describe())
            assert described.base == (await a.registry.call("s", m.Describe())).base > 0
            got = await b.read("s", described.base, 1 << 20)
            assert got.data == (await a.read("s", described.base, 1 << 20)).data
            nursery.cancel_scope.cancel()
    finally:
        for storage in storages:
            storage.close()
    assert not [r for r in caplog.records if r.levelname == "ERROR"]


def test_an_sse_reader_on_one_server_process_ends_when_another_deletes_the_stream(
    tmp_path: Path, postgres_url: str
) -> None:
    """Through HTTP, two server processes: the SSE response on the second ends when the
    first deletes the stream, as it does when the second deletes it itself, long before its
    reconnect interval; a long-poll there is answered 404 either way."""
    env = {
        **postgres_env(postgres_url),
        "DS_SERVER__LONG_POLL_TIMEOUT_SECS": "600",
        "DS_SERVER__SSE_RECONNECT_INTERVAL_SECS": "600",
    }
    text = {"Content-Type": TEXT}
    with two_servers(tmp_path, env, timeout=BOUND) as (one, two):
        for deleter in (two, one):
            assert one.put(f"{BASE}/s", headers=text).status_code == 201
            live = {"offset": "-1", "live": "sse"}
            with (
                ThreadPoolExecutor(1) as pool,
                two.stream("GET", f"{BASE}/s", params=live) as events,
            ):
                assert events.status_code == 200
                lines = events.iter_lines()
                while not next(lines).startswith("event: control"):
                    pass  # the reader is following: its first batch was sent
                assert deleter.delete(f"{BASE}/s").status_code == 204
                # To the end of the response (heartbeats would keep a read timeout away).
                pool.submit(list, lines).result(timeout=BOUND)
            assert one.put(f"{BASE}/s", headers=text).status_code == 201
            with ThreadPoolExecutor(1) as pool:
                tail = {"offset": "now", "live": "long-poll"}
                polling = pool.submit(two.get, f"{BASE}/s", params=tail)
                assert deleter.delete(f"{BASE}/s").status_code == 204
                assert polling.result().status_code == 404
