"""Model-based test of stream actors that live, retire and come back across many requests.

`test_actor_model.py` gives every step a fresh Trio run and registry, so no actor outlives a
step and nothing runs concurrently. Here one `Registry` serves every step of a run, in
memory and in file mode: actors stop between steps (idle timeout, LRU eviction, or time
passing while other streams are asked) and the next request for a stream starts a new one,
while forks and deletes of sources and forks interleave with appends, several producers
append at once, and every read is compared with a model (`Model`: a stream's bytes; an
offset's position is a byte count).

Driving it: Hypothesis rules are synchronous, so the Trio run lives in a background thread
for the whole run (`tests/trio_thread.py`) and each rule sends it one coroutine and waits;
a step ends once every task there is blocked, so the next starts from a quiet loop. Time is
a `MockClock` that moves only when a rule jumps it (no autojump), and the registry's own
sweep never runs: which actors stop, and when, is decided by the rules alone. Trio's
scheduler is seeded by Hypothesis, but file I/O in worker threads can still reorder
concurrent requests, so the checks of concurrent appends take the order the server chose
(from the offsets it returned) and check everything else against it.
"""

from __future__ import annotations

import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import attrs
import hypothesis.strategies as st
import pytest
import trio
import trio.testing
from hypothesis import settings
from hypothesis.stateful import Bundle, RuleBasedStateMachine, initialize, precondition, rule

from actors.registry import Registry
from actors.service import Fork, Streams
from actors.storage import Storage
from actors.storage.files import FileStorage
from actors.storage.memory import MemoryStorage
from streams.protocol import offsets
from streams.protocol.errors import ProtocolError
from streams.protocol.headers import Producer
from streams.protocol.machine import AppendRequest, CreateRequest, Reply
from streams.protocol.offsets import Sentinel
from streams.protocol.records import StreamConfig
from tests.trio_thread import TrioThread, settle

T = TypeVar("T")
TEXT = "text/plain"
IDLE_TIMEOUT = 10.0
NEVER = 1e12  # the registry's own sweep interval: this test retires actors itself
NAMES = st.sampled_from(["a", "b", "c"])
BODIES = st.binary(min_size=1, max_size=4).map(lambda b: bytes(97 + x % 26 for x in b))


@attrs.define
class Model:
    data: bytes = b""
    positions: set[int] = attrs.field(factory=lambda: {0})  # every offset a reply returned
    closed: bool = False
    producers: dict[str, tuple[int, int]] = attrs.field(factory=dict)  # id -> (epoch, seq)
    gone: bool = False  # soft-deleted: forks still read its data
    source: str | None = None
    forks: set[str] = attrs.field(factory=set)


def position_of(reply: Reply) -> int:
    return offsets.decode(reply.headers["Stream-Next-Offset"])


@attrs.define
class Sent:
    """One append of a concurrent step and what the server answered."""

    body: bytes
    producer: Producer | None = None
    status: int = 0
    position: int = -1

    @classmethod
    def stamped(cls, producer: Producer) -> Sent:
        return cls(f"{producer.id}.{producer.seq};".encode(), producer)


async def attempt(streams: Streams, name: str, sent: Sent) -> None:
    request = AppendRequest(TEXT, sent.body, producer=sent.producer)
    try:
        reply = await streams.append(name, request)
    except ProtocolError as error:
        sent.status = error.status
        return
    sent.status, sent.position = reply.status, position_of(reply)


async def read_all(streams: Streams, name: str, start: int | Sentinel, chunk: int) -> bytes:
    """Catch up from `start` to the tail in chunks; offsets must strictly increase."""
    stored = b""
    while True:
        result = await streams.read(name, start, chunk)
        assert result.end >= result.start
        stored += result.data
        if result.end == result.snapshot.tail:
            return stored
        assert result.end > result.start
        start = result.end


