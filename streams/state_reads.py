"""GET with `state` (docs/state.md): a snapshot of the stream's State Protocol view, alone
or followed live from the offset it reflects (SSE), or one entity's value.

A snapshot's entities come from the actor as a list of immutable objects: the body is
encoded from them a piece at a time as it is sent, and a commit meanwhile replaces entities
in the view without touching the list, so the body is one offset's state, never two.
"""

from __future__ import annotations

import functools
import random
import time
from collections.abc import Awaitable, Callable, Iterator

import attrs

from actors.messages import StateRead
from actors.service import Streams
from state import snapshot
from state.view import Entity
from streams.config import Settings
from streams.protocol import offsets, responses, sse, views
from streams.protocol.errors import ProtocolError
from streams.protocol.requests import ReadQuery
from streams.protocol.responses import ReadView
from streams.request import Request, respond
from streams.resources import PinBudget
from streams.sending import Send, Sender

Emit = Callable[[bytes], Awaitable[None]]
Prelude = Callable[[Emit], Awaitable[None]]
# Reads.sse: an SSE response following `query.start`, after the events a prelude sends.
FollowSSE = Callable[[Request, str, ReadQuery, Sender, Prelude], Awaitable[None]]


class SnapshotBody:
    """A snapshot's JSON array, encoded a piece at a time as it is sent. Its entities count
    against the server's `PinBudget` (503 beyond it) until it is sent or `release`d."""

    def __init__(self, entities: list[Entity], offset: int, pins: PinBudget) -> None:
        pins.hold(entities)
        self._pins = pins
        self._entities: list[Entity] | None = entities
        self.offset = offset
        self._offset = offsets.encode(offset)
        self.length = snapshot.body_length(entities, self._offset)

    def release(self) -> None:
        if self._entities is not None:
            self._pins.release(self._entities)
            self._entities = None

    def _pieces(self, piece_bytes: int) -> Iterator[bytes]:
        assert self._entities is not None, "a snapshot body is sent once"
        return snapshot.pieces(self._entities, self._offset, piece_bytes)

    async def send_http(self, piece_bytes: int, send: Send) -> None:
        try:
            pending = None
            for piece in self._pieces(piece_bytes):
                if pending is not None:
                    await send({"type": "http.response.body", "body": pending, "more_body": True})
                pending = piece
            await send({"type": "http.response.body", "body": pending or b""})
        finally:
            self.release()

    async def send_sse(self, piece_bytes: int, emit: Emit) -> None:
        """One data event holding the whole array (its control event follows it)."""
        try:
            event = sse.DataEvent(base64_encoded=False)
            for piece in self._pieces(piece_bytes):
                await emit(event.feed(piece))
            await emit(event.end())
        finally:
            self.release()


def read_view(read: StateRead) -> ReadView:
    """The snapshot as a read from the start that ended, up to date, at the view's offset."""
    s = read.snapshot
    return ReadView(
        0, read.offset, s.tail, s.closed, s.incarnation, s.config.content_type, s.deadline
    )


class StateReads:
    """Answers GET requests with `state`, within the server's bound on the entities that
    snapshots being sent hold (`PinBudget`)."""

    def __init__(self, streams: Streams, settings: Settings, sse_piece: int, sse: FollowSSE):
        self.streams = streams
        self.piece = settings.read_piece_bytes
        self.sse_piece = sse_piece
        self._sse = sse
        self.pins = PinBudget(settings.max_snapshot_entities)

    async def get(self, request: Request, name: str, query: ReadQuery, send: Sender) -> None:
        if query.state == "entity":
            assert query.types is not None and query.key is not None
            (kind,) = query.types
            read = await self.streams.state_entity(name, kind, query.key)
            value = read.entities[0].value_json() if read.entities else None
            await respond(request, send, views.entity_reply(read.offset, value, kind, query.key))
        elif query.live == "sse":
            await self._snapshot_sse(request, name, query, send)
        else:
            await self._snapshot(request, name, query, send)

    async def _snapshot(self, request: Request, name: str, query: ReadQuery, send: Sender) -> None:
        read = await self.streams.state_snapshot(name, query.types)
        reply = views.snapshot_reply(
            read_view(read),
            read.base,
            query.types,
            query.cursor,
            skipped=read.skipped,
            compacting=read.snapshot.config.state_compaction is not None,
            live=bool(query.live),
            if_none_match=request.headers.get("if-none-match"),
            now=time.time(),
            jitter=random.randint(*responses.JITTER_SECS),
        )
        if not responses.has_body(reply.status, request.method):
            await respond(request, send, reply)
            return
        body = SnapshotBody(read.entities, read.offset, self.pins)
        del read  # the body holds the entities, and drops them once sent
        try:
            await respond(request, send, reply, body, self.piece)
        finally:
            body.release()

    async def _snapshot_sse(
        self, request: Request, name: str, query: ReadQuery, send: Sender
    ) -> None:
        """The snapshot as one SSE event, then live from its offset. A compaction past that
        offset between taking it and following from there leaves nothing to follow: it is
        taken again, once (to pass the new offset too, another compaction would need the
        stream to grow by its Stream-State-Compaction size again within one round trip)."""
        for last in (False, True):
            read = await self.streams.state_snapshot(name, query.types)
            body = SnapshotBody(read.entities, read.offset, self.pins)
            del read
            live = attrs.evolve(query, start=body.offset)
            try:
                prelude = functools.partial(body.send_sse, self.sse_piece)
                await self._sse(request, name, live, send, prelude)
                return
            except ProtocolError as error:
                if last or error.code != "STREAM_COMPACTED" or send.started:
                    raise
            finally:
                body.release()
