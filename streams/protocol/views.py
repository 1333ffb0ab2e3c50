"""What reads of a stream's State Protocol view answer (docs/state.md): a snapshot, which
reads like a catch-up read from the start (a JSON array that ends up to date at the offset
the view reflects), or one entity's value. Pure: headers from what the actor reported."""

from __future__ import annotations

import hashlib

from streams.protocol import caching, offsets
from streams.protocol.errors import ProtocolError
from streams.protocol.machine import Reply
from streams.protocol.responses import ReadView, conditional, live_headers

JSON = "application/json"


def snapshot_etag(view: ReadView, base: int, types: frozenset[str] | None) -> str:
    """Varies with the offset the view reflects, the last compaction, the types asked for
    and closure."""
    tag = f"{view.incarnation}:{base}:{view.end}:snapshot"
    if types is not None:
        names = "\0".join(sorted(types)).encode("utf-8", "surrogatepass")
        tag += ":" + hashlib.sha256(names).hexdigest()[:16]
    return f'"{tag}{":c" if view.eof else ""}"'


def snapshot_reply(
    view: ReadView,
    base: int,
    types: frozenset[str] | None,
    cursor: str | None,
    *,
    skipped: int,
    compacting: bool,
    live: bool,
    if_none_match: str | None,
    now: float,
    jitter: int,
) -> Reply:
    """A snapshot's status and headers: up to date at the view's offset, from which a
    reader continues; 304 when a catch-up's If-None-Match holds its ETag. How many
    messages the view skipped (not State Protocol) is said too.

    A compacting stream's snapshot is revalidated on every use (no-cache): a cached one
    could send its readers on from an offset compacted away since."""
    headers = live_headers(view, cursor, now, jitter)
    headers["Content-Type"] = JSON
    headers["ETag"] = tag = snapshot_etag(view, base, types)
    left = None if view.deadline is None else view.deadline - now
    cache = "no-cache" if compacting else caching.catch_up_cache_control(left)
    headers["Cache-Control"] = cache
    headers["Stream-State-Skipped"] = str(skipped)
    if base:
        headers["Stream-State-Base"] = offsets.encode(base)
    return conditional(headers, tag, live=live, if_none_match=if_none_match)


def entity_reply(offset: int, value: bytes | None, type: str, key: str) -> Reply:
    """One entity's value as of `offset`, or 404 if the view holds no such entity."""
    if value is None:
        raise ProtocolError(
            404,
            "Not Found",
            f"no entity of type {type!r} with key {key!r} as of offset {offsets.encode(offset)}",
            {"Stream-Next-Offset": offsets.encode(offset)},
            code="ENTITY_NOT_FOUND",
        )
    headers = {
        "Content-Type": JSON,
        "Stream-Next-Offset": offsets.encode(offset),
        "Cache-Control": "no-cache",
    }
    return Reply(200, headers, value)
