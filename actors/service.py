"""Stream operations as the HTTP layer sees them, each a short conversation with actors.

Forks are the reason this layer exists: creating one asks the source (and its sources)
where the fork point lies, and reading one stitches the inherited range from the source
with the fork's own data.
"""

from __future__ import annotations

import attrs
import trio

from actors import messages as m
from actors.registry import Registry
from streams.protocol import jsonmode
from streams.protocol.errors import ProtocolError, bad_request, conflict, not_found
from streams.protocol.headers import is_json, media_type
from streams.protocol.machine import AppendRequest, CreateRequest, Reply
from streams.protocol.offsets import Sentinel

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


@attrs.frozen
class Fork:
    source: str
    offset: int | None = None
    sub_offset: int = 0


class Streams:
    def __init__(self, registry: Registry, *, max_fork_depth: int = 100) -> None:
        self.registry = registry
        self.max_fork_depth = max_fork_depth

    async def create(self, name: str, request: CreateRequest, fork: Fork | None = None) -> Reply:
        if fork is not None:
            request = await self._fork_request(name, request, fork)
        if is_json(request.config.content_type) and request.body:
            request = attrs.evolve(request, flattened=await flatten(request.body))
        if fork is not None:
            source = fork.source

            async def link(incarnation: str) -> None:
                await self.registry.call_source(source, m.Link(name, incarnation))

            return await self.registry.call(name, m.CreateMessage(request, link))
        return await self.registry.call(name, m.CreateMessage(request))

    async def _fork_request(self, name: str, request: CreateRequest, fork: Fork) -> CreateRequest:
        if fork.source == name:
            raise conflict("a stream cannot fork itself")
        try:
            source: m.Snapshot = await self.registry.call(fork.source, m.Describe())
        except ProtocolError as error:
            if error.status == 404:
                raise not_found("fork source stream not found") from error
            raise
        if source.soft_deleted:
            raise conflict("fork source was deleted", code="SOURCE_DELETED")
        depth = source.config.fork_depth + 1
        if depth > self.max_fork_depth:
            raise bad_request(
                f"forks chain at most {self.max_fork_depth} deep; the source is at the limit",
                code="FORK_DEPTH_EXCEEDED",
            )
        anchor = source.tail if fork.offset is None else fork.offset
        if anchor > source.tail:
            raise bad_request("Stream-Fork-Offset is beyond the source's tail")
        position, left = await self._advance(fork.source, anchor, fork.sub_offset, source.tail)
        if left:
            raise bad_request("Stream-Fork-Sub-Offset is beyond the source's tail")
        wanted = request.config
        content_type = wanted.content_type or source.config.content_type
        if media_type(content_type) != media_type(source.config.content_type):
            raise conflict("a fork's Content-Type must match its source's", code="CONTENT_TYPE")
        ttl, expires_at = wanted.ttl, wanted.expires_at
        if ttl is None and expires_at is None:
            ttl, expires_at = source.config.ttl, source.config.expires_at
        config = attrs.evolve(
            wanted,
            content_type=source.config.content_type,
            ttl=ttl,
            expires_at=expires_at,
            fork_source=fork.source,
            fork_offset=position,
            fork_depth=depth,
        )
        return attrs.evolve(request, config=config, fork_offset=fork.offset)

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

    async def append(self, name: str, request: AppendRequest) -> Reply:
        if request.content_type is not None and is_json(request.content_type) and request.body:
            request = attrs.evolve(request, flattened=await flatten(request.body))
        return await self.registry.call(name, m.AppendMessage(request))

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
    ) -> m.ReadResult:
        """Stored bytes from `start`, stitched across fork boundaries: down the chain to the
        stream that holds `start`, then up it, topping up from each fork's own data (a loop,
        not recursion: chains can be deep). With `fetch`, only that many bytes come back (a
        piece), though `end` is where the whole read ends."""
        result: m.ReadResult = await self.registry.call(
            name, m.Read(start, max_bytes, bound, internal, fetch)
        )
        chain: list[tuple[str, m.ReadResult, int | None]] = []
        while result.source is not None:
            chain.append((name, result, bound))
            fork_offset = result.snapshot.config.fork_offset
            bound = fork_offset if bound is None else min(bound, fork_offset)
            name = result.source
            result = await self.registry.call(
                name, m.Read(result.start, max_bytes, bound, internal=True, fetch=fetch)
            )
        for name, forked, bound in reversed(chain):
            fork_offset = forked.snapshot.config.fork_offset
            data, end = result.data, result.end
            size = end - forked.start
            if end < fork_offset or size >= max_bytes or (bound is not None and end >= bound):
                result = attrs.evolve(forked, end=end, data=data)
                continue
            rest = None if fetch is None else fetch - len(data)  # 0 once the piece is full
            own: m.ReadResult = await self.registry.call(
                name, m.Read(end, max_bytes - size, bound, internal=True, fetch=rest)
            )
            result = m.ReadResult(own.snapshot, forked.start, own.end, data + own.data)
        return result
