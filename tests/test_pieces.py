"""Reads of records larger than a piece, driven in-process through the ASGI handler: the exact
bytes arrive (catch-up, long-poll, SSE; binary, text, JSON; across a fork boundary), each send
carries a bounded piece, and the actors are never asked for more than a piece per call."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
import pytest
import trio
import trio.testing

from actors import messages as m
from actors.registry import Registry
from actors.service import Fork, Streams
from actors.storage.memory import MemoryStorage
from streams.config import Settings
from streams.http import StreamsHTTP
from streams.protocol import jsonmode, offsets, sse
from streams.protocol.machine import AppendRequest, CreateRequest
from streams.protocol.records import StreamConfig

PIECE = 1000
SSE_PIECE = 498  # what SSE reads at a time: half a piece, cut to a multiple of 3
SEND_BOUND = 2 * PIECE  # the most one body send may carry here: a piece, encoded and framed
BINARY = "application/octet-stream"


class SpyRegistry(Registry):
    """Records what each Read asked for and how much data it returned."""

    reads: list[tuple[m.Read, int]]

    async def call(self, name: str, message: m.Ask[m.R]) -> m.R:
        result = await super().call(name, message)
        if isinstance(message, m.Read):
            assert isinstance(result, m.ReadResult)
            self.reads.append((message, len(result.data)))
        return result


@attrs.define
class Response:
    status: int = 0
    headers: dict[str, str] = attrs.field(factory=dict)
    chunks: list[bytes] = attrs.field(factory=list)

    @property
    def body(self) -> bytes:
        return b"".join(self.chunks)


@attrs.define
class Server:
    app: StreamsHTTP
    streams: Streams
    registry: SpyRegistry

    async def get(self, name: str, query: str, headers: dict[str, str] | None = None) -> Response:
        response = Response()
        requested = False

        async def receive() -> dict[str, Any]:
            nonlocal requested
            if not requested:
                requested = True
                return {"type": "http.request", "body": b"", "more_body": False}
            await trio.sleep_forever()
            raise AssertionError

        async def send(event: dict[str, Any]) -> None:
            if event["type"] == "http.response.start":
                response.status = event["status"]
                response.headers = {k.decode(): v.decode() for k, v in event["headers"]}
            else:
                response.chunks.append(event.get("body", b""))

        scope = {
            "type": "http",
            "method": "GET",
            "path": f"/v1/stream/{name}",
            "query_string": query.encode(),
            "headers": [(k.encode(), v.encode()) for k, v in (headers or {}).items()],
        }
        await self.app(scope, receive, send)
        return response


@asynccontextmanager
async def server(cache_bytes: int) -> AsyncIterator[Server]:
    registry = SpyRegistry(MemoryStorage(), cache_bytes=cache_bytes, piece_bytes=PIECE)
    registry.reads = []
    streams = Streams(registry)
    settings = Settings(storage_mode="memory", read_piece_bytes=PIECE, long_poll_timeout=5)
    app = StreamsHTTP(streams, settings)
    assert app.reads.sse_piece == SSE_PIECE  # the text above has its line breaks at these edges
    async with trio.open_nursery() as nursery:
        await nursery.start(registry.run)
        nursery.start_soon(app.sends.run)
        yield Server(app, streams, registry)
        nursery.cancel_scope.cancel()


def text_with_breaks_at_piece_edges(size: int) -> bytes:
    """Text whose CR, LF, CRLF and leading spaces sit on both sides of piece boundaries, of
    catch-up pieces (multiples of PIECE) and SSE pieces (multiples of SSE_PIECE)."""
    data = bytearray(b"abcdefghij" * (size // 10))
    for edge in range(SSE_PIECE, size - 2, SSE_PIECE):
        data[edge - 1 : edge + 1] = b"\r\n"  # a CRLF split between two pieces
    for edge in range(PIECE, size - 2, PIECE):
        data[edge - 1 : edge + 1] = b"\n "  # a line that starts a piece with a space
    data[3 * SSE_PIECE - 1] = ord("\r")  # a lone CR ending a piece
    data[3 * SSE_PIECE] = ord("x")
    return bytes(data)


def json_body(size: int) -> bytes:
    messages: list[dict[str, object]] = []
    total = 0
    while total < size:
        message = {"n": len(messages), "text": "x" * (len(messages) % 97)}
        messages.append(message)
        total += len(json.dumps(message))
    return json.dumps(messages).encode()


CONTENT = {
    BINARY: lambda size: bytes(range(256)) * (size // 256),
    "text/plain": text_with_breaks_at_piece_edges,
    "application/json": json_body,
}


def stored(content_type: str, body: bytes) -> bytes:
    if content_type == "application/json":
        return jsonmode.flatten(body)
    return body


def read_body(content_type: str, data: bytes) -> bytes:
    return jsonmode.as_array(data) if content_type == "application/json" else data


def expected_sse(content_type: str, data: bytes, end: int) -> bytes:
    payload = read_body(content_type, data)
    event = sse.data_event(payload, base64_encoded=content_type == BINARY)
    control = sse.control_event(offsets.encode(end), cursor=None, up_to_date=True, closed=True)
    return event + control


async def setup(
    srv: Server, content_type: str, *, fork: bool
) -> tuple[str, bytes, int]:  # name, stored bytes from 0, tail
    """A closed stream whose data is several pieces: one large record, or (fork) a source's
    large record followed by the fork's own, the fork point falling inside a piece."""
    make = CONTENT[content_type]
    first = make(7 * PIECE + 321)
    await srv.streams.create("a", CreateRequest(StreamConfig(content_type)))
    await srv.streams.append("a", AppendRequest(content_type, first))
    data = stored(content_type, first)
    name = "a"
    if fork:
        await srv.streams.create("b", CreateRequest(StreamConfig("")), Fork("a"))
        second = make(5 * PIECE + 77)
        await srv.streams.append("b", AppendRequest(content_type, second))
        data += stored(content_type, second)
        name = "b"
    await srv.streams.append(name, AppendRequest(None, b"", close=True))
    return name, data, len(data)


