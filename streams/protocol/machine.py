"""A stream's state as a pure fold over its log records, and the rules for changing it.

Theory of operation. `StreamState.plan_*` decides, without I/O, what a request does: a record
to commit, or a reply (a duplicate, an idempotent close), or a `ProtocolError`. The actor
commits the record and then `apply`s it; recovery replays the log through the same `apply`,
so live state and recovered state cannot drift apart. Where a read starts and which parts of
the log it takes are the state's read rules (`stream_reads.StreamReads`, its base class).

    stream        PUT             POST                     GET, HEAD   DELETE
    ------------  --------------  -----------------------  ----------  --------------------
    absent        201 -> live     404                      404         404
                  (-> closed with
                  Stream-Closed)
    live          200 same        200/204 append;          200         204 -> absent, or
                  config, else    Stream-Closed -> closed              -> soft-deleted while
                  409                                                  forks read it
    closed        as live         409 STREAM_CLOSED (204   200, EOF    as live
                                  for a repeated close or  at the tail
                                  the closer's retry)
    soft-deleted  409             410                      410 (forks  410; its last fork's
                                                           still read  delete -> absent
                                                           it)
    expired       the next request or the sweeper deletes it first (TTL or Expires-At passed)
"""

from __future__ import annotations

from typing import Literal

import attrs

from streams.protocol import jsonmode, offsets
from streams.protocol.errors import ProtocolError, bad_request, conflict, gone
from streams.protocol.extents import Extents
from streams.protocol.headers import Producer, format_expires_at, is_json, media_type
from streams.protocol.records import (
    AppendRecord,
    BaseRecord,
    CreateRecord,
    Record,
    SoftDeleteRecord,
    StreamConfig,
)
from streams.protocol.stream_reads import StreamReads


@attrs.frozen
class Reply:
    """A complete answer the HTTP layer sends as is."""

    status: int
    headers: dict[str, str] = attrs.field(factory=dict)
    body: bytes = b""


@attrs.frozen
class AppendRequest:
    content_type: str | None
    body: bytes
    close: bool = False
    producer: Producer | None = None
    stream_seq: str | None = None
    flattened: bytes | None = None  # a JSON body's stored form, made off the event loop
    # An import re-creating an exported stream (`streams import`), never HTTP: the producer
    # stamp is the stream's last for that producer, set as given (a table restored, one
    # entry per record, not a sequence checked), and compaction waits for a later append.
    restore: bool = False
    max_stream_bytes: int | None = None  # what the stream may hold after it (None: no limit)


@attrs.frozen
class CreateRequest:
    config: StreamConfig
    closed: bool = False
    body: bytes = b""
    fork_offset: int | None = None  # as requested; resolved into config.fork_offset
    fork_sub_offset: int = 0
    flattened: bytes | None = None
    max_stream_bytes: int | None = None  # what the stream may hold (None: no limit)


def check_stream_size(held: int, adding: int, limit: int | None) -> None:
    """An append that would take a stream past `limit` bytes (`DS_LIMITS__MAX_STREAM_BYTES`)
    is refused whole."""
    if limit is not None and held + adding > limit:
        raise ProtocolError(
            413,
            "Payload Too Large",
            f"the stream would hold {held + adding} bytes, more than its limit of {limit}"
            f" ({held} held)",
            code="STREAM_TOO_LARGE",
        )


def encode_body(
    content_type: str, body: bytes, *, creating: bool, flattened: bytes | None = None
) -> bytes:
    """The stored bytes of a body: JSON flattened to `message,` items (`flattened` when the
    caller did that already, off the event loop)."""
    if not body or not is_json(content_type):
        return body
    stored = jsonmode.flatten(body) if flattened is None else flattened
    if not stored and not creating:
        raise bad_request("an empty JSON array appends nothing", code="EMPTY_ARRAY")
    return stored


