"""The body of a State Protocol snapshot (docs/state.md), for HTTP or as an SSE event.

A snapshot's entities come from the actor as a list of immutable objects: the body is
encoded from them a piece at a time as it is sent, and a commit meanwhile replaces entities
in the view without touching the list, so the body is one offset's state, never two.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from actors.messages import StateRead
from state import snapshot
from state.view import Entity
from streams.protocol import offsets, sse
from streams.protocol.responses import ReadView
from streams.sending import Send

Emit = Callable[[bytes], Awaitable[None]]


class SnapshotBody:
    """A snapshot's JSON array, encoded a piece at a time as it is sent."""

    def __init__(self, entities: list[Entity], offset: int) -> None:
        self._entities = entities
        self.offset = offset
        self._offset = offsets.encode(offset)
        self.length = snapshot.body_length(entities, self._offset)

    async def send_http(self, piece_bytes: int, send: Send) -> None:
        pending = None
        for piece in snapshot.pieces(self._entities, self._offset, piece_bytes):
            if pending is not None:
                await send({"type": "http.response.body", "body": pending, "more_body": True})
            pending = piece
        await send({"type": "http.response.body", "body": pending or b""})

    async def send_sse(self, piece_bytes: int, emit: Emit) -> None:
        """One data event holding the whole array (its control event follows it)."""
        event = sse.DataEvent(base64_encoded=False)
        for piece in snapshot.pieces(self._entities, self._offset, piece_bytes):
            await emit(event.feed(piece))
        await emit(event.end())


def read_view(read: StateRead) -> ReadView:
    """The snapshot as a read from the start that ended, up to date, at the view's offset."""
    s = read.snapshot
    return ReadView(
        0, read.offset, s.tail, s.closed, s.incarnation, s.config.content_type, s.deadline
    )
