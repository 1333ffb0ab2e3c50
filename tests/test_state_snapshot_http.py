"""Snapshot responses driven in-process (tests/asgi.py), where the test decides when the
client reads: a snapshot is sent in pieces from the entity list the actor pinned, so it needs
no second copy of itself in memory, and whatever commits while it is being sent, it is the
state at its own Stream-Next-Offset, never a mix of two offsets.
"""

from __future__ import annotations

import hashlib
import json
import tracemalloc
from typing import Any

import pytest
import trio

from actors import messages as m
from actors.registry import Registry
from actors.service import Streams
from actors.storage.memory import MemoryStorage
from streams.config import Settings
from streams.http import StreamsHTTP
from streams.protocol import offsets
from tests.asgi import Exchange, Handler, request

JSON = {"Content-Type": "application/json"}


async def serving(nursery: trio.Nursery, **settings: Any) -> tuple[StreamsHTTP, Registry]:
    registry = Registry(MemoryStorage())
    await nursery.start(registry.run)
    app = StreamsHTTP(Streams(registry), Settings(storage_mode="memory", **settings))
    return app, registry


def change(key: str, value: Any, operation: str = "upsert") -> dict[str, Any]:
    return {"type": "todo", "key": key, "value": value, "headers": {"operation": operation}}


async def append(app: Handler, name: str, *messages: Any) -> str:
    response = await request(app, "POST", name, json.dumps(list(messages)).encode(), headers=JSON)
    assert response.status in (200, 204), response.body
    return response.headers["stream-next-offset"]


def inserts(offset: str, rows: dict[str, Any]) -> list[Any]:
    """The snapshot of `rows` (key -> value, in order of last write) at `offset`."""
    start = {"headers": {"control": "snapshot-start", "offset": offset}}
    end = {"headers": {"control": "snapshot-end", "offset": offset}}
    body = [
        {"type": "todo", "key": k, "value": v, "headers": {"operation": "insert"}}
        for k, v in rows.items()
    ]
    return [start, *body, end]


class Receiver(Exchange):
    """A client that takes the response a send at a time, as the test lets it: each send
    waits until `allowed` sends have been taken; `taken` is set after each."""

    def __init__(self, query: str, allowed: float = float("inf")) -> None:
        super().__init__("GET", "/v1/stream/s", {}, query)
        self.feed(b"", more=False)
        self.allowed = allowed
        self.sends = 0
        self._moved = trio.Event()

    async def send(self, event: dict[str, Any]) -> None:
        while self.sends >= self.allowed:
            await self._moved.wait()
        await super().send(event)
        self.sends += 1
        self._moved.set()
        self._moved = trio.Event()

    def allow(self, sends: float) -> None:
        self.allowed = sends
        self._moved.set()
        self._moved = trio.Event()

    async def until(self, done: Any) -> None:
        """Wait until `done()` holds of what was received."""
        while not done():
            await self._moved.wait()


class Counter(Exchange):
    """A client that reads the body and keeps only its length and digest."""

    def __init__(self, query: str) -> None:
        super().__init__("GET", "/v1/stream/s", {}, query)
        self.feed(b"", more=False)
        self.length = 0
        self.digest = hashlib.sha256()
        self.largest = 0

    async def send(self, event: dict[str, Any]) -> None:
        if event["type"] == "http.response.start":
            await super().send(event)
            return
        body = event.get("body", b"")
        self.length += len(body)
        self.largest = max(self.largest, len(body))
        self.digest.update(body)
        if not event.get("more_body", False):
            self.done.set()


ENTITIES = 100_000


