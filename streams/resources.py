"""Server-wide resource bounds that no single client may exhaust: buffered request bodies,
concurrent requests (file descriptors), and how often running out of either is logged."""

from __future__ import annotations

import errno
import math
import resource
from collections.abc import Callable

import trio

from streams.protocol.errors import ProtocolError

FD_RESERVE = 64  # descriptors the process keeps for itself: stdio, lock file, epoll, threads
EXHAUSTED_ERRNOS = (errno.EMFILE, errno.ENFILE)
LOG_INTERVAL = 10.0  # seconds between two log lines about one exhausted resource
BUSY_RETRY_AFTER = "1"  # seconds; a busy server frees bodies and requests quickly
EXHAUSTED_RETRY_AFTER = "5"  # seconds; descriptors come back as streams go idle


def busy(detail: str) -> ProtocolError:
    return ProtocolError(
        503, "Service Unavailable", detail, {"Retry-After": BUSY_RETRY_AFTER}, code="BUSY"
    )


def out_of_descriptors() -> ProtocolError:
    return ProtocolError(
        503,
        "Service Unavailable",
        "the server is out of file descriptors; nothing was changed",
        {"Retry-After": EXHAUSTED_RETRY_AFTER},
        code="RESOURCE_EXHAUSTED",
    )


def exhausted(error: BaseException | None) -> bool:
    """Whether `error` means the process or the system ran out of file descriptors."""
    return isinstance(error, OSError) and error.errno in EXHAUSTED_ERRNOS


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

    def take(self, size: int) -> None:
        """Reserve `size` bytes, or refuse the request with 503 before it is buffered."""
        if self.used + size > self.capacity:
            raise busy("too many request bodies are being received at once; retry later")
        self.used += size

    def give(self, size: int) -> None:
        self.used -= size


class Throttle:
    """When to log a condition that every request may hit: at once the first time, then at
    most once per `interval`, with how often it happened since the last line."""

    def __init__(
        self, interval: float = LOG_INTERVAL, clock: Callable[[], float] = trio.current_time
    ) -> None:
        self.interval = interval
        self.clock = clock
        self._next = -math.inf
        self._count = 0

    def note(self) -> int | None:
        """Count one occurrence; the number to log now, or None to stay quiet."""
        self._count += 1
        now = self.clock()
        if now < self._next:
            return None
        self._next = now + self.interval
        count, self._count = self._count, 0
        return count
