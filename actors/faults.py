"""What callers hear when a stream's actor fails, by cause: a damaged log names the repair, a
full disk or running out of file descriptors is worth retrying, a read-only data directory
is named as the cause."""

from __future__ import annotations

import errno
import math
import os
from collections.abc import Callable

import trio

from actors.storage import CorruptLog, Superseded, Unavailable, framing
from actors.storage.file_io import WRITE_REFUSED
from streams.protocol.errors import ProtocolError

FSCK = "python -m streams fsck DATA_DIR --repair"
EXHAUSTED_ERRNOS = (errno.EMFILE, errno.ENFILE)
EXHAUSTED_RETRY_AFTER = "5"  # seconds; descriptors come back as streams go idle
LOG_INTERVAL = 10.0  # seconds between two log lines about one condition every request hits


def exhausted(error: BaseException | None) -> bool:
    """Whether `error` means the process or the system ran out of file descriptors."""
    return isinstance(error, OSError) and error.errno in EXHAUSTED_ERRNOS


def out_of_descriptors() -> ProtocolError:
    return ProtocolError(
        503,
        "Service Unavailable",
        "the server is out of file descriptors; nothing was changed",
        {"Retry-After": EXHAUSTED_RETRY_AFTER},
        code="RESOURCE_EXHAUSTED",
    )


def too_large(error: framing.FrameTooLarge) -> ProtocolError:
    return ProtocolError(413, "Payload Too Large", str(error), code="RECORD_TOO_LARGE")


def actor_failed(name: str, cause: BaseException | None = None) -> ProtocolError:
    """What callers hear when a stream's actor fails: a full disk, or running out of file
    descriptors, is worth retrying later, and a read-only data directory is named as the
    cause."""
    if exhausted(cause):
        return out_of_descriptors()
    if isinstance(cause, Superseded):
        return ProtocolError(
            503,
            "Service Unavailable",
            f"stream {name!r} was changed by another server process meanwhile; nothing was"
            " changed here, retry",
            {"Retry-After": "1"},
            code="CONCURRENT_CHANGE",
        )
    if isinstance(cause, Unavailable):
        return ProtocolError(
            503,
            "Service Unavailable",
            f"{cause}; retry: whether a write cut off by this took effect is unknown, and a"
            " producer's retry (same Producer-Id, Epoch and Seq) is applied once either way",
            {"Retry-After": "1"},
            code="STORAGE_UNAVAILABLE",
        )
    if isinstance(cause, CorruptLog):
        return ProtocolError(
            500,
            "Internal Server Error",
            f"the log of stream {name!r} is damaged ({cause}); nothing was changed. "
            f"An operator can cut it back to its last good record with `{FSCK}`",
            code="LOG_DAMAGED",
        )
    if isinstance(cause, OSError) and cause.errno in (errno.ENOSPC, errno.EDQUOT):
        return ProtocolError(
            503,
            "Service Unavailable",
            "no space left for this write; nothing was stored",
            {"Retry-After": "5"},
            code="STORAGE_FULL",
        )
    if isinstance(cause, OSError) and cause.errno in WRITE_REFUSED:
        return ProtocolError(
            503,
            "Service Unavailable",
            f"the data directory refuses writes ({os.strerror(cause.errno)}); nothing was stored",
            code="STORAGE_READ_ONLY",
        )
    return ProtocolError(500, "Internal Server Error", f"stream {name!r} failed; it restarts")


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
