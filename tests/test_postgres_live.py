"""Live reads across processes (docs/scaling.md): two registries on one database, as two
server processes would run, each with its listening connection; a reader following a stream
on B is woken by appends on A, also after B's listening connection was killed."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import attrs
import psycopg
import pytest
import trio

from actors.follow import Batch, Follower
from actors.registry import Registry
from actors.service import Streams
from actors.storage.pg_listen import Listener
from actors.storage.postgres import PostgresStorage
from streams.protocol.machine import AppendRequest, CreateRequest
from streams.protocol.offsets import Sentinel
from streams.protocol.records import StreamConfig
from tests.on_disk import started
from tests.postgres import Cluster
from tests.test_postgres import BASE, postgres_env, two_servers
from tests.test_postgres_restart import retried_once

TEXT = "text/plain"
BOUND = 20  # seconds: the most a test waits for what should come at once


async def _nothing() -> None:
    pass


@attrs.define
class Process:
    """One process's registry and listener; `listening` is set at each (re)connection, and
    `lost` runs while the listener is disconnected, before it reconnects."""

    streams: Streams
    registry: Registry
    storage: PostgresStorage
    listener: Listener
    listening: trio.Event = attrs.field(factory=trio.Event)
    lost: Callable[[], Awaitable[None]] = _nothing


async def process(url: str, nursery: trio.Nursery) -> Process:
    storage = PostgresStorage.connect(url, max_size=4)
    registry = await started(storage, nursery)

    def moved(stream: int, tail: int, generation: int | None) -> None:
        behind = storage.behind(stream, tail, generation)
        if behind is not None:
            name, replaced = behind
            registry.refresh(name, watched_only=not replaced)

    def listening() -> None:
        registry.refresh_all()
        here.listening.set()

    async def lost() -> None:
        here.listening = trio.Event()
        await here.lost()

    # As streams.app.listen wires it: the pool checked when the listener is back.
    listener = Listener(
        url, moved, listening, retry=0.05, lost=lost, reconnected=storage.check_pool
    )
    here = Process(Streams(registry), registry, storage, listener)
    nursery.start_soon(listener.run)
    return here


@pytest.fixture
async def pair(postgres_url: str) -> AsyncIterator[tuple[Process, Process]]:
    async with trio.open_nursery() as nursery:
        a = await process(postgres_url, nursery)
        b = await process(postgres_url, nursery)
        with trio.fail_after(BOUND):
            await a.listening.wait()
            await b.listening.wait()
        yield a, b
        nursery.cancel_scope.cancel()
    a.storage.close()
    b.storage.close()


async def parked(follower: Follower) -> Callable[[], Awaitable[Batch]]:
    """The follower's first batch read (so its next waits at the tail), and its next batch."""
    first = await follower.__anext__()
    assert first.up_to_date and not first.data
    return follower.__anext__


async def test_a_reader_parked_on_b_is_woken_by_an_append_on_a(
    pair: tuple[Process, Process],
) -> None:
    a, b = pair
    await a.streams.create("s", CreateRequest(StreamConfig(TEXT)))
    following = await parked(b.streams.follow("s", Sentinel.START))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(a.streams.append, "s", AppendRequest(TEXT, b"hello"))
        with trio.fail_after(BOUND):  # only A's notification makes B's actor look again
            batch = await following()
    assert batch.data == b"hello"


async def test_a_follower_on_b_gets_appends_on_a_in_order(pair: tuple[Process, Process]) -> None:
    a, b = pair
    await a.streams.create("s", CreateRequest(StreamConfig(TEXT)))
    count = 30
    expected = b"".join(b"<%02d>" % i for i in range(count))
    got = b""
    async with trio.open_nursery() as nursery:

        async def writer() -> None:
            for i in range(count):
                await a.streams.append("s", AppendRequest(TEXT, b"<%02d>" % i))

        follower = b.streams.follow("s", Sentinel.START)
        following = await parked(follower)
        nursery.start_soon(writer)
        with trio.fail_after(BOUND):
            while len(got) < len(expected):
                got += (await following()).data
    assert got == expected


async def test_a_reader_gets_data_committed_while_the_listener_was_disconnected(
    pair: tuple[Process, Process], postgres_url: str
) -> None:
    """The append lands while B is not listening, so its notification is lost for B: the
    re-check after reconnecting wakes the reader."""
    a, b = pair
    await a.streams.create("s", CreateRequest(StreamConfig(TEXT)))
    following = await parked(b.streams.follow("s", Sentinel.START))
    appended = trio.Event()

    async def append_meanwhile() -> None:
        await a.streams.append("s", AppendRequest(TEXT, b"while away"))
        appended.set()

    b.lost = append_meanwhile
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (b.listener.backend,))
    with trio.fail_after(BOUND):
        batch = await following()
    assert appended.is_set() and b.listening.is_set()
    assert batch.data == b"while away"


async def test_a_reader_keeps_following_across_a_database_restart(
    pair: tuple[Process, Process], postgres_cluster: Cluster
) -> None:
    """The restart closes every connection of both processes, the listening ones too: B
    listens again, and its pool is checked before its streams look at their tails: the
    reader parked on B gets A's next append from the actor it was parked on."""
    a, b = pair
    await a.streams.create("s", CreateRequest(StreamConfig(TEXT)))
    following = await parked(b.streams.follow("s", Sentinel.START))
    resident = b.registry._actors["s"]
    await trio.to_thread.run_sync(postgres_cluster.restart)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(retried_once, partial(a.streams.append, "s", AppendRequest(TEXT, b"x")))
        with trio.fail_after(BOUND):
            batch = await following()
    assert batch.data == b"x"
    # B's actor kept its state: it never met a connection the restart had closed (that
    # would stop it, and its stream would be recovered from the database again).
    assert b.registry._actors["s"] is resident


def test_a_long_poll_on_one_server_process_is_answered_by_an_append_on_another(
    tmp_path: Path, postgres_url: str
) -> None:
    """Through HTTP, two server processes: the long-poll waits far longer than the client
    does, so only the notification can answer it in time."""
    env = {**postgres_env(postgres_url), "DS_SERVER__LONG_POLL_TIMEOUT_SECS": "600"}
    text = {"Content-Type": "text/plain"}
    with two_servers(tmp_path, env, timeout=BOUND) as (one, two):
        created = one.put(f"{BASE}/s", headers=text)
        assert created.status_code == 201
        tail = created.headers["Stream-Next-Offset"]
        with ThreadPoolExecutor(1) as pool:
            for body in (b"one", b"two"):
                live = {"offset": tail, "live": "long-poll"}
                polling = pool.submit(two.get, f"{BASE}/s", params=live)
                assert one.post(f"{BASE}/s", content=body, headers=text).status_code == 204
                reply = polling.result()
                assert reply.status_code == 200 and reply.content == body
                tail = reply.headers["Stream-Next-Offset"]
