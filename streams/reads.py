"""GET: catch-up reads, and the live ones (long-poll, SSE) built on `Streams.follow`.

What each response says is decided in `streams.protocol.responses` from a `ReadView`; this
module reads, waits and sends. Bodies go out a piece at a time (`streams.pieces`), and the
send watch (`streams.sending`) resets a connection whose sends stall.
"""

from __future__ import annotations

import random
import time
from collections.abc import Awaitable, Callable

import attrs
import trio

from actors.follow import Batch, Follower
from actors.messages import ReadResult
from actors.service import Streams
from streams.config import Settings
from streams.pieces import ReadBody
from streams.protocol import responses, sse
from streams.protocol.errors import ProtocolError, not_found
from streams.protocol.headers import is_json
from streams.protocol.jsonmode import as_array
from streams.protocol.offsets import Sentinel
from streams.protocol.requests import ReadQuery
from streams.request import Request, header_list, respond
from streams.sending import ClientGone, Sender
from streams.shutdown import Shutdown
from streams.state_reads import StateReads


def view(read: ReadResult | Batch) -> responses.ReadView:
    snapshot = read.snapshot
    return responses.ReadView(
        read.start,
        read.end,
        snapshot.tail,
        snapshot.closed,
        snapshot.incarnation,
        snapshot.config.content_type,
        snapshot.deadline,
    )


def jitter() -> int:
    return random.randint(*responses.JITTER_SECS)


