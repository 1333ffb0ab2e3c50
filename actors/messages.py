"""What the service layer asks a stream actor, and what the actor answers.

Each message is an `Ask[R]`: its reply is an `R`, so `Registry.call` is typed end to end.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

import attrs
import trio

from actors.wakeups import Change as Change  # re-exported: the actor makes them
from actors.wakeups import Receipt
from state.view import Entity, View
from streams.protocol.headers import Producer
from streams.protocol.machine import AppendRequest, CreateRequest, Reply, StreamState
from streams.protocol.offsets import Sentinel
from streams.protocol.records import StreamConfig

R = TypeVar("R")


class Ask(Generic[R]):
    """A message to a stream's actor whose reply is an `R`."""

    __slots__ = ()


@attrs.frozen
class CreateMessage(Ask[Reply]):
    request: CreateRequest
    # For forks: registers the new fork (by incarnation) with its source before commit.
    link: Callable[[str], Awaitable[None]] | None = None
    # `streams import` of a compacted stream: its log starts with a base record holding
    # this view, as of the view's offset (docs/operations.md, "CLI").
    base: View | None = None


@attrs.frozen
class AppendMessage(Ask[Reply]):
    request: AppendRequest
    # The writer's: readers of the commit wait until it is released (actors/wakeups.py).
    receipt: Receipt | None = None


@attrs.frozen
class Restore(Ask[list[Reply]]):
    """`streams import`: records to append as one batch (requests with `restore` set)."""

    requests: tuple[AppendRequest, ...]


@attrs.frozen
class Read(Ask["ReadResult"]):
    start: int | Sentinel
    max_bytes: int
    bound: int | None = None  # never read at or past this position (a fork's offset)
    internal: bool = False  # a fork reading inherited data: no TTL touch, soft-delete ok
    # Return only the first `fetch` bytes of the read (a piece of a response sent in pieces);
    # `end` is still where the whole read ends, a record boundary. None: all of it.
    fetch: int | None = None
    ends: bool = False  # say where each record read ends (`ReadResult.ends`): a view's fold
    # Start exactly at `start` (a later piece of a read, or a fold at positions it knows).
    # Otherwise reads are record-granular: from inside a record they start at its start.
    exact: bool = False


@attrs.frozen
class Head(Ask[Reply]):
    pass


@attrs.frozen
class Delete(Ask[Reply]):
    pass


@attrs.frozen
class Describe(Ask["Snapshot"]):
    """Fork creation: the source's metadata, readable even when soft-deleted."""


@attrs.frozen
class Advance(Ask[tuple[int, int]]):
    """Fork creation: resolve a sub-offset through this stream's own data."""

    position: int
    count: int
    bound: int


@attrs.frozen
class Link(Ask[None]):
    fork: str
    incarnation: str


@attrs.frozen
class Links(Ask[dict[str, str]]):
    """The forks recorded against this stream, by incarnation (a check after restart)."""


@attrs.frozen
class Unlink(Ask[None]):
    """A fork is gone (or, with None, a check after restart): collect a soft-deleted source."""

    fork: str | None


@attrs.frozen
class Expire(Ask[None]):
    pass


@attrs.frozen
class Refresh(Ask[None]):
    """Another process committed to this stream (postgres mode): look at its tail, which
    wakes the live readers if it moved (every message but an append does so first)."""


@attrs.frozen
class StateSnapshot(Ask["StateRead"]):
    """The stream's State Protocol view as of now: its live entities (of `types`, if given)."""

    types: frozenset[str] | None = None


@attrs.frozen
class StateEntity(Ask["StateRead"]):
    type: str
    key: str


@attrs.frozen
class BaseView(Ask[tuple[str, bytes]]):
    """A compacted stream's incarnation and the view its base holds (a fork folds from it)."""


@attrs.frozen
class DropView(Ask[None]):
    """Memory is short: checkpoint the view and let it go (it is built again when asked)."""


@attrs.frozen
class Export(Ask["Exported"]):
    """`streams export`: the stream's metadata and what only its state holds (producers,
    Stream-Seq, its closer); answered for a soft-deleted stream too (forks read it)."""


@attrs.frozen
class Snapshot:
    """A stream's metadata at one moment, plus the change its next commit will publish."""

    config: StreamConfig
    incarnation: str
    tail: int
    closed: bool
    soft_deleted: bool
    deadline: float | None
    changed: Change = attrs.field(eq=False)
    base: int = 0  # where its log starts: its last compaction, or 0

    @classmethod
    def of(cls, state: StreamState, changed: Change) -> Snapshot:
        changed.watched = True  # its holder may wait on it
        return cls(
            state.config,
            state.incarnation,
            state.tail,
            state.closed,
            state.soft_deleted,
            state.deadline(),
            changed,
            state.base,
        )


@attrs.frozen
class Exported:
    """What an export writes about a stream besides its data."""

    snapshot: Snapshot
    records: int  # records holding data, from where its log starts (its fork offset, base)
    stream_seq: str | None
    producers: dict[str, tuple[int, int]]  # id -> (epoch, last seq)
    closed_by: Producer | None

    @classmethod
    def of(cls, state: StreamState, changed: Change) -> Exported:
        snapshot = Snapshot.of(state, changed)
        producers = dict(state.producers)
        return cls(snapshot, state.records, state.stream_seq, producers, state.closed_by)


@attrs.frozen
class ReadResult:
    """A read of [start, end); `data` holds its first bytes, all of them unless the read was
    asked for a piece (`Read.fetch`): the rest is then fetched by position."""

    snapshot: Snapshot
    start: int
    end: int
    data: bytes  # stored form; JSON streams store `message,` items
    source: str | None = None  # set when `start` lies in a fork's inherited range
    ends: tuple[int, ...] = ()  # where each record in [start, end) ends, when asked

    @property
    def complete(self) -> bool:
        return self.start + len(self.data) == self.end


@attrs.frozen
class StateRead:
    """A view's entities as of `offset` (the stream's tail when read): immutable objects a
    later commit replaces rather than changes, so they stay a picture of that offset."""

    snapshot: Snapshot
    offset: int
    base: int  # where the log starts: 0, or the offset of the last compaction
    entities: list[Entity]
    skipped: int = 0  # messages the view skipped: not State Protocol messages


class Pending(Generic[R]):
    """A reply slot one caller waits on."""

    def __init__(self) -> None:
        self._done = trio.Event()
        self._value: Any = None
        self._error: BaseException | None = None

    def set(self, value: R) -> None:
        if not self._done.is_set():
            self._value = value
            self._done.set()

    def fail(self, error: BaseException) -> None:
        if not self._done.is_set():
            self._error = error
            self._done.set()

    async def wait(self) -> R:
        await self._done.wait()
        if self._error is not None:
            raise self._error
        return self._value  # type: ignore[no-any-return]  # set() took an R


# The actor answers every kind of message through one inbox, so it holds untyped slots; each
# caller's own slot is typed by its message.
Envelope = tuple["Ask[Any]", "Pending[Any]"]