class LifecycleMachine(RuleBasedStateMachine):
    # Names created at some point (maybe deleted since): most requests go to these.
    created = Bundle("created")
    storage: Storage
    registry: Registry
    loop: TrioThread

    def __init__(self) -> None:
        super().__init__()
        self.model: dict[str, Model] = {}

    def open_storage(self) -> Storage:
        return MemoryStorage()

    @initialize(
        target=created,
        max_resident=st.integers(1, 3),
        tick=st.sampled_from([0.0, 0.3, 0.45]),
        first=NAMES,
        body=BODIES,
    )
    def start(self, max_resident: int, tick: float, first: str, body: bytes) -> str:
        """Starts the registry and creates a first stream. `tick`: the part of the idle
        timeout that passes before each request, so that actors not asked for lately stop
        while others serve (0: only the `retire` rule stops them)."""
        self.storage = self.open_storage()
        self.max_resident = max_resident
        self.tick = tick * IDLE_TIMEOUT
        self.registry = registry = Registry(
            self.storage,
            idle_timeout=IDLE_TIMEOUT,
            max_resident=max_resident,
            sweep_interval=NEVER,
            cache_bytes=8,  # reads hit both the tail cache and the log
        )
        self.clock = trio.testing.MockClock()  # rate 0, no autojump: only `jump` moves it
        self.loop = TrioThread(registry, self.clock)
        self.streams = Streams(registry)
        return self._create(first, body)

    def teardown(self) -> None:
        if hasattr(self, "loop"):
            self.loop.close()

    def call(self, operation: Callable[[Streams], Awaitable[T]]) -> T | int:
        """The reply, or the protocol error's status."""

        async def guarded() -> T | int:
            if self.tick:
                self.clock.jump(self.tick)
                await settle()  # actors idle that long stop first
            try:
                return await operation(self.streams)
            except ProtocolError as error:
                return error.status

        return self.loop.step(guarded)

    def _live(self, name: str) -> Model | None:
        stream = self.model.get(name)
        return None if stream is None or stream.gone else stream

    def _expect_missing(self, name: str, reply: object) -> bool:
        """True (and checked) if `name` is absent or soft-deleted: 404 or 410."""
        stream = self.model.get(name)
        if stream is None:
            assert reply == 404, reply
        elif stream.gone:
            assert reply == 410, reply
        return stream is None or stream.gone

    # ---- actors retire and come back ------------------------------------------------------

    @precondition(lambda self: bool(self.model))
    @rule(lru=st.booleans())
    def retire(self, lru: bool) -> None:
        """Actors stop between requests; the next request for a stream starts a new one."""
        if lru:
            self.evict()
        else:
            self.retire_idle()

    def retire_idle(self) -> None:
        """Every actor's idle timeout passes: all stop; the next request restarts them."""

        async def idle() -> None:
            self.clock.jump(IDLE_TIMEOUT + 1)
            await self.registry.all_stopped()

        self.loop.step(idle)
        assert self.registry.active == 0

    def evict(self) -> None:
        """Beyond `max_resident`, the least recently used actors stop."""

        async def evict() -> None:
            self.registry.retire_least_used()

        self.loop.step(evict)
        assert self.registry.active <= self.max_resident

    # ---- changes ----------------------------------------------------------------------------

    @rule(target=created, name=NAMES, body=BODIES)
    def create(self, name: str, body: bytes) -> str:
        return self._create(name, body)

    def _create(self, name: str, body: bytes) -> str:
        stream = self.model.get(name)
        reply = self.call(lambda s: s.create(name, CreateRequest(StreamConfig(TEXT), body=body)))
        if stream is None:
            assert isinstance(reply, Reply) and reply.status == 201, reply
            assert position_of(reply) == len(body)
            self.model[name] = Model(body, {0, len(body)})
        elif stream.gone or stream.closed:
            assert reply == 409, reply
        else:
            assert isinstance(reply, Reply) and reply.status == 200, reply
            assert position_of(reply) == len(stream.data)
        return name

    @rule(name=created, body=BODIES, close=st.sampled_from([False, False, False, True]))
    def append(self, name: str, body: bytes, close: bool = False) -> None:
        stream = self.model.get(name)
        reply = self.call(lambda s: s.append(name, AppendRequest(TEXT, body, close)))
        if self._expect_missing(name, reply):
            return
        assert stream is not None
        if stream.closed:
            assert reply == 409, reply
            return
        assert isinstance(reply, Reply) and reply.status == 204, reply
        assert ("Stream-Closed" in reply.headers) == close
        stream.data += body
        stream.closed = close
        assert position_of(reply) == len(stream.data)
        stream.positions.add(len(stream.data))

    @rule(target=created, name=NAMES, source=created, pick=st.integers(0, 7))
    def fork(self, name: str, source: str, pick: int) -> str:
        if name in self.model or name == source:
            return name
        origin = self.model.get(source)
        at = None if origin is None else sorted(origin.positions)[pick % len(origin.positions)]
        request = CreateRequest(StreamConfig(""))
        reply = self.call(lambda s: s.create(name, request, Fork(source, at)))
        if origin is None:
            assert reply == 404, reply
            return name
        if origin.gone:
            assert reply == 409, reply
            return name
        assert isinstance(reply, Reply) and reply.status == 201, reply
        assert at is not None and position_of(reply) == at
        positions = {p for p in origin.positions if p <= at}
        self.model[name] = Model(origin.data[:at], positions, source=source)
        origin.forks.add(name)
        return name

    @rule(name=created, up=st.integers(0, 2))
    def delete(self, name: str, up: int = 0) -> None:
        """Delete `name` or, `up` steps along its fork chain, one of its sources."""
        for _ in range(up):
            stream = self.model.get(name)
            if stream is None or stream.source is None:
                break
            name = stream.source
        stream = self.model.get(name)
        reply = self.call(lambda s: s.delete(name))
        if self._expect_missing(name, reply):
            return
        assert stream is not None
        assert isinstance(reply, Reply) and reply.status == 204, reply
        if stream.forks:
            stream.gone = True  # soft: its forks still read its data
        else:
            self._remove(name)

    def _remove(self, name: str) -> None:
        """Gone for good; a soft-deleted source whose last fork this was is collected."""
        stream = self.model.pop(name)
        if stream.source is not None:
            source = self.model[stream.source]
            source.forks.discard(name)
            if source.gone and not source.forks:
                self._remove(stream.source)

    @rule(
        name=created,
        producers=st.lists(
            st.tuples(st.booleans(), st.integers(1, 3), st.sets(st.integers(0, 2)), st.booleans()),
            min_size=1,
            max_size=3,
        ),
        plain=st.integers(0, 2),
        reader=st.booleans(),
        chunk=st.integers(1, 8),
    )
    def produce(
        self,
        name: str,
        producers: list[tuple[bool, int, set[int], bool]],
        plain: int,
        reader: bool,
        chunk: int,
    ) -> None:
        """Producers append at once, each its seqs in order, some sent twice at once (a
        retry while the first try is in flight), and maybe its first seq again once it was
        acknowledged; plain appends and a catch-up reader run beside them. The server picks
        the order of producers; everything else is checked."""
        stream = self._live(name)
        if stream is None or stream.closed:
            return
        before = stream.data
        lines: list[list[tuple[bool, list[Sent]]]] = []  # per producer: (new seq?, copies)
        for index, (new_epoch, count, retried, late_retry) in enumerate(producers):
            pid = f"p{index}"
            epoch, last = stream.producers.get(pid, (0, -1))
            if new_epoch and pid in stream.producers:
                epoch, last = epoch + 1, -1
            seqs = [(True, last + 1 + k, 2 if k in retried else 1) for k in range(count)]
            seqs += [(False, last + 1, 1)] if late_retry else []
            stamps = [(new, Producer(pid, epoch, seq), n) for new, seq, n in seqs]
            lines.append([(new, [Sent.stamped(p) for _ in range(n)]) for new, p, n in stamps])
            stream.producers[pid] = (epoch, last + count)
        plains = [Sent(f"x{k};".encode()) for k in range(plain)]
        seen: list[bytes] = []

        async def send_line(streams: Streams, line: list[tuple[bool, list[Sent]]]) -> None:
            for _, copies in line:
                async with trio.open_nursery() as nursery:
                    for sent in copies:
                        nursery.start_soon(attempt, streams, name, sent)

        async def step(streams: Streams) -> None:
            async with trio.open_nursery() as nursery:
                for line in lines:
                    nursery.start_soon(send_line, streams, line)
                for sent in plains:
                    nursery.start_soon(attempt, streams, name, sent)
                if reader:
                    seen.append(await read_all(streams, name, Sentinel.START, chunk))

        self.call(step)
        assert all(sent.status == 204 for sent in plains), plains
        appended = list(plains)
        for line in lines:
            acknowledged = []
            for new, copies in line:  # a new seq is appended once; every other copy is a dup
                statuses = sorted(sent.status for sent in copies)
                assert statuses == [200] * int(new) + [204] * (len(copies) - int(new)), copies
                acknowledged += [sent for sent in copies if sent.status == 200]
            order = [sent.position for sent in acknowledged]
            assert order == sorted(order)  # each producer's appends land in the order sent
            appended += acknowledged
        for sent in sorted(appended, key=lambda sent: sent.position):
            stream.data += sent.body
            assert sent.position == len(stream.data), (sent, appended)
            stream.positions.add(sent.position)
        for prefix in seen:  # a concurrent reader sees what was there, and maybe more
            assert stream.data.startswith(prefix) and len(prefix) >= len(before)

    # ---- checks ------------------------------------------------------------------------------

    @rule(name=created, pick=st.integers(-1, 7), chunk=st.integers(1, 16))
    def read(self, name: str, pick: int, chunk: int) -> None:
        """HEAD, then catch up from the start (pick -1) or from an offset a reply returned."""
        stream = self.model.get(name)
        head = self.call(lambda s: s.head(name))
        if self._expect_missing(name, head):
            return
        assert stream is not None and isinstance(head, Reply), head
        assert position_of(head) == len(stream.data)
        assert ("Stream-Closed" in head.headers) == stream.closed
        position = 0 if pick < 0 else sorted(stream.positions)[pick % len(stream.positions)]
        start = Sentinel.START if pick < 0 else position
        data = self.call(lambda s: read_all(s, name, start, chunk))
        assert data == stream.data[position:], (name, start)


