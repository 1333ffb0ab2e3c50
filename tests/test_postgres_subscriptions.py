"""Subscriptions shared by several processes on one database (docs/subscriptions.md,
"Several processes"): two in-process servers, each with its registry, its subscription
supervisor and its listening connection, as two server processes would run. The official
conformance suite's subscription tests run across processes in tests/test_conformance.py
(`postgres-haproxy`, `postgres-workers`)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import psycopg
import pytest
import trio

from actors.service import Streams
from actors.storage.pg_listen import Listener
from actors.storage.pg_subscriptions import CHANNEL, LEAD, PostgresSubscriptions
from actors.storage.postgres import PostgresStorage
from streams.protocol import offsets
from streams.protocol.machine import AppendRequest, CreateRequest
from streams.protocol.records import StreamConfig
from tests.on_disk import started
from tests.postgres import Cluster
from tests.subscription_helpers import Served, done, serving
from tests.test_subscriptions import SUBS, hook, puller

BOUND = 20  # seconds: the most a test waits for what should come at once
RETRY = 0.05  # how often a process tries for the lead, and reconnects its listener


async def until(condition: Callable[[], bool]) -> None:
    """Wait (bounded) for a condition another task or process makes true."""
    with trio.fail_after(BOUND):
        while not condition():
            await trio.sleep(RETRY)


async def _nothing() -> None:
    pass


@asynccontextmanager
async def process(
    url: str,
    listeners: list[Listener] | None = None,
    lost: Callable[[], Awaitable[None]] = _nothing,
    **limits: Any,
) -> AsyncIterator[Served]:
    """One server process: streams and subscriptions in the database `url`, listening for
    the other processes' changes (its listener appended to `listeners`; `lost` awaited
    before it reconnects)."""
    storage = PostgresStorage.connect(url, max_size=4)
    store = PostgresSubscriptions(url, max_size=4)
    try:
        async with serving(storage, store, lead_retry=RETRY, **limits) as served:
            listener = Listener(
                url,
                lambda stream, tail, generation: served.subs.moved(stream),
                served.subs.resynced,
                retry=RETRY,
                lost=lost,
                channels={CHANNEL: served.subs.changed},
            )
            if listeners is not None:
                listeners.append(listener)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(listener.run)
                yield served
                nursery.cancel_scope.cancel()
    finally:
        store.close()
        storage.close()


@pytest.fixture
async def pair(postgres_url: str) -> AsyncIterator[tuple[Served, Served]]:
    """A, which delivers (it started first and took the lead), and B, which does not."""
    async with process(postgres_url) as a:
        await until(lambda: a.subs.delivering)
        async with process(postgres_url) as b:
            yield a, b


async def test_created_on_a_read_and_deleted_on_b(pair: tuple[Served, Served]) -> None:
    a, b = pair
    await a.stream("events/old", {"n": 0})
    status, created = await a("PUT", SUBS + "s1", hook())
    assert status == 201
    assert await b("GET", SUBS + "s1") == (200, created)
    assert (await b("PUT", SUBS + "s1", hook()))[0] == 200  # the same configuration
    status, body = await b("PUT", SUBS + "s1", hook(description="other"))
    assert (status, body["error"]["code"]) == (409, "SUBSCRIPTION_ALREADY_EXISTS")
    assert (await b("DELETE", SUBS + "s1"))[0] == 204
    assert (await a("GET", SUBS + "s1"))[0] == 404


async def test_concurrent_creates_on_both_keep_the_subscription_limit(postgres_url: str) -> None:
    async with (
        process(postgres_url, max_subscriptions=1) as a,
        process(postgres_url, max_subscriptions=1) as b,
    ):
        statuses: list[int] = []

        async def create(served: Served, id: str) -> None:
            statuses.append((await served("PUT", SUBS + id, hook()))[0])

        async with trio.open_nursery() as nursery:
            for index in range(10):  # more than a pool holds: holds queue, none deadlocks
                nursery.start_soon(create, (a, b)[index % 2], f"s{index}")
        assert sorted(statuses) == [201] + [409] * 9


async def test_claimed_on_a_acked_on_b(pair: tuple[Served, Served]) -> None:
    """The lease and the generation are the database's: B sees A's claim, A sees B's ack."""
    a, b = pair
    await a.stream("wake", [])
    assert (await a("PUT", SUBS + "p", puller()))[0] == 201
    await b.stream("events/x", {"n": 1})  # a new stream on B: linked, pending
    status, claimed = await a("POST", SUBS + "p/claim", {"worker": "w1"})
    assert status == 200, claimed
    status, refused = await b("POST", SUBS + "p/claim", {"worker": "w2"})
    assert (status, refused["error"]["code"]) == (409, "ALREADY_CLAIMED")
    assert refused["error"]["current_holder"] == "w1"
    tail = claimed["streams"][0]["tail_offset"]
    ack = {
        "wake_id": claimed["wake_id"],
        "generation": claimed["generation"],
        "acks": [{"stream": "events/x", "offset": tail}],
        "done": True,
    }
    auth = {"Authorization": "Bearer " + claimed["token"]}
    assert await b("POST", SUBS + "p/ack", ack, auth) == (200, {"ok": True, "next_wake": False})
    assert (await a("POST", SUBS + "p/ack", ack, auth))[0] == 409  # fenced: the wake ended
    status, idle = await a("POST", SUBS + "p/claim", {"worker": "w1"})
    assert (status, idle["error"]["code"]) == (409, "NO_PENDING_WORK")
    await a("POST", "events/x", b'{"n": 2}', {"Content-Type": "application/json"})
    status, again = await b("POST", SUBS + "p/claim", {"worker": "w2"})
    assert status == 200 and again["generation"] > claimed["generation"]


