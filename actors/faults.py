"""What callers hear when a stream's actor fails, by cause: a damaged log names the repair, a
full disk or running out of file descriptors is worth retrying, a read-only data directory
is named as the cause."""

from __future__ import annotations

import errno
import os

from actors.storage import CorruptLog, framing
from actors.storage.files import WRITE_REFUSED
from streams.protocol.errors import ProtocolError
from streams.resources import exhausted, out_of_descriptors

FSCK = "python -m streams fsck DATA_DIR --repair"


def too_large(error: framing.FrameTooLarge) -> ProtocolError:
    return ProtocolError(413, "Payload Too Large", str(error), code="RECORD_TOO_LARGE")


def actor_failed(name: str, cause: BaseException | None = None) -> ProtocolError:
    """What callers hear when a stream's actor fails: a full disk, or running out of file
    descriptors, is worth retrying later, and a read-only data directory is named as the
    cause."""
    if exhausted(cause):
        return out_of_descriptors()
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
