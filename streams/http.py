"""The protocol's HTTP surface as a plain ASGI handler: parse, ask the service, answer.

Everything about the protocol lives in the pure modules and the actors; this module only
moves bytes between ASGI events and those.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import parse_qsl

import attrs
import trio

from actors.messages import ReadResult
from actors.service import Fork, Streams
from streams.config import Settings
from streams.pieces import ReadBody
from streams.protocol import caching, names, offsets, sse
from streams.protocol.errors import ProtocolError, bad_request
from streams.protocol.headers import (
    DEFAULT_CONTENT_TYPE,
    is_json,
    is_text,
    is_true,
    parse_expires_at,
    parse_producer,
    parse_sub_offset,
    parse_ttl,
    valid_content_type,
)
from streams.protocol.jsonmode import as_array
from streams.protocol.machine import AppendRequest, CreateRequest, Reply
from streams.protocol.offsets import Sentinel
from streams.protocol.records import StreamConfig
from streams.resources import BodyBudget, Throttle, busy, default_max_connections, fd_limit
from streams.sending import ClientGone, Sender, SendWatch

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

logger = logging.getLogger(__name__)

DISCARD_LIMIT = 64 * 1024  # unread body an early answer drains before keeping the connection
PROTOCOL_HEADERS = (
    "Content-Type, Stream-TTL, Stream-Expires-At, Stream-Closed, Stream-Seq, "
    "Stream-Forked-From, Stream-Fork-Offset, Stream-Fork-Sub-Offset, Producer-Id, "
    "Producer-Epoch, Producer-Seq, If-None-Match, Authorization"
)
EXPOSED_HEADERS = (
    "Stream-Next-Offset, Stream-Cursor, Stream-Up-To-Date, Stream-Closed, Stream-TTL, "
    "Stream-Expires-At, Stream-SSE-Data-Encoding, Producer-Epoch, Producer-Seq, "
    "Producer-Expected-Seq, Producer-Received-Seq, ETag, Location, Content-Type"
)
PREFLIGHT = {
    "Access-Control-Allow-Methods": "GET, HEAD, PUT, POST, DELETE, OPTIONS",
    "Access-Control-Allow-Headers": PROTOCOL_HEADERS,
    "Access-Control-Max-Age": "86400",
}
SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"cross-origin-resource-policy", b"cross-origin"),
]
# Only browsers send Origin and only they need CORS: other clients get smaller responses.
CORS_HEADERS = [
    (b"access-control-allow-origin", b"*"),
    (b"access-control-expose-headers", EXPOSED_HEADERS.encode()),
]


class Request:
    """The parts of an ASGI request the protocol looks at."""

    def __init__(
        self,
        scope: Scope,
        receive: Receive,
        budget: BodyBudget | None = None,
        body_timeout: float = math.inf,
    ) -> None:
        self.scope = scope
        self.receive = receive
        self.method: str = scope["method"]
        self.body_done = False
        self.abandoned = False  # the rest of the body will not be read: close the connection
        self.budget = budget
        self.body_timeout = body_timeout
        self.held = 0  # bytes of `budget` this request holds
        self.headers: dict[str, str] = {}
        for raw_name, raw_value in scope["headers"]:
            key = raw_name.decode("latin-1").lower()
            value = raw_value.decode("latin-1")
            self.headers[key] = f"{self.headers[key]}, {value}" if key in self.headers else value

    def response_headers(self) -> list[tuple[bytes, bytes]]:
        """The headers every response carries: security, and CORS for browsers."""
        if "origin" in self.headers:
            return SECURITY_HEADERS + CORS_HEADERS
        return list(SECURITY_HEADERS)

    def query(self) -> dict[str, list[str]]:
        params: dict[str, list[str]] = {}
        raw = self.scope.get("query_string", b"").decode("latin-1")
        for key, value in parse_qsl(raw, keep_blank_values=True):
            params.setdefault(key, []).append(value)
        return params

    async def body(self, limit: int) -> bytes:
        """The whole body, refused with 413 as soon as it passes `limit`, with 503 if the
        server-wide body budget has no room for it, with 408 if it stops arriving."""
        body = await self._read(limit, keep=True)
        self.body_done = True
        return body

    async def _read(self, limit: int, *, keep: bool) -> bytes:
        declared = self.headers.get("content-length")
        if declared is not None and declared.isdigit():
            if int(declared) > limit:
                raise too_large(limit)
            if keep:
                self._hold(int(declared))
        chunks: list[bytes] = []
        size = 0
        while True:
            event = await self._next_event()
            if event["type"] == "http.disconnect":
                raise ClientGone
            chunk = event.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise too_large(limit)
            if keep:
                self._hold(size)
                chunks.append(chunk)
            if not event.get("more_body", False):
                return b"".join(chunks)

    async def _next_event(self) -> dict[str, Any]:
        with trio.move_on_after(self.body_timeout):
            return await self.receive()
        self.abandoned = True
        raise ProtocolError(
            408,
            "Request Timeout",
            f"no body data arrived for {self.body_timeout:g} s",
            code="BODY_TIMEOUT",
        )

    def _hold(self, size: int) -> None:
        """Hold `size` bytes of the body budget in all (more only when needed)."""
        if self.budget is not None and size > self.held:
            try:
                self.budget.take(size - self.held)
            except ProtocolError:
                self.abandoned = True
                raise
            self.held = size

    def release(self) -> None:
        """The body is no longer needed: give its bytes back to the budget."""
        if self.budget is not None:
            self.budget.give(self.held)
        self.held = 0

    async def finish(self) -> bool:
        """Read and drop what is left of the body (a little at most), so the connection can
        carry the next request; False if too much is left and the connection must close."""
        if self.body_done:
            return True
        if self.abandoned:
            return False
        try:
            await self._read(DISCARD_LIMIT, keep=False)
        except ProtocolError:
            return False
        self.body_done = True
        return True


def too_large(limit: int) -> ProtocolError:
    return ProtocolError(413, "Payload Too Large", f"body exceeds {limit} bytes")


def _header_list(headers: Mapping[str, str]) -> list[tuple[bytes, bytes]]:
    """Values go out as latin-1, as request headers came in: an echoed byte stays one byte."""
    return [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]


class StreamsHTTP:
    def __init__(self, streams: Streams, settings: Settings) -> None:
        self.streams = streams
        self.settings = settings
        self.budget = BodyBudget(max(settings.max_buffered_body_bytes, settings.max_append_bytes))
        self.max_requests = settings.max_connections or default_max_connections(fd_limit())
        self.active = 0  # requests being served now
        self._refusals = Throttle()
        self.piece = settings.read_piece_bytes
        # SSE reads half pieces, a multiple of 3 bytes: base64 grows them by a third, and each
        # encodes on its own. (200 stalled binary SSE readers: 32 MB, 46 MB with 3/4 pieces.)
        self.sse_piece = max(3, self.piece // 2 // 3 * 3)
        self.sends = SendWatch(settings.send_timeout)  # its `run` must be running

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive, self.budget, self.settings.body_timeout)
        sender = self.sends.sender(send, scope)
        if self.active >= self.max_requests:
            await self._refuse(request, sender)
            return
        self.active += 1
        try:
            if sender.socket is not None:  # hypercorn, HTTP/1: no cancel scope (~4 us) needed
                await self._serve(request, sender)
            else:
                with trio.CancelScope() as sender.cancel_scope:
                    await self._serve(request, sender)
        finally:
            self.active -= 1
            request.release()

    async def _serve(self, request: Request, sender: Sender) -> None:
        try:
            await self._route(request, sender)
        except ProtocolError as error:
            if not sender.started:
                await self._error(request, sender, error)
        except ClientGone:
            pass
        except Exception:
            # %r: a path can hold any decoded byte, and a raw newline would forge log lines.
            logger.exception("unexpected error on %r %r", request.method, request.scope.get("path"))
            if not sender.started:
                failure = ProtocolError(500, "Internal Server Error", "unexpected server error")
                await self._error(request, sender, failure)

    async def _refuse(self, request: Request, send: Sender) -> None:
        """Over the request cap: 503 at once, and the connection closes to free its socket."""
        refused = self._refusals.note()
        if refused is not None:
            logger.warning(
                "%d request(s) refused with 503: the cap of %d requests in progress is reached"
                " (DS_SERVER__MAX_CONNECTIONS)",
                refused,
                self.max_requests,
            )
        request.abandoned = True
        await self._error(request, send, busy("too many requests in progress; retry later"))

    async def _route(self, request: Request, send: Sender) -> None:
        scope = request.scope
        path = names.request_path(scope.get("raw_path"), scope["path"])
        name = names.from_path(path, self.settings.max_name_bytes)
        method = request.method
        if method == "OPTIONS":
            await self._respond(request, send, Reply(204, dict(PREFLIGHT)))
        elif method == "GET":
            await self._get(request, name, send)
        elif method == "HEAD":
            reply = await self.streams.head(name)
            reply.headers["Cache-Control"] = caching.NO_STORE
            await self._respond(request, send, reply)
        elif method == "PUT":
            await self._respond(request, send, await self._put(request, name))
        elif method == "POST":
            await self._respond(request, send, await self._post(request, name))
        elif method == "DELETE":
            await self._respond(request, send, await self.streams.delete(name))
        else:
            raise ProtocolError(405, "Method Not Allowed", f"{method} is not supported")

    # ---- writes -------------------------------------------------------------------------

    async def _put(self, request: Request, name: str) -> Reply:
        h = request.headers
        ttl = parse_ttl(h["stream-ttl"]) if "stream-ttl" in h else None
        expires_at = parse_expires_at(h["stream-expires-at"]) if "stream-expires-at" in h else None
        if ttl is not None and expires_at is not None:
            raise bad_request("use Stream-TTL or Stream-Expires-At, not both")
        fork = self._fork(h)
        content_type = h.get("content-type")
        if content_type is not None and not valid_content_type(content_type):
            raise bad_request(f"invalid Content-Type {content_type!r}")
        if content_type is None and fork is None:
            content_type = DEFAULT_CONTENT_TYPE
        body = await request.body(self.settings.max_append_bytes)
        create = CreateRequest(
            StreamConfig(content_type or "", ttl, expires_at), is_true(h.get("stream-closed")), body
        )
        reply = await self.streams.create(name, create, fork)
        if reply.status == 201:
            reply.headers["Location"] = self._url(request)
        return reply

    def _fork(self, h: Mapping[str, str]) -> Fork | None:
        source = h.get("stream-forked-from")
        if source is None:
            if "stream-fork-offset" in h or "stream-fork-sub-offset" in h:
                raise bad_request("fork headers need Stream-Forked-From")
            return None
        source_name = names.from_fork_header(source, self.settings.max_name_bytes)
        offset = offsets.decode(h["stream-fork-offset"]) if "stream-fork-offset" in h else None
        sub = h.get("stream-fork-sub-offset")
        return Fork(source_name, offset, parse_sub_offset(sub) if sub else 0)

    def _url(self, request: Request) -> str:
        scope = request.scope
        host = request.headers.get("host")
        if host is None:
            server = scope.get("server") or ("localhost", 80)
            host = f"{server[0]}:{server[1]}"
        path = scope.get("raw_path") or scope["path"].encode()
        return f"{scope.get('scheme', 'http')}://{host}{path.decode('latin-1')}"

    async def _post(self, request: Request, name: str) -> Reply:
        h = request.headers
        producer = parse_producer(h)
        body = await request.body(self.settings.max_append_bytes)
        close = is_true(h.get("stream-closed"))
        if not body and not close:
            raise bad_request("an append needs a body (or Stream-Closed: true)")
        content_type = h.get("content-type")
        if body and content_type is None:
            raise bad_request("Content-Type is required")
        if body and content_type is not None and not valid_content_type(content_type):
            raise bad_request(f"invalid Content-Type {content_type!r}")
        append = AppendRequest(content_type, body, close, producer, h.get("stream-seq"))
        return await self.streams.append(name, append)

    # ---- reads --------------------------------------------------------------------------

    async def _get(self, request: Request, name: str, send: Sender) -> None:
        query = request.query()
        offset_values = query.get("offset")
        if offset_values is not None and (len(offset_values) != 1 or not offset_values[0]):
            raise bad_request("give exactly one non-empty offset", code="INVALID_OFFSET")
        live = query.get("live", [""])[-1]
        if live not in ("", "long-poll", "sse"):
            raise bad_request(f"unknown live mode {live!r}")
        if live and offset_values is None:
            raise bad_request("live reads need an offset")
        start = offsets.parse(offset_values[0]) if offset_values else Sentinel.START
        cursor = query.get("cursor", [None])[-1]
        if live == "sse":
            await self._sse(request, name, start, cursor, send)
            return
        result = await self._read(name, start, self.piece)
        if live == "long-poll" and not result.data:
            result = await self._wait(name, result, self.settings.long_poll_timeout)
            if not result.data:
                await self._respond(request, send, Reply(204, self._live_headers(result, cursor)))
                return
        reply = self._read_reply(request, result, start, cursor, bool(live))
        json = is_json(result.snapshot.config.content_type)
        body = None if reply.status == 304 else ReadBody(self.streams, name, result, json=json)
        del result  # the body holds the first piece, and drops it once sent
        await self._respond(request, send, reply, body)

    async def _read(self, name: str, start: int | Sentinel, piece: int) -> ReadResult:
        """A read's extent, at record boundaries, with its first piece of data."""
        return await self.streams.read(name, start, self.settings.read_chunk_bytes, fetch=piece)

    @staticmethod
    def _at_eof(result: ReadResult) -> bool:
        return result.snapshot.closed and result.end == result.snapshot.tail

    async def _wait(self, name: str, result: ReadResult, timeout: float) -> ReadResult:
        """Wait until data arrives at `result.end` or the stream closes, up to `timeout`."""
        with trio.move_on_after(timeout):
            while not result.data and not self._at_eof(result):
                await result.snapshot.changed.wait()
                result = await self._read_after_change(name, result, self.piece)
        return result

    async def _read_after_change(self, name: str, result: ReadResult, piece: int) -> ReadResult:
        """The read that follows `result` once its stream changed: the change itself when it
        added exactly what comes next (most live readers), else a fresh read."""
        added = result.snapshot.changed.added
        limit = min(self.settings.read_chunk_bytes, piece)
        if added is not None and added.start == result.end and len(added.data) <= limit:
            return added
        return await self._read(name, result.end, piece)

    def _live_headers(self, result: ReadResult, cursor: str | None) -> dict[str, str]:
        headers = {"Stream-Next-Offset": offsets.encode(result.end)}
        if result.end == result.snapshot.tail:
            headers["Stream-Up-To-Date"] = "true"
        if self._at_eof(result):
            headers["Stream-Closed"] = "true"
        else:
            headers["Stream-Cursor"] = caching.cursor(time.time(), cursor, random.randint(1, 3600))
        return headers

    def _read_reply(
        self,
        request: Request,
        result: ReadResult,
        start: int | Sentinel,
        cursor: str | None,
        live: bool,
    ) -> Reply:
        snapshot = result.snapshot
        headers = self._live_headers(result, cursor)
        headers["Content-Type"] = snapshot.config.content_type
        if start is Sentinel.NOW:
            headers["Cache-Control"] = caching.NO_STORE
            return Reply(200, headers)
        tag = caching.etag(snapshot.incarnation, result.start, result.end, self._at_eof(result))
        headers["ETag"] = tag
        if not result.data and not snapshot.closed:
            headers["Cache-Control"] = "no-cache"
        else:
            left = None if snapshot.deadline is None else snapshot.deadline - time.time()
            headers["Cache-Control"] = caching.catch_up_cache_control(left)
        if not live and caching.matches(request.headers.get("if-none-match"), tag):
            return Reply(304, {k: v for k, v in headers.items() if k != "Content-Type"})
        return Reply(200, headers)

    async def _sse(
        self, request: Request, name: str, start: int | Sentinel, cursor: str | None, send: Sender
    ) -> None:
        result = await self._read(name, start, self.sse_piece)
        content_type = result.snapshot.config.content_type
        as_base64 = not is_text(content_type)
        headers = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        if as_base64:
            headers["Stream-SSE-Data-Encoding"] = "base64"
        await request.finish()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": request.response_headers() + _header_list(headers),
            }
        )
        # The watch closes the connection if a send is still stuck past the interval.
        send.close_at = trio.current_time() + self.settings.sse_reconnect_interval
        in_event = False  # a data event is being sent in pieces: nothing may come between

        async def emit(chunk: bytes) -> None:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})

        async def stream_events(cancel: trio.CancelScope) -> None:
            nonlocal result, in_event
            with trio.move_on_after(self.settings.sse_reconnect_interval):
                while True:
                    control = self._control(result, cursor)
                    if result.complete:  # the common case: the whole event in one send
                        event = control
                        if result.data:
                            payload = self._body(content_type, result.data)
                            event = sse.data_event(payload, base64_encoded=as_base64) + control
                        await emit(event)
                    else:
                        body = ReadBody(self.streams, name, result, json=is_json(content_type))
                        result = attrs.evolve(result, data=b"")  # the body holds the piece
                        in_event = True
                        await body.send_sse(self.sse_piece, as_base64, control, emit)
                        in_event = False
                    if self._at_eof(result):
                        break
                    result = await self._next_sse_batch(name, result)
            cancel.cancel()

        async def keep_warm() -> None:
            """A comment after a quiet heartbeat keeps proxies from closing the connection.
            One timer per connection, not a cancel scope around every wait for data: that
            scope was ~7% of the CPU of an SSE fan-out to 1000 readers (py-spy)."""
            heartbeat = min(self.settings.long_poll_timeout, 15.0)
            while True:
                await trio.sleep_until(send.last_sent + heartbeat)
                if trio.current_time() >= send.last_sent + heartbeat:
                    if in_event or send.in_flight:  # never inside an event; never queued
                        await trio.sleep(heartbeat)
                    else:
                        await emit(b": keep-alive\n\n")

        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(stream_events, nursery.cancel_scope)
                nursery.start_soon(keep_warm)
                nursery.start_soon(self._until_disconnect, request, nursery.cancel_scope)
        except* ClientGone:
            pass
        if not send.broken:  # after an interrupted send, only closing the connection is left
            await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _next_sse_batch(self, name: str, result: ReadResult) -> ReadResult:
        """The next read with data or EOF."""
        while True:
            if result.end == result.snapshot.tail:
                await result.snapshot.changed.wait()
            result = await self._read_after_change(name, result, self.sse_piece)
            if result.data or self._at_eof(result):
                return result

    @staticmethod
    def _body(content_type: str, stored: bytes) -> bytes:
        return as_array(stored) if is_json(content_type) else stored

    def _control(self, result: ReadResult, cursor: str | None) -> bytes:
        return sse.control_event(
            offsets.encode(result.end),
            cursor=caching.cursor(time.time(), cursor, random.randint(1, 3600)),
            up_to_date=result.end == result.snapshot.tail,
            closed=self._at_eof(result),
        )

    @staticmethod
    async def _until_disconnect(request: Request, cancel: trio.CancelScope) -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass
        cancel.cancel()

    # ---- responses ----------------------------------------------------------------------

    async def _respond(
        self, request: Request, send: Sender, reply: Reply, body: ReadBody | None = None
    ) -> None:
        headers = request.response_headers() + _header_list(reply.headers)
        if not await request.finish():
            headers.append((b"connection", b"close"))
        if body is not None:
            headers.append((b"content-length", str(body.length).encode()))
            await send({"type": "http.response.start", "status": reply.status, "headers": headers})
            await body.send_http(self.piece, send)
            return
        head = request.method == "HEAD"
        content = b"" if reply.status in (204, 304) or head else reply.body
        if reply.status not in (204, 304):
            headers.append((b"content-length", str(len(content)).encode()))
        await send({"type": "http.response.start", "status": reply.status, "headers": headers})
        await send({"type": "http.response.body", "body": content})

    async def _error(self, request: Request, send: Sender, error: ProtocolError) -> None:
        headers = dict(error.headers)
        body = b""
        if error.body and request.method != "HEAD" and error.status != 304:
            headers["Content-Type"] = "application/problem+json"
            body = error.problem_json()
        await self._respond(request, send, Reply(error.status, headers, body))
