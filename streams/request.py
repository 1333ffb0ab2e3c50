"""One ASGI request as the protocol sees it: its headers and query, its body read within
bounds (size, the server-wide body budget, time), and the writing of its response."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

import trio

from streams.access import REQUEST_ID_HEADER, request_id
from streams.protocol import responses
from streams.protocol.errors import ProtocolError
from streams.protocol.machine import Reply
from streams.protocol.requests import parse_query, too_large
from streams.resources import BodyBudget
from streams.sending import ClientGone, Sender
from streams.shutdown import Shutdown

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

DISCARD_LIMIT = 64 * 1024  # unread body an early answer drains before keeping the connection
# What a request asks, as /metrics and the access log name it (GET is refined when routed).
OPERATIONS = {
    "PUT": "create", "POST": "append", "GET": "read", "HEAD": "head", "DELETE": "delete",
    "OPTIONS": "options",
}  # fmt: skip


class Request:
    """The parts of an ASGI request the protocol looks at."""

    def __init__(
        self,
        scope: Scope,
        receive: Receive,
        budget: BodyBudget | None = None,
        body_timeout: float = math.inf,
        cors_origins: tuple[str, ...] = ("*",),
        shutdown: Shutdown | None = None,
    ) -> None:
        self.scope = scope
        self.receive = receive
        self.method: str = scope["method"]
        self.body_done = False
        self.abandoned = False  # the rest of the body will not be read: close the connection
        self.budget = budget
        self.body_timeout = body_timeout
        self.held = 0  # bytes of `budget` this request holds
        self.private = False  # auth is on: its responses are not for shared caches
        self.cors_origins = cors_origins
        self.shutdown = shutdown
        self.headers: dict[str, str] = {}
        for raw_name, raw_value in scope["headers"]:
            key = raw_name.decode("latin-1").lower()
            value = raw_value.decode("latin-1")
            self.headers[key] = f"{self.headers[key]}, {value}" if key in self.headers else value
        self.id = request_id(self.headers.get("x-request-id"))
        self.operation = OPERATIONS.get(self.method, "other")

    def response_headers(self) -> list[tuple[bytes, bytes]]:
        """The headers every response carries: security, CORS for browsers, the request id."""
        headers = responses.common_headers(self.headers.get("origin"), self.cors_origins)
        return [*headers, (REQUEST_ID_HEADER, self.id.encode())]

    @property
    def closing(self) -> bool:
        """The server is shutting down: the connection carries no further request."""
        return self.shutdown is not None and self.shutdown.stopping

    def query(self) -> dict[str, list[str]]:
        return parse_query(self.scope.get("query_string", b""))

    def url(self) -> str:
        """The URL the request addressed (a created stream's Location)."""
        scope = self.scope
        path = scope.get("raw_path") or scope["path"].encode()
        host, server = self.headers.get("host"), scope.get("server")
        return responses.location(scope.get("scheme", "http"), host, server, path.decode("latin-1"))

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

    async def until_disconnect(self, cancel: trio.CancelScope) -> None:
        """Cancel `cancel` once the client disconnects (a live response's other half)."""
        while (await self.receive())["type"] != "http.disconnect":
            pass
        cancel.cancel()


def header_list(headers: Mapping[str, str]) -> list[tuple[bytes, bytes]]:
    """Values go out as latin-1, as request headers came in: an echoed byte stays one byte."""
    return [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]


class Body(Protocol):
    """A response body sent in pieces: a read's, or a state snapshot's."""

    @property
    def length(self) -> int: ...

    async def send_http(self, piece_bytes: int, send: Send) -> None: ...


async def respond(
    request: Request, send: Sender, reply: Reply, body: Body | None = None, piece: int = 0
) -> None:
    """Send `reply`, or with `body` a read's status and headers and then its body, a piece
    (of `piece` bytes) at a time."""
    if request.private:
        reply = responses.private(reply)
    headers = request.response_headers() + header_list(reply.headers)
    if not await request.finish() or request.closing:
        headers.append((b"connection", b"close"))
    if body is not None:
        headers.append((b"content-length", str(body.length).encode()))
        await send({"type": "http.response.start", "status": reply.status, "headers": headers})
        await body.send_http(piece, send)
        return
    content, length = responses.content(reply, request.method)
    if length is not None:
        headers.append((b"content-length", str(length).encode()))
    await send({"type": "http.response.start", "status": reply.status, "headers": headers})
    await send({"type": "http.response.body", "body": content})


async def respond_error(request: Request, send: Sender, error: ProtocolError) -> None:
    await respond(request, send, responses.error_reply(error, request.method))
