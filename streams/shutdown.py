"""The server is stopping (SIGTERM under `streams serve`): new protocol requests are refused,
and live reads end at once, as at their own timeouts (a long-poll answers 204, an SSE response
completes), so that none holds the shutdown up to its grace period."""

from __future__ import annotations

import trio

from streams.protocol.errors import ProtocolError

RETRY_AFTER = "1"  # the restarted server, or another behind the same proxy, will answer


def stopping() -> ProtocolError:
    return ProtocolError(
        503,
        "Service Unavailable",
        "the server is shutting down; retry",
        {"Retry-After": RETRY_AFTER},
        code="SHUTTING_DOWN",
    )


class Shutdown:
    """Live reads hold their waits' cancel scopes here while they wait; `stop` cancels them
    all, and any held from then on at once."""

    def __init__(self) -> None:
        self.stopping = False
        self._waits: set[trio.CancelScope] = set()

    def hold(self, scope: trio.CancelScope) -> None:
        if self.stopping:
            scope.cancel()
        self._waits.add(scope)

    def release(self, scope: trio.CancelScope) -> None:
        self._waits.discard(scope)

    def stop(self) -> None:
        self.stopping = True
        for scope in self._waits:
            scope.cancel()

    @property
    def waiting(self) -> int:
        return len(self._waits)
