"""Stream operations as the HTTP layer (or any front end) sees them, each a short
conversation with actors.

Forks are the reason this layer exists: creating one asks the source (and its sources)
where the fork point lies (the rules are the pure core's, `streams.protocol.forks`), and
reading one stitches the inherited range from the source with the fork's own data. Live
consumers `follow` a stream (actors/follow.py); an append can hold the readers it wakes until
its response is out (`receipt`, actors/wakeups.py).
"""

from __future__ import annotations

import attrs
import trio

from actors import messages as m
from actors.follow import Follower
from actors.registry import Registry
from actors.wakeups import Receipt, Wakeups
from state.view import View
from streams.protocol import forks, jsonmode
from streams.protocol.errors import ProtocolError
from streams.protocol.headers import is_json
from streams.protocol.machine import AppendRequest, CreateRequest, Reply
from streams.protocol.offsets import Sentinel
from streams.protocol.requests import Fork as Fork  # where callers have found it

# JSON bodies larger than this are flattened in a worker thread, at most this many at once
# (the GIL is shared: more threads would only take turns, and hold more bodies' memory).
FLATTEN_IN_THREAD_BYTES = 64 * 1024
_flatteners = trio.CapacityLimiter(2)


async def flatten(body: bytes) -> bytes:
    """A JSON body's stored form, made off the event loop when it is large: parsing and
    re-encoding 16 MB of small messages takes seconds (400 INVALID_JSON as inline)."""
    if len(body) < FLATTEN_IN_THREAD_BYTES:
        return jsonmode.flatten(body)
    return await trio.to_thread.run_sync(jsonmode.flatten, body, limiter=_flatteners)