async def test_concurrent_claims_on_both_have_one_holder_per_generation(
    pair: tuple[Served, Served],
) -> None:
    a, b = pair
    await a.stream("wake", [])
    assert (await a("PUT", SUBS + "p", puller()))[0] == 201
    holders: dict[int, list[str]] = {}
    for round in range(4):
        await (a, b)[round % 2].stream(f"events/{round}", {"n": round})
        won: list[tuple[int, dict[str, Any]]] = []

        async def claim(served: Served, worker: str, won: list[Any] = won) -> None:
            status, body = await served("POST", SUBS + "p/claim", {"worker": worker})
            if status == 200:
                won.append((body["generation"], body))
            else:
                assert body["error"]["code"] in ("ALREADY_CLAIMED", "NO_PENDING_WORK"), body

        async with trio.open_nursery() as nursery:
            for index in range(6):
                nursery.start_soon(claim, (a, b)[index % 2], f"w{round}.{index}")
        assert len(won) == 1, won
        generation, body = won[0]
        holders.setdefault(generation, []).append(body["token"])
        release = {"wake_id": body["wake_id"], "generation": generation}
        auth = {"Authorization": "Bearer " + body["token"]}
        assert (await (b, a)[round % 2]("POST", SUBS + "p/release", release, auth))[0] == 204
    assert all(len(tokens) == 1 for tokens in holders.values())  # no generation twice