def check_bounded(srv: Server, response: Response) -> None:
    assert max(len(chunk) for chunk in response.chunks) <= SEND_BOUND
    assert srv.registry.reads
    for message, returned in srv.registry.reads:
        assert message.fetch is not None and message.fetch <= PIECE
        assert returned <= PIECE


MODES = [(ct, fork) for ct in CONTENT for fork in (False, True)]


@pytest.mark.parametrize("cache_bytes", [1 << 20, 100])  # from the tail cache, or the log
@pytest.mark.parametrize(("content_type", "fork"), MODES)
async def test_catch_up_of_a_large_record_arrives_whole_in_bounded_pieces(
    content_type: str, fork: bool, cache_bytes: int
) -> None:
    async with server(cache_bytes) as srv:
        name, data, tail = await setup(srv, content_type, fork=fork)
        srv.registry.reads.clear()
        response = await srv.get(name, "offset=-1")
        assert response.status == 200
        assert response.body == read_body(content_type, data)
        assert response.headers["content-length"] == str(len(response.body))
        assert response.headers["stream-next-offset"] == offsets.encode(tail)
        assert len(response.chunks) > 3
        check_bounded(srv, response)

        etag = response.headers["etag"]  # caching is unchanged: the same read is a 304
        again = await srv.get(name, "offset=-1", {"if-none-match": etag})
        assert (again.status, again.body, again.headers["etag"]) == (304, b"", etag)


@pytest.mark.parametrize("cache_bytes", [1 << 20, 100])
@pytest.mark.parametrize(("content_type", "fork"), MODES)
async def test_sse_of_a_large_record_is_one_event_sent_in_bounded_pieces(
    content_type: str, fork: bool, cache_bytes: int
) -> None:
    async with server(cache_bytes) as srv:
        name, data, tail = await setup(srv, content_type, fork=fork)
        srv.registry.reads.clear()
        response = await srv.get(name, "offset=-1&live=sse")
        assert response.status == 200
        assert response.body == expected_sse(content_type, data, tail)
        assert len(response.chunks) > 3
        check_bounded(srv, response)


@pytest.mark.parametrize("content_type", list(CONTENT))
async def test_long_poll_and_sse_get_a_large_append_in_bounded_pieces(content_type: str) -> None:
    async with server(1 << 20) as srv:
        await srv.streams.create("s", CreateRequest(StreamConfig(content_type)))
        srv.registry.reads.clear()
        results: dict[str, Response] = {}

        async def read(key: str, query: str) -> None:
            results[key] = await srv.get("s", query)

        body = CONTENT[content_type](9 * PIECE)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(read, "long-poll", f"offset={offsets.encode(0)}&live=long-poll")
            nursery.start_soon(read, "sse", f"offset={offsets.encode(0)}&live=sse")
            await trio.testing.wait_all_tasks_blocked()  # both wait at the tail
            await srv.streams.append("s", AppendRequest(content_type, body, close=True))

        data = stored(content_type, body)
        long_poll = results["long-poll"]
        assert long_poll.status == 200
        assert long_poll.body == read_body(content_type, data)
        assert long_poll.headers["stream-next-offset"] == offsets.encode(len(data))
        events = results["sse"].body
        first = b'event: control\ndata:{"streamNextOffset": "%s"' % offsets.encode(0).encode()
        assert events.startswith(first)  # caught up at the empty tail
        assert events.endswith(expected_sse(content_type, data, len(data)))
        check_bounded(srv, long_poll)
        check_bounded(srv, results["sse"])


async def test_small_reads_take_one_actor_call_and_one_body_send() -> None:
    async with server(1 << 20) as srv:
        await srv.streams.create("s", CreateRequest(StreamConfig("text/plain")))
        await srv.streams.append("s", AppendRequest("text/plain", b"hello"))
        srv.registry.reads.clear()
        response = await srv.get("s", "offset=-1")
        assert response.chunks == [b"hello"]
        assert len(srv.registry.reads) == 1