class Streams:
    """The stream operations, each a short conversation with the stream's actor (and, for
    forks, its sources' actors): what the HTTP adapter, and any other front end, calls.

    `run` must run for writers to come first (`receipt`); everything else works without it.
    """

    def __init__(
        self, registry: Registry, *, max_fork_depth: int = 100, reader_wake_delay: float = 0.1
    ) -> None:
        self.registry = registry
        self.max_fork_depth = max_fork_depth
        self.wakeups = Wakeups(reader_wake_delay)
        registry.sources = self  # how a fork's actor folds its source's data

    async def run(self) -> None:
        """Wakes the readers of commits whose writers did not release their receipts in time."""
        await self.wakeups.run()

    def receipt(self) -> Receipt | None:
        """For `append`: the live readers of its commit then wait until it is released, which
        the caller does once its response is sent (at most `reader_wake_delay` s). None (no
        holding) unless `run` runs."""
        return self.wakeups.receipt()

    def follow(
        self,
        name: str,
        start: int | Sentinel,
        *,
        max_bytes: int = 1 << 20,
        piece: int | None = None,
    ) -> Follower:
        """The committed batches of `name` from `start`, as they are committed (see
        `actors.follow.Follower`): each ends at a record boundary, the first at least
        `max_bytes` past its start (or the tail), and with `piece` holds only its first
        `piece` bytes of data."""

        async def read(position: int | Sentinel) -> m.ReadResult:
            return await self.read(name, position, max_bytes, fetch=piece)

        return Follower(read, start, max_bytes if piece is None else min(max_bytes, piece))

    async def create(
        self, name: str, request: CreateRequest, fork: Fork | None = None, base: View | None = None
    ) -> Reply:
        """Create `name` (a fork of `fork`); with `base`, an import's compacted stream whose log
        starts with a base record holding that view (`m.CreateMessage.base`)."""
        if fork is not None:
            request = await self._fork_request(name, request, fork)
        if is_json(request.config.content_type) and request.body:
            request = attrs.evolve(request, flattened=await flatten(request.body))
        if fork is not None:
            source = fork.source

            async def link(incarnation: str) -> None:
                await self.registry.call_source(source, m.Link(name, incarnation))

            return await self.registry.call(name, m.CreateMessage(request, link, base))
        return await self.registry.call(name, m.CreateMessage(request, base=base))

    async def _fork_request(self, name: str, request: CreateRequest, fork: Fork) -> CreateRequest:
        forks.check_target(name, fork)
        try:
            described: m.Snapshot = await self.registry.call(fork.source, m.Describe())
        except ProtocolError as error:
            answer = forks.source_error(error)
            if answer is error:
                raise
            raise answer from error
        source = forks.Source(
            described.config, described.tail, described.soft_deleted, described.base
        )
        anchor = forks.anchor(fork, source, self.max_fork_depth)
        position, left = await self._advance(fork.source, anchor, fork.sub_offset, source.tail)
        return forks.forked(request, fork, source, position, left)

    async def _advance(self, name: str, position: int, count: int, bound: int) -> tuple[int, int]:
        """Walk `count` sub-offset units from `position`, through inherited data first: down
        the fork chain to the stream that holds `position`, then up it (a loop, not recursion:
        chains can be deep)."""
        if not count:
            return position, 0
        chain = [(name, bound)]
        while True:
            snapshot: m.Snapshot = await self.registry.call(name, m.Describe())
            config = snapshot.config
            if position >= config.fork_offset or config.fork_source is None:
                break
            name, bound = config.fork_source, min(bound, config.fork_offset)
            chain.append((name, bound))
        for name, bound in reversed(chain):
            if not count:
                break
            position, count = await self.registry.call(name, m.Advance(position, count, bound))
        return position, count

    async def append(
        self, name: str, request: AppendRequest, receipt: Receipt | None = None
    ) -> Reply:
        """Append; with a `receipt` (see `receipt`), the commit's live readers wait until it is
        released."""
        request = await self._flattened(request)
        return await self.registry.call(name, m.AppendMessage(request, receipt))

    async def restore(self, name: str, requests: list[AppendRequest]) -> list[Reply]:
        """`streams import`: appends (with `restore` set) committed at once, in order."""
        flattened = tuple([await self._flattened(request) for request in requests])
        return await self.registry.call(name, m.Restore(flattened))

    @staticmethod
    async def _flattened(request: AppendRequest) -> AppendRequest:
        if request.content_type is not None and is_json(request.content_type) and request.body:
            return attrs.evolve(request, flattened=await flatten(request.body))
        return request

    async def state_snapshot(self, name: str, types: frozenset[str] | None = None) -> m.StateRead:
        """The stream's State Protocol view as of its tail (docs/state.md)."""
        return await self.registry.call(name, m.StateSnapshot(types))

    async def state_entity(self, name: str, type: str, key: str) -> m.StateRead:
        """One entity of the view (no entities: absent), and the offset it reflects."""
        return await self.registry.call(name, m.StateEntity(type, key))

    async def inherited(self, source: str, start: int, bound: int, max_bytes: int) -> m.ReadResult:
        """A fork's inherited data from `source`'s chain, with record ends (a view's fold)."""
        return await self.read(
            source, start, max_bytes, bound=bound, internal=True, ends=True, exact=True
        )

    async def inherited_base(self, name: str) -> tuple[str, bytes]:
        """(incarnation, view) of the base of the compacted stream down `name`'s chain: a
        fork of it folds its view from there."""
        while True:
            snapshot: m.Snapshot = await self.registry.call(name, m.Describe())
            if snapshot.base or snapshot.config.fork_source is None:
                return await self.registry.call(name, m.BaseView())
            name = snapshot.config.fork_source

    async def head(self, name: str) -> Reply:
        return await self.registry.call(name, m.Head())

    async def delete(self, name: str) -> Reply:
        return await self.registry.call(name, m.Delete())

    async def read(
        self,
        name: str,
        start: int | Sentinel,
        max_bytes: int,
        *,
        bound: int | None = None,
        internal: bool = False,
        fetch: int | None = None,
        ends: bool = False,
        exact: bool = False,
    ) -> m.ReadResult:
        """Stored bytes from `start`, stitched across fork boundaries: down the chain to the
        stream that holds `start`, then up it, topping up from each fork's own data (a loop,
        not recursion: chains can be deep). With `fetch`, only that many bytes come back (a
        piece), though `end` is where the whole read ends. The stream that holds `start`
        moves it to the start of its record unless `exact` (a later piece)."""
        result: m.ReadResult = await self.registry.call(
            name, m.Read(start, max_bytes, bound, internal, fetch, ends, exact)
        )
        chain: list[tuple[str, m.ReadResult, int | None]] = []
        while result.source is not None:
            chain.append((name, result, bound))
            fork_offset = result.snapshot.config.fork_offset
            bound = fork_offset if bound is None else min(bound, fork_offset)
            name = result.source
            result = await self.registry.call(
                name, m.Read(result.start, max_bytes, bound, True, fetch, ends, exact)
            )
        start = result.start  # where the stream that holds it placed the read
        for name, forked, bound in reversed(chain):
            fork_offset = forked.snapshot.config.fork_offset
            data, end = result.data, result.end
            size = end - start
            if end < fork_offset or size >= max_bytes or (bound is not None and end >= bound):
                result = attrs.evolve(forked, start=start, end=end, data=data, ends=result.ends)
                continue
            rest = None if fetch is None else fetch - len(data)  # 0 once the piece is full
            own: m.ReadResult = await self.registry.call(
                name, m.Read(end, max_bytes - size, bound, internal=True, fetch=rest, ends=ends)
            )
            joined = data + own.data
            result = m.ReadResult(own.snapshot, start, own.end, joined, ends=result.ends + own.ends)
        return result