async def test_a_lease_that_ran_out_is_over_on_every_process(
    postgres_url: str, mock_clock: trio.testing.MockClock
) -> None:
    """No process runs the timers here (the test holds the lead), yet a lease that ran out
    is over wherever it is next used: the old holder is fenced, another worker claims."""
    mock_clock.rate = 1.0  # real time, plus the jump below
    with psycopg.connect(postgres_url, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s, %s)", LEAD)
        async with process(postgres_url) as a, process(postgres_url) as b:
            await a.stream("wake", [])
            assert (await a("PUT", SUBS + "p", puller(lease_ttl_ms=1000)))[0] == 201
            await b.stream("events/x", {"n": 1})
            status, claimed = await a("POST", SUBS + "p/claim", {"worker": "w1"})
            assert status == 200
            mock_clock.jump(2)
            beat = {"wake_id": claimed["wake_id"], "generation": claimed["generation"]}
            auth = {"Authorization": "Bearer " + claimed["token"]}
            status, fenced = await b("POST", SUBS + "p/ack", beat, auth)
            assert (status, fenced["error"]["code"]) == (409, "FENCED")
            status, again = await b("POST", SUBS + "p/claim", {"worker": "w2"})
            assert status == 200 and again["generation"] == claimed["generation"] + 1
            assert not a.subs.delivering and not b.subs.delivering


async def test_an_append_on_b_wakes_a_webhook_delivered_by_a_once(
    pair: tuple[Served, Served],
) -> None:
    a, b = pair
    a.receiver.reply = b.receiver.reply = done
    assert (await b("PUT", SUBS + "s1", hook()))[0] == 201  # made on B, delivered by A
    for n in range(3):
        await b.stream(f"events/{n}", {"n": n})
        with trio.fail_after(BOUND):
            delivery = await a.receiver.next()
        assert delivery["subscription_id"] == "s1"
        paths = {s["path"] for s in delivery["streams"] if s["has_pending"]}
        assert paths == {f"events/{n}"}
    tails = {f"events/{n}": offsets.encode(len(json.dumps({"n": n}))) for n in range(3)}

    def acked(body: dict[str, Any]) -> dict[str, str]:
        return {s["path"]: s["acked_offset"] for s in body["streams"]}

    async def settled() -> bool:
        status, body = await b("GET", SUBS + "s1")
        return status == 200 and acked(body) == tails

    with trio.fail_after(BOUND):
        while not await settled():
            await trio.sleep(RETRY)
    assert (a.receiver.count, b.receiver.count) == (3, 0)  # each wake delivered once
    assert a.subs.delivering and not b.subs.delivering


async def test_a_commit_on_a_process_that_does_not_look_still_wakes(postgres_url: str) -> None:
    """B commits and never looks at subscriptions (as a process killed just after its commit
    would not): A, which delivers, learns of the commit from its notification."""
    async with process(postgres_url) as a:
        await until(lambda: a.subs.delivering)
        a.receiver.reply = done
        assert (await a("PUT", SUBS + "s1", hook()))[0] == 201
        storage = PostgresStorage.connect(postgres_url, max_size=2)
        try:
            async with trio.open_nursery() as nursery:
                b = Streams(await started(storage, nursery))  # streams, no subscriptions
                await b.create("events/x", CreateRequest(StreamConfig("text/plain")))
                await b.append("events/x", AppendRequest("text/plain", b"data"))
                with trio.fail_after(BOUND):
                    delivery = await a.receiver.next()
                assert delivery["streams"] == [
                    {
                        "path": "events/x",
                        "link_type": "glob",
                        "acked_offset": "-1",
                        "tail_offset": offsets.encode(4),
                        "has_pending": True,
                    }
                ]
                nursery.cancel_scope.cancel()
        finally:
            storage.close()


async def test_the_key_ring_is_made_once_and_rotated_for_all(
    pair: tuple[Served, Served],
) -> None:
    a, b = pair
    first = (await a("GET", "__ds/jwks.json"))[1]
    assert (await b("GET", "__ds/jwks.json"))[1] == first and len(first["keys"]) == 1
    await a.subs.rotate()
    rotated = (await b("GET", "__ds/jwks.json"))[1]
    assert rotated["keys"][0]["kid"] == first["keys"][0]["kid"]
    assert len(rotated["keys"]) == 2
    _, created = await b("PUT", SUBS + "s1", hook())
    assert created["webhook"]["signing"]["kid"] == a.subs.ring.active.kid
    assert created["webhook"]["signing"]["kid"] == rotated["keys"][1]["kid"]


