"""Stream operations as the HTTP layer sees them, each a short conversation with actors.

Forks are the reason this layer exists: creating one asks the source (and its sources)
where the fork point lies, and reading one stitches the inherited range from the source
with the fork's own data.
"""

from __future__ import annotations

import attrs

from actors import messages as m
from actors.registry import Registry
from streams.errors import ProtocolError, bad_request, conflict, not_found
from streams.headers import media_type
from streams.machine import AppendRequest, CreateRequest, Reply
from streams.offsets import Sentinel


@attrs.frozen
class Fork:
    source: str
    offset: int | None = None
    sub_offset: int = 0


class Streams:
    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    async def create(self, name: str, request: CreateRequest, fork: Fork | None = None) -> Reply:
        if fork is not None:
            request = await self._fork_request(name, request, fork)
            source = fork.source

            async def link(incarnation: str) -> None:
                await self.registry.call(source, m.Link(name, incarnation))

            return await self.registry.call(name, m.Create(request, link))  # type: ignore[no-any-return]
        return await self.registry.call(name, m.Create(request))  # type: ignore[no-any-return]

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
        )
        return attrs.evolve(request, config=config, fork_offset=fork.offset)

    async def _advance(self, name: str, position: int, count: int, bound: int) -> tuple[int, int]:
        """Walk `count` sub-offset units from `position`, through inherited data first."""
        if not count:
            return position, 0
        snapshot: m.Snapshot = await self.registry.call(name, m.Describe())
        config = snapshot.config
        if position < config.fork_offset and config.fork_source is not None:
            position, count = await self._advance(
                config.fork_source, position, count, min(bound, config.fork_offset)
            )
        if count:
            result = await self.registry.call(name, m.Advance(position, count, bound))
            position, count = result
        return position, count

    async def append(self, name: str, request: AppendRequest) -> Reply:
        return await self.registry.call(name, m.Append(request))  # type: ignore[no-any-return]

    async def head(self, name: str) -> Reply:
        return await self.registry.call(name, m.Head())  # type: ignore[no-any-return]

    async def delete(self, name: str) -> Reply:
        return await self.registry.call(name, m.Delete())  # type: ignore[no-any-return]

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
        """Stored bytes from `start`, stitched across fork boundaries; with `fetch`, only
        that many of them (a piece), though `end` is where the whole read ends."""
        result: m.ReadResult = await self.registry.call(
            name, m.Read(start, max_bytes, bound, internal, fetch)
        )
        if result.source is None:
            return result
        fork_offset = result.snapshot.config.fork_offset
        limit = fork_offset if bound is None else min(bound, fork_offset)
        inherited = await self.read(
            result.source, result.start, max_bytes, bound=limit, internal=True, fetch=fetch
        )
        data, end = inherited.data, inherited.end
        size = end - result.start
        if end < fork_offset or size >= max_bytes or (bound is not None and end >= bound):
            return attrs.evolve(result, end=end, data=data)
        rest = None if fetch is None else fetch - len(data)  # 0 once the piece is full
        own: m.ReadResult = await self.registry.call(
            name, m.Read(end, max_bytes - size, bound, internal=True, fetch=rest)
        )
        return m.ReadResult(own.snapshot, result.start, own.end, data + own.data)
