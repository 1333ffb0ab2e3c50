"""Read bodies sent in pieces of a bounded size, so no reader holds a large record whole.

A read's extent is decided first, at record boundaries (`ReadResult.end`, which the
offsets a server mints must be), with its first piece of data; the rest is fetched from
the actors by position, one piece per call, each sent before the next is fetched.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from actors.follow import Batch
from actors.messages import ReadResult
from actors.service import Streams
from streams.protocol import sse
from streams.protocol.errors import not_found
from streams.protocol.jsonmode import as_array, body_length, json_piece
from streams.sending import Send


class ReadBody:
    """The body of one read: its first piece in hand, the others fetched as they are sent.
    It keeps no reference to the read's result, so a caller that drops its own holds no
    piece but the one being sent."""

    def __init__(
        self, streams: Streams, name: str, result: ReadResult | Batch, *, json: bool
    ) -> None:
        self.streams = streams
        self.name = name
        self.start, self.end = result.start, result.end
        self.incarnation = result.snapshot.incarnation
        self.json = json
        self._data = result.data

    @property
    def length(self) -> int:
        return body_length(self.end - self.start, json=self.json)

    @property
    def complete(self) -> bool:
        """All its data came with the read."""
        return self.start + len(self._data) == self.end

    def whole(self) -> bytes:
        data, self._data = self._data, b""
        return as_array(data) if self.json else data

    async def send_http(self, piece_bytes: int, send: Send) -> None:
        """The body of an HTTP response: in one send when it came whole (small: the common
        case), else a piece per send."""
        if self.complete:
            await send({"type": "http.response.body", "body": self.whole()})
            return

        def encode(piece: bytes, last: bool) -> bytes:
            return piece

        async def send_piece(piece: bytes, last: bool) -> None:
            await send({"type": "http.response.body", "body": piece, "more_body": not last})

        await self.send(piece_bytes, encode, send_piece)

    async def send_sse(
        self,
        piece_bytes: int,
        as_base64: bool,
        control: bytes,
        emit: Callable[[bytes], Awaitable[None]],
    ) -> None:
        """A data event too large for one piece, encoded and sent a piece at a time; the
        control event that follows it goes with the last piece."""
        event = sse.DataEvent(base64_encoded=as_base64)

        def encode(piece: bytes, last: bool) -> bytes:
            out = event.feed(piece)
            return out + event.end() + control if last else out

        async def send_piece(out: bytes, last: bool) -> None:
            await emit(out)

        await self.send(piece_bytes, encode, send_piece)

    async def send(
        self,
        piece_bytes: int,
        encode: Callable[[bytes, bool], bytes],
        send: Callable[[bytes, bool], Awaitable[None]],
    ) -> None:
        """Send each piece as `send(encode(piece, last), last)`, fetching the next piece only
        after the previous one is sent."""
        data, self._data = self._data, b""
        position = self.start + len(data)
        at_start = True
        while True:
            last = position == self.end
            if self.json:
                data = json_piece(data, first=at_start, last=last)
            out = encode(data, last)
            data = b""
            await send(out, last)
            out = b""
            if last:
                return
            data = await self._fetch(position, piece_bytes)
            position += len(data)
            at_start = False

    async def _fetch(self, position: int, piece_bytes: int) -> bytes:
        bound = min(self.end, position + piece_bytes)
        piece = await self.streams.read(
            self.name,
            position,
            piece_bytes,
            bound=bound,
            internal=True,
            fetch=piece_bytes,
            exact=True,  # inside the read's first record, maybe
        )
        if piece.snapshot.incarnation != self.incarnation or len(piece.data) != bound - position:
            # deleted and created again since the read began: these bytes are not its own
            raise not_found("the stream was replaced during the read")
        return piece.data
