"""Server-wide resource bounds that no single client may exhaust: buffered request bodies,
concurrent requests (file descriptors), and entities held by snapshots being sent. Running
out of descriptors in a stream's actor, and how often that is logged, is `actors.faults`."""

from __future__ import annotations

import resource
from collections.abc import Sequence

from streams.protocol.errors import ProtocolError

FD_RESERVE = 64  # descriptors the process keeps for itself: stdio, lock file, epoll, threads
BUSY_RETRY_AFTER = "1"  # seconds; a busy server frees bodies and requests quickly


def busy(detail: str) -> ProtocolError:
    return ProtocolError(
        503, "Service Unavailable", detail, {"Retry-After": BUSY_RETRY_AFTER}, code="BUSY"
    )


def raise_fd_limit() -> int:
    """Raise RLIMIT_NOFILE's soft limit to the hard limit; returns the soft limit in force.

    The default soft limit (often 1024) is far below what one connection plus one open log
    per live stream needs; the hard limit is what the system grants without privileges."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):  # e.g. macOS refuses an infinite soft limit
            pass
    return soft


def default_max_connections(fd_limit: int) -> int:
    """Half of what the process's own reserve leaves: one descriptor per request's
    connection, and one kept for the log of the stream each request may open."""
    if fd_limit == resource.RLIM_INFINITY:
        fd_limit = 1 << 20
    return max(1, (fd_limit - FD_RESERVE) // 2)


def fd_limit() -> int:
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class BodyBudget:
    """Bytes of request bodies buffered at once, across all requests."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.used = 0
        self.refused = 0  # requests refused (for /metrics)

    def take(self, size: int) -> None:
        """Reserve `size` bytes, or refuse the request with 503 before it is buffered."""
        if self.used + size > self.capacity:
            self.refused += 1
            raise busy("too many request bodies are being received at once; retry later")
        self.used += size

    def give(self, size: int) -> None:
        self.used -= size


class PinBudget:
    """Entities held by State Protocol snapshots being sent, across all requests: a snapshot
    holds a list of its entities (8 bytes each, and entities a commit replaced meanwhile stay
    alive), so readers that stall must not hold one each without bound. Readers of one
    offset share one list (the actor hands out the same), counted once."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.used = 0
        self.refused = 0  # requests refused (for /metrics)
        self._held: dict[int, list[int]] = {}  # id of a list held -> [holders, its length]

    def hold(self, entities: Sequence[object]) -> None:
        """Count `entities` as held until `release`, or refuse the request with 503."""
        held = self._held.get(id(entities))
        if held is not None:
            held[0] += 1
            return
        if self.used + len(entities) > self.capacity:
            self.refused += 1
            raise busy("too many snapshots are being sent at once; retry later")
        self._held[id(entities)] = [1, len(entities)]
        self.used += len(entities)

    def release(self, entities: Sequence[object]) -> None:
        held = self._held[id(entities)]
        held[0] -= 1
        if not held[0]:
            del self._held[id(entities)]
            self.used -= held[1]
