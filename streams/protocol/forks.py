"""The rules of creating a fork: pure, no I/O.

The service asks the source's actor for its metadata (`Source`), walks a sub-offset through
the chain (an actor conversation), and these functions decide the rest: what may be forked,
from where, and the fork's configuration (content type, TTL inheritance, offset, depth).
"""

from __future__ import annotations

import attrs

from streams.protocol.errors import ProtocolError, bad_request, conflict, not_found
from streams.protocol.headers import is_json, media_type
from streams.protocol.machine import CreateRequest
from streams.protocol.records import StreamConfig
from streams.protocol.requests import Fork
from streams.protocol.stream_reads import compacted


@attrs.frozen
class Source:
    """A fork source as its actor described it."""

    config: StreamConfig
    tail: int
    soft_deleted: bool
    base: int = 0  # its last compaction: nothing before it can be forked (docs/state.md)


def check_target(name: str, fork: Fork) -> None:
    if fork.source == name:
        raise conflict("a stream cannot fork itself")


def source_error(error: ProtocolError) -> ProtocolError:
    """What asking the source for its metadata failed with, as the fork's create says it."""
    if error.status == 404:
        return not_found("fork source stream not found")
    return error


def anchor(fork: Fork, source: Source, max_depth: int) -> int:
    """Where the fork point lies before its sub-offset is walked: the requested offset, or
    the source's tail."""
    if source.soft_deleted:
        raise conflict("fork source was deleted", code="SOURCE_DELETED")
    if source.config.fork_depth + 1 > max_depth:
        raise bad_request(
            f"forks chain at most {max_depth} deep; the source is at the limit",
            code="FORK_DEPTH_EXCEEDED",
        )
    position = source.tail if fork.offset is None else fork.offset
    if position > source.tail:
        raise bad_request("Stream-Fork-Offset is beyond the source's tail")
    if position < source.base:
        raise compacted(source.base)
    return position


def forked(
    request: CreateRequest, fork: Fork, source: Source, position: int, left: int
) -> CreateRequest:
    """The fork's create request, its sub-offset walked to `position` with `left` units
    that did not fit: the source's content type (a fork may leave it out, not change it), its
    TTL or Expires-At unless the fork gives its own, and where its own data starts."""
    if left:
        raise bad_request("Stream-Fork-Sub-Offset is beyond the source's tail")
    wanted = request.config
    content_type = wanted.content_type or source.config.content_type
    if media_type(content_type) != media_type(source.config.content_type):
        raise conflict("a fork's Content-Type must match its source's", code="CONTENT_TYPE")
    state = wanted.state_validation is not None or wanted.state_compaction is not None
    if state and not is_json(content_type):
        raise bad_request("State Protocol streams are application/json", code="STATE_NOT_JSON")
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
        fork_depth=source.config.fork_depth + 1,
    )
    return attrs.evolve(request, config=config, fork_offset=fork.offset)