async def answered(operation: Callable[[], Awaitable[tuple[int, Any]]]) -> tuple[int, Any]:
    """As a client does with a 503: again, after a pause, until answered (bounded)."""
    with trio.fail_after(BOUND):
        while True:
            status, body = await operation()
            if status != 503:
                return status, body
            error = body.get("error", body)  # the subscriptions JSON, or problem details
            assert error["code"] == "STORAGE_UNAVAILABLE", body
            await trio.sleep(RETRY)  # the client's back-off


async def test_subscriptions_go_on_when_the_database_restarts(
    pair: tuple[Served, Served], postgres_cluster: Cluster
) -> None:
    """A restart closes every connection: a request that meets a closed one is answered 503
    (nothing it did is kept), the pool replaces the others, the lead is taken again, and a
    wake issued after the restart is delivered."""
    a, b = pair
    a.receiver.reply = b.receiver.reply = done
    assert (await a("PUT", SUBS + "s1", hook()))[0] == 201
    await trio.to_thread.run_sync(postgres_cluster.restart)
    first = await b("GET", SUBS + "s1")
    assert first[0] in (200, 503), first  # a closed connection: 503, not 500
    assert (await answered(lambda: b("GET", SUBS + "s1")))[0] == 200
    assert (await answered(lambda: a("GET", SUBS + "s1")))[0] == 200
    status, _ = await answered(
        lambda: b("PUT", "events/x", b'{"n": 1}', {"Content-Type": "application/json"})
    )
    assert status == 201
    await until(lambda: a.receiver.count + b.receiver.count >= 1)


async def test_another_process_takes_over_delivery_when_the_first_ends(
    postgres_url: str,
) -> None:
    leading, stop, stopped = trio.Event(), trio.Event(), trio.Event()
    done_by: list[Served] = []

    async def first() -> None:
        async with process(postgres_url) as a:
            done_by.append(a)
            await until(lambda: a.subs.delivering)
            leading.set()
            await stop.wait()
        stopped.set()  # its lead connection closed with it

    async with trio.open_nursery() as nursery:
        nursery.start_soon(first)
        with trio.fail_after(BOUND):
            await leading.wait()
        async with process(postgres_url) as b:
            b.receiver.reply = done
            assert (await b("PUT", SUBS + "s1", hook()))[0] == 201
            assert not b.subs.delivering
            stop.set()
            with trio.fail_after(BOUND):
                await stopped.wait()
            await until(lambda: b.subs.delivering)
            await b.stream("events/x", {"n": 1})
            with trio.fail_after(BOUND):
                delivery = await b.receiver.next()
            assert delivery["streams"][0]["path"] == "events/x"
            assert done_by[0].receiver.count == 0


async def test_changes_made_while_the_deliverer_was_not_listening_are_delivered(
    postgres_url: str,
) -> None:
    """B makes a subscription and wakes it while A, which delivers, has lost its listening
    connection (the notifications are lost for A): A reads everything again on reconnecting."""
    listeners: list[Listener] = []
    away, back = trio.Event(), trio.Event()

    async def lost() -> None:
        away.set()
        await back.wait()

    async with process(postgres_url, listeners, lost) as a:
        await until(lambda: a.subs.delivering)
        a.receiver.reply = done
        async with process(postgres_url) as b:
            await until(lambda: listeners[0].backend is not None)  # connected, in its thread
            with psycopg.connect(postgres_url, autocommit=True) as admin:
                admin.execute("SELECT pg_terminate_backend(%s)", (listeners[0].backend,))
            with trio.fail_after(BOUND):
                await away.wait()
            assert (await b("PUT", SUBS + "s1", hook()))[0] == 201
            await b.stream("events/x", {"n": 1})
            back.set()
            with trio.fail_after(BOUND):
                delivery = await a.receiver.next()
            assert delivery["streams"][0]["path"] == "events/x"
            assert b.receiver.count == 0
