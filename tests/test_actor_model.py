"""Model-based test of the stream actors: random operations against a small reference model.

Every step runs in a fresh Trio run with a fresh registry over the same storage, so each
step also recovers every stream it touches from its log, exactly as after a restart.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import attrs
import hypothesis.strategies as st
import trio
from hypothesis import settings
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from actors.registry import Registry
from actors.service import Fork, Streams
from actors.storage import Storage, framing
from actors.storage.files import FileStorage
from actors.storage.memory import MemoryStorage
from streams.protocol import offsets, records
from streams.protocol.errors import ProtocolError
from streams.protocol.headers import Producer
from streams.protocol.machine import AppendRequest, CreateRequest
from streams.protocol.offsets import Sentinel
from streams.protocol.records import StreamConfig

T = TypeVar("T")
NAMES = st.sampled_from(["a", "b", "c/d", "e f", "ü"])
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=5,
)


@attrs.define
class ModelStream:
    json: bool
    items: list[Any]  # bytes (one per byte) or JSON messages
    marks: dict[int, int]  # position -> number of items before it, for every offset returned
    closed: bool = False
    producers: dict[str, tuple[int, int]] = attrs.field(factory=dict)
    gone: bool = False
    source: str | None = None
    forks: set[str] = attrs.field(factory=set)


def run(storage: Storage, operation: Callable[[Streams], Awaitable[T]]) -> T:
    async def main() -> T:
        registry = Registry(storage, idle_timeout=60, cache_bytes=8)  # cached and cold reads
        async with trio.open_nursery() as nursery:
            await nursery.start(registry.run)
            result = await operation(Streams(registry))
            nursery.cancel_scope.cancel()
        return result

    return trio.run(main)


def outcome(storage: Storage, operation: Callable[[Streams], Awaitable[Any]]) -> Any:
    """The reply, or the protocol error's status."""

    async def guarded(streams: Streams) -> Any:
        try:
            return await operation(streams)
        except ProtocolError as error:
            return error.status

    return run(storage, guarded)