async def test_a_snapshot_of_100k_entities_is_sent_without_a_second_copy() -> None:
    async with trio.open_nursery() as nursery:
        app, _ = await serving(nursery, read_piece_bytes=64 * 1024)
        assert (await request(app, "PUT", "s", headers=JSON)).status == 201
        for batch in range(10):
            keys = range(batch * ENTITIES // 10, (batch + 1) * ENTITIES // 10)
            tail = await append(
                app, "s", *(change(f"k{i:06}", "v" * 60) for i in range(keys.start, keys.stop))
            )
        # The view is built on this first state read, before the measurement.
        one = await request(app, "GET", "s", query="state=entity&type=todo&key=k000000")
        assert one.status == 200

        counter = Counter("state=snapshot")
        tracemalloc.start()
        try:
            before, _ = tracemalloc.get_traced_memory()
            await counter.serve(app)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert counter.response.status == 200
        assert counter.length == int(counter.response.headers["content-length"])
        assert counter.largest < 2 * 64 * 1024  # pieces, never the whole body
        # The pinned list (8 bytes an entity) and a piece or two: far less than the body.
        assert peak - before < counter.length / 4, (peak - before, counter.length)

        whole = await request(app, "GET", "s", query="state=snapshot")
        assert hashlib.sha256(whole.body).digest() == counter.digest.digest()
        body = json.loads(whole.body)
        assert len(body) == ENTITIES + 2
        assert body[0]["headers"]["offset"] == body[-1]["headers"]["offset"] == tail
        assert [row["key"] for row in body[1:4]] == ["k000000", "k000001", "k000002"]
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("live", [False, True])
async def test_a_snapshot_is_one_offset_whatever_commits_while_it_is_sent(live: bool) -> None:
    keys = [f"k{i:04}" for i in range(2000)]
    async with trio.open_nursery() as nursery:
        app, _ = await serving(nursery, read_piece_bytes=1024)
        assert (await request(app, "PUT", "s", headers=JSON)).status == 201
        tail = await append(app, "s", *(change(k, f"old {k}") for k in keys))
        old = {k: f"old {k}" for k in keys}

        query = "state=snapshot" + ("&live=sse" if live else "")
        receiver = Receiver(query, allowed=2)  # the headers and a first piece, then it stalls
        nursery.start_soon(receiver.serve, app)
        await receiver.until(lambda: receiver.sends == 2)
        assert receiver.response.status == 200
        if not live:
            assert receiver.response.headers["stream-next-offset"] == tail

        await append(app, "s", *(change(k, f"new {k}") for k in keys))
        reset_tail = await append(app, "s", {"headers": {"control": "reset"}})
        now = await request(app, "GET", "s", query="state=snapshot")
        assert json.loads(now.body) == inserts(reset_tail, {})

        receiver.allow(float("inf"))
        if not live:
            with trio.fail_after(10):
                await receiver.done.wait()
            assert json.loads(receiver.response.body) == inserts(tail, old)
            nursery.cancel_scope.cancel()
            return

        # Over SSE: the old snapshot whole, its control event at its offset, then the live
        # tail from there, in order.
        def events() -> list[tuple[str, Any]]:
            found = []
            for block in receiver.response.body.decode().split("\n\n")[:-1]:
                lines = block.split("\n")
                data = "\n".join(line[5:] for line in lines[1:] if line.startswith("data:"))
                found.append((lines[0].removeprefix("event: "), json.loads(data)))
            return found

        def caught_up() -> bool:
            got = events()
            return (
                bool(got)
                and got[-1][0] == "control"
                and (got[-1][1]["streamNextOffset"] == reset_tail)
            )

        with trio.fail_after(10):
            await receiver.until(caught_up)
        got = events()
        assert got[0] == ("data", inserts(tail, old))
        assert got[1][0] == "control" and got[1][1]["streamNextOffset"] == tail
        live_data = [item for kind, data in got[2:] if kind == "data" for item in data]
        updates = [change(k, f"new {k}") for k in keys]
        assert live_data == [*updates, {"headers": {"control": "reset"}}]
        nursery.cancel_scope.cancel()


async def test_a_live_snapshot_compacted_under_it_is_taken_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A compaction between taking the snapshot and following from its offset must not
    turn a request for a snapshot into a 410: that history is gone, so take it again."""
    async with trio.open_nursery() as nursery:
        app, registry = await serving(nursery)
        headers = {**JSON, "Stream-State-Compaction": "1"}
        assert (await request(app, "PUT", "s", headers=headers)).status == 201
        await append(app, "s", change("a", 1))
        streams = app.reads.streams
        taken = streams.state_snapshot
        compactions: list[int] = []

        async def snapshot_then_compaction(name: str, types: Any = None) -> m.StateRead:
            read = await taken(name, types)
            if not compactions:  # commits land between the snapshot and the follow
                while (base := (await registry.call(name, m.Describe())).base) <= read.offset:
                    await append(app, name, change("a", len(compactions)), change("b", 2))
                compactions.append(base)
            return read

        monkeypatch.setattr(streams, "state_snapshot", snapshot_then_compaction)
        receiver = Receiver("offset=-1&state=snapshot&live=sse")
        nursery.start_soon(receiver.serve, app)
        with trio.fail_after(10):
            await receiver.until(
                lambda: receiver.done.is_set() or receiver.response.body.count(b"\n\n") >= 2
            )
        assert receiver.response.status == 200, receiver.response.body
        event, control = receiver.response.body.decode().split("\n\n")[:2]
        snapshot = json.loads(event.removeprefix("event: data\ndata:"))
        tail = snapshot[0]["headers"]["offset"]
        assert offsets.decode(tail) >= compactions[0]
        assert [row["value"] for row in snapshot[1:-1]] == [0, 2]
        assert json.loads(control.removeprefix("event: control\ndata:"))["streamNextOffset"] == tail
        nursery.cancel_scope.cancel()


async def test_snapshots_being_sent_hold_no_more_entities_than_the_budget() -> None:
    async with trio.open_nursery() as nursery:
        app, _ = await serving(nursery, read_piece_bytes=1024, max_snapshot_entities=1500)
        assert (await request(app, "PUT", "s", headers=JSON)).status == 201
        await append(app, "s", *(change(f"k{i:04}", "v" * 50) for i in range(1000)))
        stalled = Receiver("state=snapshot", allowed=2)  # holds 1,000 entities, stalled
        nursery.start_soon(stalled.serve, app)
        await stalled.until(lambda: stalled.sends == 2)
        # Readers of the same offset share its list, so they cost nothing more ...
        shared = await request(app, "GET", "s", query="state=snapshot")
        assert shared.status == 200
        # ... but a snapshot of another offset would pass the budget: 503, retry later.
        await append(app, "s", change("k0000", "new"))
        refused = await request(app, "GET", "s", query="state=snapshot&live=sse&offset=-1")
        assert (refused.status, refused.problem()["code"]) == (503, "BUSY")
        assert refused.headers["retry-after"]
        stalled.allow(float("inf"))
        with trio.fail_after(10):
            await stalled.done.wait()
        # Once sent, its entities are given back.
        again = await request(app, "GET", "s", query="state=snapshot")
        assert again.status == 200
        assert json.loads(again.body)[-2]["value"] == "new"  # k0000, written last
        nursery.cancel_scope.cancel()
