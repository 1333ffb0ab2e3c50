"""Sending responses without letting a client that stopped reading hold a task and memory.

hypercorn writes to the socket inside a shielded cancel scope, so cancelling an app's `send`
does not end a write to a client whose receive window stays closed: the app's task waits
until the client reads again, which may be never (checked with hypercorn 0.18's trio
worker). The only way to end such a write is to shut the socket down, which makes the
pending write fail; hypercorn then reports `http.disconnect` and closes the connection.

One task for the whole server looks at the sends in flight once in a while, instead of a
timer per send: a send costs a clock read and a set update, which matters on the SSE
fan-out path (a cancel scope per wait there once cost ~7% of the CPU).
"""

from __future__ import annotations

import contextlib
import logging
import math
import socket
import struct
from collections.abc import Awaitable, Callable
from typing import Any

import trio

Send = Callable[[dict[str, Any]], Awaitable[None]]

logger = logging.getLogger(__name__)

MAX_SWEEP_INTERVAL = 1.0  # how late, at most, a stalled send is noticed past its timeout


class ClientGone(Exception):
    """The client disconnected, or stopped reading and was disconnected."""


class SendWatch:
    """Aborts connections whose send made no progress for `timeout` seconds, or that are still
    sending past their response's `close_at` (SSE's reconnect interval)."""

    def __init__(self, timeout: float) -> None:
        self.timeout = timeout
        self.sending: set[Sender] = set()

    def sender(self, send: Send, scope: dict[str, Any]) -> Sender:
        return Sender(self, send, scope)

    async def run(self) -> None:
        interval = min(MAX_SWEEP_INTERVAL, self.timeout / 4)
        while True:
            await trio.sleep(interval)
            self.sweep(trio.current_time())

    def sweep(self, now: float) -> None:
        stalled = [sender for sender in self.sending if sender.stalled(now)]
        for sender in stalled:
            sender.abort()
        if stalled:  # one line per sweep, however many: a flood of stalled clients is one
            logger.info("closed %d connection(s) whose response stopped moving", len(stalled))


class Sender:
    """The ASGI `send` of one response, watched: while a send is in flight it is registered
    with the watch, which aborts the connection if it stalls."""

    __slots__ = (
        "_send", "_watch", "aborted", "broken", "cancel_scope", "close_at", "in_flight",
        "last_sent", "sent", "since", "socket", "started", "status",
    )  # fmt: skip

    def __init__(self, watch: SendWatch, send: Send, scope: dict[str, Any]) -> None:
        self._watch = watch
        self._send = send
        self.socket = _socket(send, scope)  # reset on abort, which ends a stalled send
        # Without a socket to reset (HTTP/2, tests), an abort cancels the response instead.
        self.cancel_scope: trio.CancelScope | None = None
        self.close_at = math.inf
        self.last_sent = -math.inf  # when the latest send began
        self.since = 0.0  # when the sends now in flight last made progress
        self.in_flight = 0
        self.started = False
        self.status = 0  # the response's, once started (for /metrics and the access log)
        self.sent = 0  # body bytes handed to the server
        self.broken = False  # a send was interrupted: the response cannot go on
        self.aborted = False

    async def __call__(self, event: dict[str, Any]) -> None:
        if self.aborted:
            raise ClientGone
        if self.started:
            self.sent += len(event.get("body", b""))
        else:
            self.started = True
            self.status = event["status"]
        now = self.last_sent = trio.current_time()
        if not self.in_flight:
            self.since = now
            self._watch.sending.add(self)
        self.in_flight += 1
        try:
            await self._send(event)
        except BaseException:
            self.broken = True
            raise
        finally:
            self.in_flight -= 1
            if self.in_flight:
                self.since = trio.current_time()  # one of several finished: progress
            else:
                self._watch.sending.discard(self)
        if self.aborted:  # hypercorn returns normally from a write it could not finish
            raise ClientGone

    def stalled(self, now: float) -> bool:
        return bool(self.in_flight) and (
            now - self.since >= self._watch.timeout or now >= self.close_at
        )

    def abort(self) -> None:
        """Close the connection under the stalled send: reset, so the kernel drops what the
        client never read instead of trying to deliver it."""
        self.aborted = self.broken = True
        self._watch.sending.discard(self)
        if self.socket is not None:  # the send returns, and hypercorn closes the connection
            with contextlib.suppress(OSError):
                linger = struct.pack("ii", 1, 0)
                self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
                self.socket.shutdown(socket.SHUT_RDWR)
        if self.cancel_scope is not None:
            self.cancel_scope.cancel()


def _socket(send: Send, scope: dict[str, Any]) -> Any:
    """The socket under an HTTP/1 response's `send` in hypercorn's trio worker, or None
    (another server, or HTTP/2, whose connection carries other requests too).

    ASGI offers no way to reach the transport; hypercorn's `send` is a bound method of its
    HTTPStream, whose `send` is its H11Protocol's, whose `send` is its TCPServer's.
    """
    if scope.get("http_version") not in ("1.0", "1.1"):
        return None
    stream = getattr(send, "__self__", None)
    protocol = getattr(getattr(stream, "send", None), "__self__", None)
    server = getattr(getattr(protocol, "send", None), "__self__", None)
    transport = getattr(server, "stream", None)
    return transport.socket if isinstance(transport, trio.SocketStream) else None