class StreamMachine(RuleBasedStateMachine):
    storage: Storage

    def __init__(self) -> None:
        super().__init__()
        self.model: dict[str, ModelStream] = {}

    @initialize()
    def open_storage(self) -> None:
        self.storage = MemoryStorage()

    # ---- helpers ------------------------------------------------------------------------

    def _run(self, operation: Callable[[Streams], Awaitable[T]]) -> T:
        """Run one operation (a subclass may send it elsewhere: tests/test_postgres_model.py)."""
        return run(self.storage, operation)

    def _outcome(self, operation: Callable[[Streams], Awaitable[Any]]) -> Any:
        return outcome(self.storage, operation)

    def _body(self, stream: ModelStream, items: list[Any]) -> bytes:
        return json.dumps(items).encode() if stream.json else bytes(items)

    def _record(self, stream: ModelStream, reply_offset: str) -> None:
        position = offsets.decode(reply_offset)
        assert all(p < position for p in stream.marks if stream.marks[p] < len(stream.items))
        stream.marks[position] = len(stream.items)

    def _live(self, name: str) -> ModelStream | None:
        stream = self.model.get(name)
        return stream if stream is not None and not stream.gone else None

    # ---- rules --------------------------------------------------------------------------

    @rule(name=NAMES, as_json=st.booleans(), closed=st.booleans(), data=st.data())
    def create(self, name: str, as_json: bool, closed: bool, data: st.DataObject) -> None:
        existing = self.model.get(name)
        items = data.draw(st.lists(JSON_VALUES if as_json else st.integers(0, 255), max_size=4))
        stream = ModelStream(as_json, list(items), {0: 0}, closed)
        content_type = "application/json" if as_json else "application/octet-stream"
        request = CreateRequest(StreamConfig(content_type), closed, self._body(stream, items))
        reply = self._outcome(lambda s: s.create(name, request))
        if existing is None:
            assert reply.status == 201
            self._record(stream, reply.headers["Stream-Next-Offset"])
            self.model[name] = stream
        elif existing.gone:
            assert reply == 409
        else:
            same = existing.json == as_json and existing.closed == closed
            assert (reply.status if not isinstance(reply, int) else reply) == (200 if same else 409)

    @rule(name=NAMES, data=st.data(), close=st.booleans())
    def append(self, name: str, data: st.DataObject, close: bool) -> None:
        stream = self.model.get(name)
        if stream is None:
            return
        items = data.draw(
            st.lists(JSON_VALUES if stream.json else st.integers(0, 255), min_size=1, max_size=4)
        )
        content_type = "application/json" if stream.json else "application/octet-stream"
        request = AppendRequest(content_type, self._body(stream, items), close)
        reply = self._outcome(lambda s: s.append(name, request))
        if stream.gone:
            assert reply == 410
        elif stream.closed:
            assert reply == 409
        else:
            assert reply.status == 204
            stream.items.extend(items)
            stream.closed = close
            self._record(stream, reply.headers["Stream-Next-Offset"])

    @rule(
        name=NAMES,
        producer=st.sampled_from(["p", "q"]),
        epoch=st.integers(0, 2),
        seq=st.integers(0, 3),
        item=st.integers(0, 255),
    )
    def produce(self, name: str, producer: str, epoch: int, seq: int, item: int) -> None:
        """Binary appends with producer stamps: dedup, fencing and gaps against the model."""
        stream = self.model.get(name)
        if stream is None or stream.json:
            return
        request = AppendRequest(
            "application/octet-stream", bytes([item]), producer=Producer(producer, epoch, seq)
        )
        reply = self._outcome(lambda s: s.append(name, request))
        if stream.gone:
            assert reply == 410
            return
        if stream.closed:
            assert reply == 409
            return
        known = stream.producers.get(producer)
        if known is None:
            expected = 200 if seq == 0 else 409
        elif epoch < known[0]:
            expected = 403
        elif epoch > known[0]:
            expected = 200 if seq == 0 else 400
        elif seq <= known[1]:
            expected = 204
        else:
            expected = 200 if seq == known[1] + 1 else 409
        status = reply if isinstance(reply, int) else reply.status
        assert status == expected, (known, epoch, seq)
        if expected == 200:
            stream.items.append(item)
            stream.producers[producer] = (epoch, seq)
            self._record(stream, reply.headers["Stream-Next-Offset"])

    @rule(name=NAMES)
    def close(self, name: str) -> None:
        stream = self.model.get(name)
        if stream is None:
            return
        reply = self._outcome(lambda s: s.append(name, AppendRequest(None, b"", True)))
        if stream.gone:
            assert reply == 410
        else:
            assert reply.status == 204
            assert reply.headers["Stream-Closed"] == "true"
            stream.closed = True

    @rule(name=NAMES, source=NAMES, data=st.data())
    def fork(self, name: str, source: str, data: st.DataObject) -> None:
        origin = self._live(source)
        if origin is None or name in self.model or name == source:
            return
        position = data.draw(st.sampled_from(sorted(origin.marks)))
        request = CreateRequest(StreamConfig(""))
        fork = Fork(source, position)
        reply = self._outcome(lambda s: s.create(name, request, fork))
        assert reply.status == 201
        count = origin.marks[position]
        self.model[name] = ModelStream(
            origin.json,
            origin.items[:count],
            {p: c for p, c in origin.marks.items() if c <= count},
            source=source,
        )
        origin.forks.add(name)

    @rule(name=NAMES)
    def delete(self, name: str) -> None:
        stream = self.model.get(name)
        reply = self._outcome(lambda s: s.delete(name))
        if stream is None:
            assert reply == 404
            return
        if stream.gone:
            assert reply == 410
            return
        assert reply.status == 204
        if stream.forks:
            stream.gone = True
            return
        self._remove(name)

    def _remove(self, name: str) -> None:
        stream = self.model.pop(name)
        if stream.source is not None:
            source = self.model[stream.source]
            source.forks.discard(name)
            if source.gone and not source.forks:
                self._remove(stream.source)

    @precondition(lambda self: isinstance(self.storage, FileStorage))
    @rule(name=NAMES, data=st.binary(max_size=40), cut=st.integers(1, 200))
    def crash(self, name: str, data: bytes, cut: int) -> None:
        """A crash mid-write: the actor is gone (every step starts a fresh one) and the log
        ends in part of an unacknowledged frame. Recovery drops just that part."""
        assert isinstance(self.storage, FileStorage)
        path = self.storage._path(name)
        if path.exists():
            partial = framing.frame(records.encode(records.AppendRecord(0.0, data))[0], data)
            with open(path, "ab") as file:
                file.write(partial[: min(cut, len(partial) - 1)])

    # ---- checks -------------------------------------------------------------------------

    @rule(name=NAMES, data=st.data(), chunk=st.integers(1, 64))
    def read(self, name: str, data: st.DataObject, chunk: int) -> None:
        stream = self.model.get(name)
        if stream is None:
            assert self._outcome(lambda s: s.read(name, Sentinel.START, chunk)) == 404
            return
        if stream.gone:
            assert self._outcome(lambda s: s.read(name, Sentinel.START, chunk)) == 410
            return
        tail = max(stream.marks)
        position = data.draw(
            st.sampled_from(sorted(stream.marks)) | st.integers(0, tail + 3), label="position"
        )
        # Reads are record-granular: from inside a record, that record and what follows; from
        # past the tail, nothing (the marks are the record boundaries, the tail the last).
        boundary = max(p for p in stream.marks if p <= position)
        items = self._run(lambda s: read_all(s, name, position, chunk, stream.json))
        assert items == stream.items[stream.marks[boundary] :]

    @invariant()
    def heads_agree(self) -> None:
        for name, stream in self.model.items():
            if stream.gone:
                continue
            reply = self._run(lambda s, n=name: s.head(n))  # type: ignore[misc]
            assert ("Stream-Closed" in reply.headers) == stream.closed
            tail = offsets.decode(reply.headers["Stream-Next-Offset"])
            assert stream.marks.get(tail, len(stream.items)) == len(stream.items)


async def read_all(
    streams: Streams, name: str, position: int, chunk: int, as_json: bool
) -> list[Any]:
    """Read from `position` to the tail in chunks; offsets must strictly increase. The first
    read starts at or before `position` (the start of its record), or there past the tail."""
    stored = b""
    while True:
        result = await streams.read(name, position, chunk)
        assert result.end >= position and result.start <= position
        assert result.start == position or result.data  # moved back only to read a record
        stored += result.data
        if result.end >= result.snapshot.tail:
            assert result.end == max(position, result.snapshot.tail)
            break
        assert result.end > position
        position = result.end
    if as_json:
        return list(json.loads(b"[" + stored[:-1] + b"]")) if stored else []
    return list(stored)


class FileStreamMachine(StreamMachine):
    @initialize()
    def open_storage(self) -> None:
        self.directory = tempfile.TemporaryDirectory()
        self.storage = FileStorage(Path(self.directory.name), durable=False)

    def teardown(self) -> None:
        self.storage.close()
        self.directory.cleanup()


TestMemoryStreams = StreamMachine.TestCase
TestMemoryStreams.settings = settings(max_examples=200, stateful_step_count=25, deadline=None)
TestFileStreams = FileStreamMachine.TestCase
TestFileStreams.settings = settings(max_examples=60, stateful_step_count=25, deadline=None)
