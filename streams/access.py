"""Request ids and the access log: one line per request, as it ends (docs/operations.md).

A line is written by the `streams.access` logger, formatted by its handler (`configure`):
text, or one JSON object per line. What a client sent reaches it escaped, so it cannot
forge lines, and tokens never do: no header is logged, and `token`-like query parameters
are redacted.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
from typing import Any, TextIO

logger = logging.getLogger("streams.access")

REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
REQUEST_ID_HEADER = b"x-request-id"
# Bytes of a path or query that are escaped as \xNN: controls, space, non-ASCII, quote and
# backslash. Paths come percent-encoded from clients, so this rarely matches.
UNSAFE = re.compile(rb'[^\x21-\x7e]|["\\]')
SECRET = re.compile(rb"(?i)((?:^|&)[^=&]*token=)[^&]*")  # ?token=, ?access_token=, ...
TEXT = '%s "%s %s" %d %d %.1fms %s %s'
FIELDS = ("client", "method", "target", "status", "bytes", "duration_ms", "op", "request_id")


def request_id(sent: str | None) -> str:
    """The client's `X-Request-Id` if it is a plausible id, else a new one (128 random bits
    in hex, as a uuid4's: 0.4 µs, not uuid4's 2). The header is echoed and logged, so it is
    held to printable ASCII of bounded length."""
    if sent is not None and REQUEST_ID.fullmatch(sent):
        return sent
    return os.urandom(16).hex()


def _escape(match: re.Match[bytes]) -> bytes:
    return b"\\x%02x" % match[0][0]


def target(scope: dict[str, Any]) -> str:
    """The request's path and query as sent, escaped, with token values redacted."""
    raw = scope.get("raw_path") or scope["path"].encode("utf-8", "surrogateescape")
    query: bytes = scope.get("query_string", b"")
    if query:
        if b"token" in query.lower():
            query = SECRET.sub(rb"\1[redacted]", query)
        raw = raw + b"?" + query
    return UNSAFE.sub(_escape, raw).decode("ascii")


def client(scope: dict[str, Any]) -> str:
    peer = scope.get("client")
    return str(peer[0]) if peer else "-"


class AccessLog:
    """Writes one line per request, if enabled."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled

    def log(
        self, scope: dict[str, Any], status: int, sent: int, began: float, op: str, rid: str
    ) -> None:
        """`began` is the request's `time.perf_counter()` at arrival."""
        if not self.enabled or not logger.isEnabledFor(logging.INFO):
            return
        duration = (time.perf_counter() - began) * 1000
        method = UNSAFE.sub(_escape, scope["method"].encode()).decode("ascii")
        fields = (client(scope), method, target(scope), status, sent, duration, op, rid)
        # As `logger.info` does, without its search of the stack for the caller (~5 µs).
        logger.handle(logger.makeRecord(logger.name, logging.INFO, __file__, 0, TEXT, fields, None))


class TextFormatter(logging.Formatter):
    """An access line after its time, in UTC (ISO 8601, to the millisecond)."""

    def __init__(self) -> None:
        super().__init__()
        self._second = -1
        self._prefix = ""

    def timestamp(self, created: float) -> str:
        second = int(created)
        if second != self._second:  # formatted once a second: strftime costs ~2 µs
            self._second = second
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._prefix}.{int((created - second) * 1000):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        return f"{self.timestamp(record.created)} {record.getMessage()}"


class JSONFormatter(TextFormatter):
    """An access line as one JSON object: its time, and the fields of the text line, named."""

    def format(self, record: logging.LogRecord) -> str:
        assert isinstance(record.args, tuple), "an access line's fields"
        fields = dict(zip(FIELDS, record.args, strict=True))
        duration = fields["duration_ms"]
        assert isinstance(duration, float)
        fields["duration_ms"] = round(duration, 3)
        return json.dumps({"time": self.timestamp(record.created), **fields})


def configure(log_format: str, stream: TextIO | None = None) -> None:
    """The access log's own handler (stderr), in its format, at INFO whatever the level of
    other logs; lines do not also go to the root logger's handlers."""
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JSONFormatter() if log_format == "json" else TextFormatter())
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