@attrs.define
class StreamState(StreamReads):
    name: str
    config: StreamConfig
    incarnation: str
    created_at: float
    last_access: float
    tail: int
    closed: bool = False
    closed_by: Producer | None = None
    soft_deleted: bool = False
    stream_seq: str | None = None
    producers: dict[str, tuple[int, int]] = attrs.field(factory=dict)
    base: int = 0  # where the log's data starts: the offset of its last compaction, or 0
    base_view: tuple[int, int] | None = None  # (locator, length) of the view as of `base`
    extents: Extents = attrs.field(factory=Extents)  # where each record's data lies

    # ---- folding records -------------------------------------------------------------

    @classmethod
    def created(cls, record: CreateRecord, locator: int, length: int | None = None) -> StreamState:
        """The state a create record starts; `length` of its data when not in `record`
        (recovery reads metadata only)."""
        state = cls(
            name=record.name,
            config=record.config,
            incarnation=record.incarnation,
            created_at=record.at,
            last_access=record.at,
            tail=record.config.fork_offset,
            closed=record.closed,
        )
        state._add_extent(len(record.data) if length is None else length, locator)
        return state

    @classmethod
    def rebased(cls, record: BaseRecord, locator: int, length: int | None = None) -> StreamState:
        """The state a compacted log starts with; `locator` and `length` of the view it
        holds (docs/state.md)."""
        create = record.create
        return cls(
            name=create.name,
            config=create.config,
            incarnation=create.incarnation,
            created_at=create.at,
            last_access=record.last_access,
            tail=record.base,
            closed=create.closed,
            closed_by=record.closed_by,
            stream_seq=record.stream_seq,
            producers=dict(record.producers),
            base=record.base,
            base_view=(locator, len(record.data) if length is None else length),
        )

    def base_record(self, view: bytes) -> BaseRecord:
        """The record a compaction at the tail starts the new log with, holding `view`;
        `rebase` once it is written."""
        create = CreateRecord(
            self.name, self.config, self.incarnation, self.created_at, self.closed
        )
        return BaseRecord(
            create,
            self.tail,
            self.last_access,
            self.closed_by,
            self.stream_seq,
            dict(self.producers),
            view,
        )

    def rebase(self, base: int, view: tuple[int, int], shift: int) -> None:
        """The log now starts with a base record as of `base` (a record boundary), its view
        at `view`, followed by the records from `base` on, moved `shift` bytes in the log."""
        self.extents = self.extents.from_(base, shift)
        self.base, self.base_view = base, view

    def apply(self, record: Record, locator: int, length: int | None = None) -> None:
        match record:
            case AppendRecord():
                self._add_extent(len(record.data) if length is None else length, locator)
                if record.producer is not None:
                    p = record.producer
                    self.producers[p.id] = (p.epoch, p.seq)
                if record.stream_seq is not None:
                    self.stream_seq = record.stream_seq
                if record.close:
                    self.closed = True
                    self.closed_by = record.producer
            case SoftDeleteRecord():
                self.soft_deleted = True
            case CreateRecord() | BaseRecord():
                raise ValueError("a stream is created once")

    def _add_extent(self, length: int, locator: int) -> None:
        if length:
            self.extents.add(self.tail, locator)
            self.tail += length

    @property
    def held(self) -> int:
        """The bytes of data the stream's log holds: its own appends since its creation or
        its last compaction (a fork's inherited data is its source's)."""
        return self.tail - max(self.base, self.config.fork_offset)

    @property
    def records(self) -> int:
        """How many records hold data."""
        return len(self.extents)

    # ---- expiry -------------------------------------------------------------------------

    def deadline(self) -> float | None:
        if self.config.expires_at is not None:
            return self.config.expires_at
        if self.config.ttl is not None:
            return self.last_access + self.config.ttl
        return None

    def expired(self, now: float) -> bool:
        deadline = self.deadline()
        return deadline is not None and now >= deadline

    def touch(self, now: float) -> None:
        """Reads and writes slide the TTL window; HEAD does not call this."""
        self.last_access = max(self.last_access, now)

    # ---- metadata -------------------------------------------------------------------

    @property
    def next_offset(self) -> str:
        return offsets.encode(self.tail)

    def check_visible(self) -> None:
        if self.soft_deleted:
            raise gone()

    def metadata_headers(self) -> dict[str, str]:
        headers = {"Content-Type": self.config.content_type, "Stream-Next-Offset": self.next_offset}
        if self.config.ttl is not None:
            headers["Stream-TTL"] = str(self.config.ttl)
        if self.config.expires_at is not None:
            headers["Stream-Expires-At"] = format_expires_at(self.config.expires_at)
        if self.closed:
            headers["Stream-Closed"] = "true"
        if self.config.state_validation is not None:
            headers["Stream-State-Validation"] = self.config.state_validation
        if self.config.state_compaction is not None:
            headers["Stream-State-Compaction"] = str(self.config.state_compaction)
        if self.base:
            headers["Stream-State-Base"] = offsets.encode(self.base)
        return headers

    def delete_action(self, referenced: bool) -> Literal["remove", "soft-delete", "keep"]:
        """What a DELETE (or expiry, or a last fork going) does: a stream that forks still
        read keeps its data and answers 410 from then on (soft delete, once); any other
        goes."""
        if not referenced:
            return "remove"
        return "keep" if self.soft_deleted else "soft-delete"

    # ---- create -------------------------------------------------------------------------

    def matches(self, request: CreateRequest) -> bool:
        """Idempotent re-creation: same content type, expiry, closure and fork origin."""
        mine, theirs = self.config, request.config
        return (
            media_type(mine.content_type) == media_type(theirs.content_type)
            and mine.ttl == theirs.ttl
            and mine.expires_at == theirs.expires_at
            and (theirs.fork_source is None or mine.fork_source == theirs.fork_source)
            and (request.fork_offset is None or mine.fork_offset == theirs.fork_offset)
            and self.closed == request.closed
            and mine.state_validation == theirs.state_validation
            and mine.state_compaction == theirs.state_compaction
        )

    def recreate(self, request: CreateRequest) -> Reply:
        if self.soft_deleted:
            raise conflict("a deleted stream with live forks still holds this path")
        if not self.matches(request):
            raise conflict("stream exists with a different configuration")
        return Reply(200, self.metadata_headers())

    # ---- append -------------------------------------------------------------------------

    def plan_append(self, request: AppendRequest, now: float) -> AppendRecord | Reply:
        self.check_visible()
        producer = request.producer
        if self.closed:
            if producer is not None and producer == self.closed_by:
                return self._ok(204, producer_seq=producer)
            if not request.body and request.close:
                return self._ok(204)
            raise self._closed_conflict()
        if request.body:
            if request.content_type is None:
                raise bad_request("Content-Type is required with a body")
            if media_type(request.content_type) != media_type(self.config.content_type):
                raise conflict("Content-Type does not match the stream's", code="CONTENT_TYPE")
        if producer is not None and not request.restore:
            duplicate = self._check_producer(producer)
            if duplicate is not None:
                return duplicate
        if (
            request.stream_seq is not None
            and self.stream_seq is not None
            and request.stream_seq <= self.stream_seq
        ):
            raise conflict("Stream-Seq must increase", code="SEQUENCE_REGRESSION")
        data = encode_body(
            self.config.content_type, request.body, creating=False, flattened=request.flattened
        )
        check_stream_size(self.held, len(data), request.max_stream_bytes)
        return AppendRecord(now, data, producer, request.stream_seq, request.close)

    def _check_producer(self, producer: Producer) -> Reply | None:
        """Epoch fencing and sequence checks; a Reply for a duplicate, None to accept."""
        known = self.producers.get(producer.id)
        if known is None:
            if producer.seq != 0:
                raise self._gap(0, producer.seq)
            return None
        epoch, last_seq = known
        if producer.epoch < epoch:
            raise ProtocolError(
                403,
                "Forbidden",
                "stale producer epoch",
                {"Producer-Epoch": str(epoch)},
                code="STALE_EPOCH",
            )
        if producer.epoch > epoch:
            if producer.seq != 0:
                raise bad_request("a new producer epoch must start at Producer-Seq 0")
            return None
        if producer.seq <= last_seq:
            return self._ok(204, producer_seq=Producer(producer.id, epoch, last_seq))
        if producer.seq > last_seq + 1:
            raise self._gap(last_seq + 1, producer.seq)
        return None

    def _gap(self, expected: int, received: int) -> ProtocolError:
        return conflict(
            "producer sequence gap",
            code="SEQUENCE_GAP",
            Producer_Expected_Seq=str(expected),
            Producer_Received_Seq=str(received),
        )

    def _closed_conflict(self) -> ProtocolError:
        error = conflict(
            "stream is closed",
            code="STREAM_CLOSED",
            Stream_Closed="true",
            Stream_Next_Offset=self.next_offset,
        )
        return error

    def _ok(self, status: int, producer_seq: Producer | None = None) -> Reply:
        headers = {"Stream-Next-Offset": self.next_offset}
        if self.closed:
            headers["Stream-Closed"] = "true"
        if producer_seq is not None:
            headers["Producer-Epoch"] = str(producer_seq.epoch)
            headers["Producer-Seq"] = str(producer_seq.seq)
        return Reply(status, headers)

    def appended(self, record: AppendRecord) -> Reply:
        """The reply to an append once it is committed and applied."""
        status = 200 if record.producer and record.data else 204
        return self._ok(status, producer_seq=record.producer)
