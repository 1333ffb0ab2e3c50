"""What the service layer asks a stream actor, and what the actor answers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import attrs

from actors.wakeups import Change as Change  # re-exported: the actor makes them
from actors.wakeups import Receipt
from streams.protocol.machine import AppendRequest, CreateRequest
from streams.protocol.offsets import Sentinel
from streams.protocol.records import StreamConfig


@attrs.frozen
class CreateMessage:
    request: CreateRequest
    # For forks: registers the new fork (by incarnation) with its source before commit.
    link: Callable[[str], Awaitable[None]] | None = None


@attrs.frozen
class AppendMessage:
    request: AppendRequest
    # The writer's: readers of the commit wait until it is released (actors/wakeups.py).
    receipt: Receipt | None = None


@attrs.frozen
class Read:
    start: int | Sentinel
    max_bytes: int
    bound: int | None = None  # never read at or past this position (a fork's offset)
    internal: bool = False  # a fork reading inherited data: no TTL touch, soft-delete ok
    # Return only the first `fetch` bytes of the read (a piece of a response sent in pieces);
    # `end` is still where the whole read ends, a record boundary. None: all of it.
    fetch: int | None = None


@attrs.frozen
class Head:
    pass


@attrs.frozen
class Delete:
    pass


@attrs.frozen
class Describe:
    """Fork creation: the source's metadata, readable even when soft-deleted."""


@attrs.frozen
class Advance:
    """Fork creation: resolve a sub-offset through this stream's own data."""

    position: int
    count: int
    bound: int


@attrs.frozen
class Link:
    fork: str
    incarnation: str


@attrs.frozen
class Links:
    """The forks recorded against this stream, by incarnation (a check after restart)."""


@attrs.frozen
class Unlink:
    """A fork is gone (or, with None, a check after restart): collect a soft-deleted source."""

    fork: str | None


@attrs.frozen
class Expire:
    pass


Message = (
    CreateMessage
    | AppendMessage
    | Read
    | Head
    | Delete
    | Describe
    | Advance
    | Link
    | Links
    | Unlink
    | Expire
)


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


@attrs.frozen
class ReadResult:
    """A read of [start, end); `data` holds its first bytes, all of them unless the read was
    asked for a piece (`Read.fetch`): the rest is then fetched by position."""

    snapshot: Snapshot
    start: int
    end: int
    data: bytes  # stored form; JSON streams store `message,` items
    source: str | None = None  # set when `start` lies in a fork's inherited range

    @property
    def complete(self) -> bool:
        return self.start + len(self.data) == self.end