class Reads:
    """Answers GET requests of one server's settings."""

    def __init__(
        self, streams: Streams, settings: Settings, shutdown: Shutdown | None = None
    ) -> None:
        self.streams = streams
        self.settings = settings
        self.shutdown = shutdown or Shutdown()  # ends live reads at once when the server stops
        self.piece = settings.read_piece_bytes
        # SSE reads half pieces, a multiple of 3 bytes: base64 grows them by a third, and each
        # encodes on its own. (200 stalled binary SSE readers: 32 MB, 46 MB with 3/4 pieces.)
        self.sse_piece = max(3, self.piece // 2 // 3 * 3)
        self.state = StateReads(streams, settings, self.sse_piece, self.sse)

    async def get(self, request: Request, name: str, query: ReadQuery, send: Sender) -> None:
        if query.state is not None:
            await self.state.get(request, name, query, send)
            return
        try:
            await self._read(request, name, query, send)
        except ProtocolError as error:
            # From the start of a compacted stream only the state is left to read.
            if error.code != "STREAM_COMPACTED" or query.start is not Sentinel.START:
                raise
            if send.started:
                raise
            await self.state.get(request, name, attrs.evolve(query, state="snapshot"), send)

    async def _read(self, request: Request, name: str, query: ReadQuery, send: Sender) -> None:
        if query.live == "sse":
            await self.sse(request, name, query, send)
            return
        read: ReadResult | Batch
        if query.live == "long-poll":
            follower = self._follow(name, query, self.piece)
            read = await anext(follower)
            if not read.data and not read.closed:
                read = await self._wait(follower) or read
            if not read.data:  # the timeout, or the end of a closed stream
                reply = responses.no_data_reply(view(read), query.cursor, time.time(), jitter())
                await respond(request, send, reply)
                return
        else:
            read = await self.streams.read(
                name, query.start, self.settings.read_chunk_bytes, fetch=self.piece
            )
        reply = responses.read_reply(
            view(read),
            query.start,
            query.cursor,
            live=bool(query.live),
            if_none_match=request.headers.get("if-none-match"),
            now=time.time(),
            jitter=jitter(),
        )
        json = is_json(read.snapshot.config.content_type)
        body = None
        if responses.has_body(reply.status, request.method):
            body = ReadBody(self.streams, name, read, json=json)
        del read  # the body holds the first piece, and drops it once sent
        await respond(request, send, reply, body, self.piece)

    def _follow(self, name: str, query: ReadQuery, piece: int) -> Follower:
        limit = self.settings.read_chunk_bytes
        return self.streams.follow(name, query.start, max_bytes=limit, piece=piece)

    async def _wait(self, follower: Follower) -> Batch | None:
        """The next batch (data, or the end of a closed stream) within the long-poll
        timeout (or before the server stops); None if none came. A stream deleted meanwhile is
        answered as such."""
        with trio.move_on_after(self.settings.long_poll_timeout) as wait:
            self.shutdown.hold(wait)
            try:
                return await anext(follower)
            except StopAsyncIteration:
                raise follower.gone or not_found() from None
            finally:
                self.shutdown.release(wait)
        return None

    async def sse(
        self,
        request: Request,
        name: str,
        query: ReadQuery,
        send: Sender,
        prelude: Callable[[Callable[[bytes], Awaitable[None]]], Awaitable[None]] | None = None,
    ) -> None:
        """An SSE response: the stream's batches from the query's start as they come; with
        a `prelude` (a snapshot), its events first."""
        follower = self._follow(name, query, self.sse_piece)
        first = await anext(follower)
        content_type = first.snapshot.config.content_type
        json = is_json(content_type)
        reply, as_base64 = responses.sse_reply(content_type)
        await request.finish()
        headers = request.response_headers() + header_list(reply.headers)
        await send({"type": "http.response.start", "status": reply.status, "headers": headers})
        # The watch closes the connection if a send is still stuck past the interval.
        send.close_at = trio.current_time() + self.settings.sse_reconnect_interval
        in_event = False  # a data event is being sent in pieces: nothing may come between
        batch: Batch | None = first
        del first

        async def emit(chunk: bytes) -> None:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})

        async def send_events(events: trio.CancelScope) -> None:
            nonlocal batch, in_event
            if prelude is not None:
                in_event = True
                await prelude(emit)
                in_event = False
            while batch is not None:
                now = time.time()
                control = responses.sse_control(view(batch), query.cursor, now, jitter())
                closed = batch.closed
                if batch.complete:  # the common case: the whole event in one send
                    event = control
                    if batch.data:
                        payload = as_array(batch.data) if json else batch.data
                        event = sse.data_event(payload, base64_encoded=as_base64) + control
                    batch = None
                    await emit(event)
                else:
                    body = ReadBody(self.streams, name, batch, json=json)
                    batch = None  # the body holds the piece
                    in_event = True
                    await body.send_sse(self.sse_piece, as_base64, control, emit)
                    in_event = False
                if closed or self.shutdown.stopping:
                    break
                self.shutdown.hold(events)  # a stop ends the wait, never an event half sent
                try:
                    batch = await anext(follower, None)  # None: the stream was deleted
                finally:
                    self.shutdown.release(events)
                if events.cancel_called:
                    # The stop (or the interval) came after a commit woke this task and before
                    # it ran: a send in this scope would be cancelled and cut the response off.
                    # The batch is dropped; the client goes on from the last control event.
                    break

        async def stream_events(cancel: trio.CancelScope) -> None:
            # The response ends at the reconnect interval, or as soon as the server stops.
            with trio.move_on_after(self.settings.sse_reconnect_interval) as events:
                await send_events(events)
            cancel.cancel()

        async def keep_warm() -> None:
            """A comment after a quiet heartbeat keeps proxies from closing the connection.
            One timer per connection, not a cancel scope around every wait for data: that
            scope was ~7% of the CPU of an SSE fan-out to 1000 readers (py-spy)."""
            heartbeat = sse.heartbeat(self.settings.long_poll_timeout)
            while True:
                await trio.sleep_until(send.last_sent + heartbeat)
                if trio.current_time() >= send.last_sent + heartbeat:
                    if in_event or send.in_flight:  # never inside an event; never queued
                        await trio.sleep(heartbeat)
                    else:
                        await emit(sse.KEEP_ALIVE)

        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(stream_events, nursery.cancel_scope)
                nursery.start_soon(keep_warm)
                nursery.start_soon(request.until_disconnect, nursery.cancel_scope)
        except* ClientGone:
            pass
        if not send.broken:  # after an interrupted send, only closing the connection is left
            await send({"type": "http.response.body", "body": b"", "more_body": False})
