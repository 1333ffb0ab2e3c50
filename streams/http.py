"""The protocol's HTTP surface as a plain ASGI handler: parse, ask the service, answer.

Every decision about the protocol is made by the pure core (`streams.protocol`: what a
request asks, what a response says) and by the actors; this module, `streams.request` and
`streams.reads` only move bytes between ASGI events and those, within the server's bounds.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import trio

from actors.faults import Throttle
from actors.service import Streams
from streams.access import AccessLog
from streams.auth import authenticator
from streams.config import Settings
from streams.examples import Examples, load
from streams.metrics import HTTPMetrics
from streams.protocol import names, responses
from streams.protocol.errors import ProtocolError
from streams.protocol.machine import Reply
from streams.protocol.requests import ReadQuery, parse_append, parse_create, parse_read
from streams.reads import Reads
from streams.request import Receive, Request, Scope, Send, respond, respond_error
from streams.resources import BodyBudget, busy, default_max_connections, fd_limit
from streams.sending import ClientGone, Sender, SendWatch
from streams.shutdown import Shutdown, stopping

if TYPE_CHECKING:
    from streams.subscriptions_http import SubscriptionsHTTP
    from streams.yjs_http import YjsHTTP

__all__ = ["Receive", "Scope", "Send", "StreamsHTTP"]

logger = logging.getLogger(__name__)


class StreamsHTTP:
    """The ASGI handler of `/v1/stream/*`: one call per request, which parses it with the
    pure core, asks the service (`actors.service.Streams`) and writes the answer.

    It also bounds what clients can hold: requests in progress (503 beyond the cap), buffered
    body bytes (`BodyBudget`), and sends that stop moving (`SendWatch`, whose `run` must run);
    and it counts each request (`metrics`) and logs it (`access`) as it ends.
    """

    def __init__(self, streams: Streams, settings: Settings) -> None:
        self.streams = streams
        self.settings = settings
        self.budget = BodyBudget(max(settings.max_buffered_body_bytes, settings.max_append_bytes))
        self.max_requests = settings.max_connections or default_max_connections(fd_limit())
        self.active = 0  # requests being served now
        self._refusals = Throttle()
        self.prefixes = names.prefixes(settings.stream_base_path)
        self.shutdown = Shutdown()  # `stop()`: refuse new requests, end live reads
        self.reads = Reads(streams, settings, self.shutdown)
        self.sends = SendWatch(settings.send_timeout)  # its `run` must be running
        self.metrics = HTTPMetrics()
        self.access = AccessLog(settings.access_log)
        self.auth = authenticator(settings)  # None: auth off
        self.yjs: YjsHTTP | None = None  # the Yjs routes, when mounted (streams.yjs_http)
        self.subscriptions: SubscriptionsHTTP | None = None  # streams.subscriptions_http
        self.examples = (
            Examples(load(settings.yjs_base_path, settings.stream_base_path))
            if settings.example_collab
            else None
        )  # the collab example's page (DS_EXAMPLES__COLLAB)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        began = time.perf_counter()
        settings = self.settings
        request = Request(
            scope,
            receive,
            self.budget,
            settings.body_timeout,
            settings.cors_origins,
            self.shutdown,
        )
        sender = self.sends.sender(send, scope)
        try:
            if self.active >= self.max_requests or self.shutdown.stopping:
                await self._refuse(request, sender)
                return
            self.active += 1
            try:
                if sender.socket is not None:  # hypercorn, HTTP/1: no cancel scope (~4 us)
                    await self._serve(request, sender)
                else:
                    with trio.CancelScope() as sender.cancel_scope:
                        await self._serve(request, sender)
            finally:
                self.active -= 1
                request.release()
        finally:
            operation, status = request.operation, sender.status
            self.metrics.requests[operation, status] += 1
            self.access.log(scope, status, sender.sent, began, operation, request.id)

    async def _serve(self, request: Request, sender: Sender) -> None:
        try:
            await self._route(request, sender)
        except ProtocolError as error:
            if not sender.started:
                await self._respond_error(request, sender, error)
        except ClientGone:
            pass
        except Exception:
            # %r: a path can hold any decoded byte, and a raw newline would forge log lines.
            logger.exception("unexpected error on %r %r", request.method, request.scope.get("path"))
            if not sender.started:
                failure = ProtocolError(500, "Internal Server Error", "unexpected server error")
                await self._respond_error(request, sender, failure)

    async def _respond_error(self, request: Request, send: Sender, error: ProtocolError) -> None:
        self.metrics.errors[error.code or "INTERNAL", error.status] += 1
        await respond_error(request, send, error)

    def stop(self) -> None:
        """The server is shutting down: new requests get 503, long-polls answer 204 at once
        and SSE responses end (`streams.shutdown`)."""
        self.shutdown.stop()

    async def _refuse(self, request: Request, send: Sender) -> None:
        """Over the request cap, or shutting down: 503 at once, and the connection closes to
        free its socket."""
        if self.shutdown.stopping:
            request.abandoned = True
            await self._respond_error(request, send, stopping())
            return
        refused = self._refusals.note()
        if refused is not None:
            logger.warning(
                "%d request(s) refused with 503: the cap of %d requests in progress is reached"
                " (DS_SERVER__MAX_CONNECTIONS)",
                refused,
                self.max_requests,
            )
        request.abandoned = True
        self.metrics.over_request_cap += 1
        await self._respond_error(request, send, busy("too many requests in progress; retry later"))

    async def _route(self, request: Request, send: Sender) -> None:
        scope = request.scope
        path = names.request_path(scope.get("raw_path"), scope["path"])
        if self.subscriptions is not None and self.subscriptions.owns(path):
            await self.subscriptions.route(request, send, path)
            return
        method = request.method
        if self.yjs is not None and self.yjs.owns(path):
            await self.yjs.route(request, send, path)
            return
        if self.examples is not None and self.examples.owns(path):
            request.operation = "example"
            reply = self.examples.answer(method, path, request.headers.get("if-none-match"))
            await respond(request, send, reply)
            return
        name = names.from_path(path, self.settings.max_name_bytes, self.prefixes)
        if self.auth is not None:
            self.auth.admit(request, name)  # 401/403 before any body is read
        if method == "OPTIONS":
            await respond(request, send, responses.preflight())
        elif method == "GET":
            await self._get(request, name, parse_read(request.query()), send)
        elif method == "HEAD":
            await respond(request, send, responses.head_reply(await self.streams.head(name)))
        elif method == "PUT":
            await respond(request, send, await self._put(request, name))
        elif method == "POST":
            await self._post(request, name, send)
        elif method == "DELETE":
            await respond(request, send, await self.streams.delete(name))
        else:
            raise ProtocolError(405, "Method Not Allowed", f"{method} is not supported")

    async def _get(self, request: Request, name: str, query: ReadQuery, send: Sender) -> None:
        request.operation = operation(query)
        live = query.live
        if not live:
            await self.reads.get(request, name, query, send)
            return
        self.metrics.live[live] += 1
        try:
            await self.reads.get(request, name, query, send)
        finally:
            self.metrics.live[live] -= 1

    async def _put(self, request: Request, name: str) -> Reply:
        create = parse_create(request.headers, self.settings.max_name_bytes, self.prefixes)
        body = await request.body(self.settings.max_append_bytes)
        asked = create.request(body, self.settings.max_stream_bytes)
        reply = await self.streams.create(name, asked, create.fork)
        return responses.created(reply, request.url())

    async def _post(self, request: Request, name: str, send: Sender) -> None:
        """An append, answered before the readers it wakes run (writers first)."""
        append = parse_append(request.headers)
        body = await request.body(self.settings.max_append_bytes)
        receipt = self.streams.receipt()
        try:
            asked = append.request(body, self.settings.max_stream_bytes)
            reply = await self.streams.append(name, asked, receipt)
            await respond(request, send, reply)
        finally:
            if receipt is not None:
                receipt.release()


def operation(query: ReadQuery) -> str:
    """What a GET asks, as /metrics and the access log name it."""
    if query.state == "entity":
        return "state-entity"
    if query.state is not None:
        return "state-snapshot"
    if query.live == "sse":
        return "read-sse"
    return "read-live-longpoll" if query.live == "long-poll" else "read"