class FileLifecycleMachine(LifecycleMachine):
    def open_storage(self) -> Storage:
        self.directory = tempfile.TemporaryDirectory()
        return FileStorage(Path(self.directory.name), durable=False)

    def teardown(self) -> None:
        super().teardown()
        if hasattr(self, "directory"):
            self.storage.close()
            self.directory.cleanup()


TestMemoryLifecycle = LifecycleMachine.TestCase
TestMemoryLifecycle.settings = settings(max_examples=250, stateful_step_count=100, deadline=None)
TestFileLifecycle = FileLifecycleMachine.TestCase
TestFileLifecycle.settings = settings(max_examples=100, stateful_step_count=100, deadline=None)


@pytest.mark.parametrize("machine_type", [LifecycleMachine, FileLifecycleMachine])
def test_append_to_fork_survives_deleting_its_restarted_source(
    machine_type: type[LifecycleMachine],
) -> None:
    """Issue 10's sequence: deleting `src` (soft: `f` references it) by a restarted `src`
    actor must not touch `f`'s log, or `f` loses the acknowledged `2` once it restarts
    (at 9725016, memory mode: `f` reads back `abc1`)."""
    machine = machine_type()
    try:
        machine.start(max_resident=3, tick=0.0, first="src", body=b"abc")
        machine.fork("f", "src", pick=-1)  # at src's tail
        machine.retire_idle()
        machine.read("src", pick=-1, chunk=16)  # src's actor comes back
        machine.append("f", b"1")
        machine.delete("src")
        machine.read("src", pick=-1, chunk=16)  # 410
        machine.append("f", b"2")
        machine.read("f", pick=-1, chunk=16)
        machine.retire_idle()
        assert machine.call(lambda s: read_all(s, "f", Sentinel.START, 16)) == b"abc12"
        machine.read("f", pick=-1, chunk=16)
        machine.read("f", pick=1, chunk=2)  # from offset 3: the fork's own data
        machine.delete("f")  # the last fork: src is collected
        machine.retire_idle()
        machine.read("src", pick=-1, chunk=16)  # 404
        machine.create("src", b"new")
        machine.read("src", pick=-1, chunk=16)
    finally:
        machine.teardown()
