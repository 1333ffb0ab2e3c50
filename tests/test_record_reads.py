"""Record-granular reads over HTTP, in-process on Trio's mock clock (issue 13 section 1): a
read from inside a record returns that whole record and what follows, one from past the tail
is 200 with an empty body and the requested offset as its next offset, and a live read from
there waits for the first record that ends after it, as the reference server reads. Catch-up,
long-poll and SSE; binary and JSON; closed streams and forks (a partial inherited record)."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
import trio
import trio.testing

from actors.registry import Registry
from actors.service import Streams
from actors.storage.memory import MemoryStorage
from streams.config import Settings
from streams.http import StreamsHTTP
from streams.protocol import offsets
from tests.asgi import Exchange, Response

BINARY = {"Content-Type": "application/octet-stream"}
JSON = {"Content-Type": "application/json"}
LONG_POLL = 30.0
SSE_SECS = 60.0
PIECE = 1000


@attrs.define
class Server:
    app: StreamsHTTP
    nursery: trio.Nursery

    async def call(
        self, method: str, name: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> Response:
        exchange = Exchange(method, f"/v1/stream/{name}", headers or {}, "")
        exchange.feed(body, more=False)
        await exchange.serve(self.app)
        return exchange.response

    async def get(self, name: str, query: str) -> Response:
        return (await self.start_get(name, query)).response

    async def start_get(self, name: str, query: str, wait: bool = True) -> Exchange:
        """A GET; with `wait`, answered (bounded: live reads end at their timeouts)."""
        exchange = Exchange("GET", f"/v1/stream/{name}", {}, query)
        exchange.feed(b"", more=False)
        self.nursery.start_soon(exchange.serve, self.app)
        if wait:
            with trio.fail_after(2 * SSE_SECS):
                await exchange.done.wait()
        else:
            await trio.testing.wait_all_tasks_blocked()
        return exchange

    async def put(self, name: str, body: bytes = b"", headers: dict[str, str] = BINARY) -> None:
        response = await self.call("PUT", name, body, {**BINARY, **headers})
        assert response.status == 201, response.body

    async def post(self, name: str, body: bytes, headers: dict[str, str] = BINARY) -> str:
        response = await self.call("POST", name, body, headers)
        assert response.status in (200, 204), response.body
        return response.headers["stream-next-offset"]


@asynccontextmanager
async def server() -> AsyncIterator[Server]:
    registry = Registry(MemoryStorage(), piece_bytes=PIECE)
    settings = Settings(
        storage_mode="memory",
        long_poll_timeout=LONG_POLL,
        sse_reconnect_interval=SSE_SECS,
        read_piece_bytes=PIECE,
    )
    app = StreamsHTTP(Streams(registry), settings)
    async with trio.open_nursery() as nursery:
        await nursery.start(registry.run)
        nursery.start_soon(app.sends.run)
        yield Server(app, nursery)
        nursery.cancel_scope.cancel()


def at(position: int) -> str:
    return f"offset={offsets.encode(position)}"


def fork(source: str, sub_offset: int) -> dict[str, str]:
    """A fork of `source` from offset 0 and `sub_offset` into its first record."""
    return {
        "Stream-Forked-From": f"/v1/stream/{source}",
        "Stream-Fork-Offset": offsets.encode(0),
        "Stream-Fork-Sub-Offset": str(sub_offset),
    }


def sse_events(body: bytes) -> list[tuple[str, Any]]:
    """(event, data) pairs; data events as bytes (base64 decoded), control events parsed."""
    events: list[tuple[str, Any]] = []
    for block in body.decode().split("\n\n"):
        lines = block.split("\n")
        if not lines[0].startswith("event: "):
            continue
        kind = lines[0].removeprefix("event: ")
        data = "\n".join(line.removeprefix("data:") for line in lines[1:])
        events.append((kind, json.loads(data) if kind == "control" else data))
    return events


# ---- catch-up ---------------------------------------------------------------------------


async def test_a_catch_up_read_from_inside_a_record_returns_it_whole() -> None:
    async with server() as s:
        await s.put("b", b"abc")
        await s.post("b", b"defg")  # records [0, 3) and [3, 7)
        for position, body in ((0, b"abcdefg"), (1, b"abcdefg"), (3, b"defg"), (6, b"defg")):
            read = await s.get("b", at(position))
            assert (read.status, read.body) == (200, body), position
            assert read.headers["stream-next-offset"] == offsets.encode(7)
            assert read.headers["stream-up-to-date"] == "true"
            start = 7 - len(body)
            assert read.headers["etag"].startswith('"') and f":{start}:7" in read.headers["etag"]


async def test_a_catch_up_read_from_past_the_tail_is_200_empty_at_the_requested_offset() -> None:
    """PROTOCOL.md 5.6; the headers are those of an empty read at the tail (see
    test_responses: up to date, a cursor, an ETag of the empty range, revalidated)."""
    async with server() as s:
        await s.put("b", b"abc")
        read = await s.get("b", at(4))
        assert (read.status, read.body) == (200, b"")
        assert read.headers["stream-next-offset"] == offsets.encode(4)
        assert read.headers["stream-up-to-date"] == "true"
        assert "stream-cursor" in read.headers and "stream-closed" not in read.headers
        assert read.headers["cache-control"] == "no-cache"
        assert read.headers["etag"].endswith(':4:4"')
        await s.post("b", b"de")  # ends at 5: after 4, so from 4 it is read whole
        assert (await s.get("b", at(4))).body == b"de"


async def test_json_records_of_many_messages_are_read_whole() -> None:
    async with server() as s:
        await s.put("j", b"[1, 22, 333]", JSON)  # one record: 1, | 22, | 333,
        await s.post("j", b"[4444]", JSON)
        for position in (2, 5, 8):  # message boundaries, and a position inside one
            read = await s.get("j", at(position))
            assert json.loads(read.body) == [1, 22, 333, 4444], position
        assert json.loads((await s.get("j", at(9))).body) == [4444]
        past = await s.get("j", at(20))
        assert (past.status, past.body) == (200, b"[]")
        assert past.headers["stream-next-offset"] == offsets.encode(20)


async def test_a_record_larger_than_a_piece_read_from_inside_comes_whole() -> None:
    """The first piece starts at the record; the later ones are fetched at exact positions."""
    record = bytes(range(256)) * 12  # 3072 bytes: four pieces
    async with server() as s:
        await s.put("big", b"ab")
        await s.post("big", record)
        read = await s.get("big", at(1500))
        assert read.body == record
        assert read.headers["stream-next-offset"] == offsets.encode(2 + len(record))


async def test_past_the_tail_of_a_closed_stream_is_its_end_in_every_mode() -> None:
    async with server() as s:
        await s.put("c", b"abc", {"Stream-Closed": "true"})
        read = await s.get("c", at(5))
        assert (read.status, read.body) == (200, b"")
        assert read.headers["stream-closed"] == "true"
        assert read.headers["stream-next-offset"] == offsets.encode(5)
        assert "stream-cursor" not in read.headers
        assert (await s.get("c", at(1))).body == b"abc"
        with trio.fail_after(1):  # at once, not at the timeout
            poll = await s.get("c", at(5) + "&live=long-poll")
        assert poll.status == 204 and poll.headers["stream-closed"] == "true"
        assert poll.headers["stream-next-offset"] == offsets.encode(5)
        with trio.fail_after(1):
            sse = await s.get("c", at(5) + "&live=sse")
        events = sse_events(sse.body)
        assert events == [
            (
                "control",
                {"streamNextOffset": offsets.encode(5), "streamClosed": True, "upToDate": True},
            )
        ]


# ---- long-poll --------------------------------------------------------------------------


async def test_a_long_poll_from_past_the_tail_waits_for_a_record_that_ends_after_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with server() as s:
        await s.put("b", b"abc")
        poll = await s.start_get("b", at(5) + "&live=long-poll", wait=False)
        await s.post("b", b"d")  # [3, 4)
        await s.post("b", b"e")  # [4, 5): ends at the position, not after it
        await trio.testing.wait_all_tasks_blocked()
        assert not poll.done.is_set()
        await s.post("b", b"fghij")  # [5, 10)
        with trio.fail_after(1):
            await poll.done.wait()
        answer = poll.response
        assert (answer.status, answer.body) == (200, b"fghij")
        assert answer.headers["stream-next-offset"] == offsets.encode(10)
        inside = await s.start_get("b", at(12) + "&live=long-poll", wait=False)
        await s.post("b", b"klmnopq")  # [10, 17) holds 12: returned whole
        with trio.fail_after(1):
            await inside.done.wait()
        assert inside.response.body == b"klmnopq"
        assert inside.response.headers["stream-next-offset"] == offsets.encode(17)


async def test_a_long_poll_from_past_the_tail_times_out_at_the_requested_offset(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with server() as s:
        await s.put("j", b"[1]", JSON)
        began = trio.current_time()
        poll = await s.get("j", at(7) + "&live=long-poll")
        assert trio.current_time() - began == LONG_POLL
        assert poll.status == 204
        assert poll.headers["stream-next-offset"] == offsets.encode(7)
        assert poll.headers["stream-up-to-date"] == "true"
        assert "stream-cursor" in poll.headers


async def test_a_long_poll_from_past_the_tail_ends_when_the_stream_closes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with server() as s:
        await s.put("b", b"abc")
        poll = await s.start_get("b", at(9) + "&live=long-poll", wait=False)
        response = await s.call("POST", "b", b"", {"Stream-Closed": "true"})
        assert response.status == 204
        with trio.fail_after(1):
            await poll.done.wait()
        assert poll.response.status == 204
        assert poll.response.headers["stream-closed"] == "true"
        assert poll.response.headers["stream-next-offset"] == offsets.encode(9)


# ---- SSE --------------------------------------------------------------------------------


async def test_sse_from_past_the_tail_sends_the_next_record_whole(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with server() as s:
        await s.put("b", b"abc")
        sse = await s.start_get("b", at(5) + "&live=sse", wait=False)
        await s.post("b", b"de")  # [3, 5)
        await s.post("b", b"fghij")  # [5, 10)
        await s.post("b", b"k")
        await sse.done.wait()  # the reconnect interval
        events = sse_events(sse.response.body)
        assert events[0] == (
            "control",
            {
                "streamNextOffset": offsets.encode(5),
                "streamCursor": events[0][1]["streamCursor"],
                "upToDate": True,
            },
        )
        data = [base64.b64decode(d) for kind, d in events if kind == "data"]
        assert data == [b"fghij", b"k"]
        ends = [c["streamNextOffset"] for kind, c in events[1:] if kind == "control"]
        assert ends == [offsets.encode(10), offsets.encode(11)]


async def test_sse_of_json_from_inside_a_record_and_from_past_the_tail(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with server() as s:
        await s.put("j", b"[1, 22, 333]", JSON)
        inside = await s.start_get("j", at(2) + "&live=sse", wait=False)
        past = await s.start_get("j", at(11) + "&live=sse", wait=False)
        await s.post("j", b'["a", "b"]', JSON)  # [9, 17): after 11
        await inside.done.wait()
        await past.done.wait()
        got = [
            [json.loads(d) for kind, d in sse_events(sse.response.body) if kind == "data"]
            for sse in (inside, past)
        ]
        assert got == [[[1, 22, 333], ["a", "b"]], [["a", "b"]]]


# ---- forks ------------------------------------------------------------------------------


async def test_a_read_inside_a_forks_partial_inherited_record_reads_what_the_fork_holds() -> None:
    """A sub-offset puts the fork point inside a source record: the fork holds the part of
    it before that point, and a read from inside that part returns it whole; the source
    returns its record whole."""
    async with server() as s:
        await s.put("src", b"abcdef")  # one record [0, 6)
        await s.put("fork", b"", fork("src", 4))
        await s.post("fork", b"XY")  # the fork's own record [4, 6)
        await s.post("src", b"gh")
        inside = await s.get("fork", at(2))
        assert inside.body == b"abcdXY"
        assert inside.headers["etag"].endswith(':0:6"')  # the range read: [0, 6)
        assert (await s.get("src", at(2))).body == b"abcdefgh"
        assert (await s.get("fork", at(4))).body == b"XY"
        assert (await s.get("fork", at(5))).body == b"XY"
        past = await s.get("fork", at(7))
        assert (past.status, past.body) == (200, b"")
        assert past.headers["stream-next-offset"] == offsets.encode(7)
        with trio.fail_after(1):  # the inherited range is there: no wait
            poll = await s.get("fork", at(1) + "&live=long-poll")
        assert (poll.status, poll.body) == (200, b"abcdXY")


async def test_a_json_fork_inside_a_record_of_many_messages() -> None:
    async with server() as s:
        await s.put("src", b"[1, 22, 333]", JSON)  # boundaries 0, 2, 5 | 9
        await s.put("fork", b"", {**fork("src", 2), **JSON})
        await s.post("fork", b"[4444]", JSON)  # [5, 10)
        assert json.loads((await s.get("fork", at(2))).body) == [1, 22, 4444]
        assert json.loads((await s.get("fork", "offset=-1")).body) == [1, 22, 4444]
        assert json.loads((await s.get("src", at(2))).body) == [1, 22, 333]
        assert json.loads((await s.get("fork", at(7))).body) == [4444]
        past = await s.get("fork", at(12))
        assert (past.body, past.headers["stream-next-offset"]) == (b"[]", offsets.encode(12))
