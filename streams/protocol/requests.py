"""What a request asks for, from its headers, query and body: pure, no I/O.

Each write is checked in two steps, as the HTTP shell reads it: the headers before the body
is read (a bad header costs no body), then the body. The result is the request the service
takes (`CreateRequest`, `AppendRequest`, `Fork`) or the read the query names (`ReadQuery`);
anything wrong is a `ProtocolError` and nothing is asked of the service.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal
from urllib.parse import parse_qsl

import attrs

from streams.protocol import names, offsets
from streams.protocol.errors import ProtocolError, bad_request
from streams.protocol.headers import (
    DEFAULT_CONTENT_TYPE,
    Producer,
    is_json,
    is_true,
    parse_expires_at,
    parse_producer,
    parse_state_compaction,
    parse_state_validation,
    parse_sub_offset,
    parse_ttl,
    valid_content_type,
)
from streams.protocol.machine import AppendRequest, CreateRequest
from streams.protocol.offsets import Sentinel
from streams.protocol.records import StreamConfig

Live = Literal["", "long-poll", "sse"]
LIVE_MODES: tuple[Live, ...] = ("", "long-poll", "sse")


def too_large(limit: int) -> ProtocolError:
    return ProtocolError(413, "Payload Too Large", f"body exceeds {limit} bytes")


@attrs.frozen
class Fork:
    """A PUT's `Stream-Forked-From` and where in the source the fork starts (None: its tail)."""

    source: str
    offset: int | None = None
    sub_offset: int = 0


def parse_fork(
    headers: Mapping[str, str], max_name_bytes: int, under: names.Prefixes = names.DEFAULT
) -> Fork | None:
    source = headers.get("stream-forked-from")
    if source is None:
        if "stream-fork-offset" in headers or "stream-fork-sub-offset" in headers:
            raise bad_request("fork headers need Stream-Forked-From")
        return None
    source_name = names.from_fork_header(source, max_name_bytes, under)
    offset = headers.get("stream-fork-offset")
    sub = headers.get("stream-fork-sub-offset")
    return Fork(
        source_name,
        offsets.decode(offset) if offset is not None else None,
        parse_sub_offset(sub) if sub else 0,
    )


@attrs.frozen
class CreateHeaders:
    """A PUT whose headers passed: the stream it creates, once given the body."""

    config: StreamConfig
    closed: bool
    fork: Fork | None

    def request(self, body: bytes, max_stream_bytes: int | None = None) -> CreateRequest:
        return CreateRequest(self.config, self.closed, body, max_stream_bytes=max_stream_bytes)


def parse_create(
    headers: Mapping[str, str], max_name_bytes: int, under: names.Prefixes = names.DEFAULT
) -> CreateHeaders:
    """A PUT's headers. A fork's content type and TTL may be left out: it inherits them; its
    source is named by a path under the prefixes streams live `under`."""
    ttl = parse_ttl(headers["stream-ttl"]) if "stream-ttl" in headers else None
    expires = headers.get("stream-expires-at")
    expires_at = parse_expires_at(expires) if expires is not None else None
    if ttl is not None and expires_at is not None:
        raise bad_request("use Stream-TTL or Stream-Expires-At, not both")
    fork = parse_fork(headers, max_name_bytes, under)
    content_type = headers.get("content-type")
    if content_type is not None and not valid_content_type(content_type):
        raise bad_request(f"invalid Content-Type {content_type!r}")
    if content_type is None and fork is None:
        content_type = DEFAULT_CONTENT_TYPE
    validation = headers.get("stream-state-validation")
    compaction = headers.get("stream-state-compaction")
    config = StreamConfig(
        content_type or "",
        ttl,
        expires_at,
        state_validation=None if validation is None else parse_state_validation(validation),
        state_compaction=None if compaction is None else parse_state_compaction(compaction),
    )
    if (validation or compaction) and content_type is not None and not is_json(content_type):
        raise bad_request("State Protocol streams are application/json", code="STATE_NOT_JSON")
    return CreateHeaders(config, is_true(headers.get("stream-closed")), fork)


@attrs.frozen
class AppendHeaders:
    """A POST whose headers passed; its body decides the rest."""

    content_type: str | None
    close: bool
    producer: Producer | None
    stream_seq: str | None

    def request(self, body: bytes, max_stream_bytes: int | None = None) -> AppendRequest:
        if not body and not self.close:
            raise bad_request("an append needs a body (or Stream-Closed: true)")
        if body and self.content_type is None:
            raise bad_request("Content-Type is required")
        if body and self.content_type is not None and not valid_content_type(self.content_type):
            raise bad_request(f"invalid Content-Type {self.content_type!r}")
        return AppendRequest(
            self.content_type,
            body,
            self.close,
            self.producer,
            self.stream_seq,
            max_stream_bytes=max_stream_bytes,
        )


def parse_append(headers: Mapping[str, str]) -> AppendHeaders:
    return AppendHeaders(
        headers.get("content-type"),
        is_true(headers.get("stream-closed")),
        parse_producer(headers),
        headers.get("stream-seq"),
    )


def parse_query(raw: bytes) -> dict[str, list[str]]:
    """Every value of every query parameter, in order (latin-1, as headers)."""
    params: dict[str, list[str]] = {}
    for key, value in parse_qsl(raw.decode("latin-1"), keep_blank_values=True):
        params.setdefault(key, []).append(value)
    return params


StateView = Literal["snapshot", "entity"]


@attrs.frozen
class ReadQuery:
    """A GET: from where, live or not, and the cursor the client echoed; with `state`, a
    read of the stream's State Protocol view (docs/state.md) of some `types` (None: all),
    or of one entity (`types` then holds its type)."""

    start: int | Sentinel
    live: Live = ""
    cursor: str | None = None
    state: StateView | None = None
    types: frozenset[str] | None = None
    key: str | None = None


def parse_read(query: Mapping[str, list[str]]) -> ReadQuery:
    offset_values = query.get("offset")
    if offset_values is not None and (len(offset_values) != 1 or not offset_values[0]):
        raise bad_request("give exactly one non-empty offset", code="INVALID_OFFSET")
    live = query.get("live", [""])[-1]
    if live not in LIVE_MODES:
        raise bad_request(f"unknown live mode {live!r}")
    start = offsets.parse(offset_values[0]) if offset_values else Sentinel.START
    state = parse_state(query) if start is Sentinel.START else None
    if live and offset_values is None and state != "snapshot":
        raise bad_request("live reads need an offset")
    mode: Live = "sse" if live == "sse" else "long-poll" if live else ""
    types = frozenset(query.get("type", ())) or None
    key = query.get("key", [None])[-1]
    return ReadQuery(start, mode, query.get("cursor", [None])[-1], state, types, key)


def parse_state(query: Mapping[str, list[str]]) -> StateView | None:
    """`state` (read from the stream's start only: clients send their handle's parameters
    with every read, and only there does it mean something)."""
    values = query.get("state")
    if values is None:
        return None
    if values[-1] == "snapshot":
        return "snapshot"
    if values[-1] != "entity":
        raise bad_request(f"state must be snapshot or entity, got {values[-1][:64]!r}")
    if len(query.get("type", ())) != 1 or len(query.get("key", ())) != 1:
        raise bad_request("state=entity needs one type and one key")
    if query.get("live"):
        raise bad_request("state=entity is not a live read")
    return "entity"
