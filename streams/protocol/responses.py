"""What a response says: pure, no I/O; the clock and the cursor's jitter are passed in.

Reads: EOF, Stream-Up-To-Date, Stream-Closed, Stream-Cursor, ETag, 304 and Cache-Control, for
catch-up, long-poll (and its 204 at the timeout) and SSE control events, all from a
`ReadView` of what was read. Writes: the Location of a created stream, HEAD's Cache-Control.
Every response: the security and CORS headers, which statuses carry a body, and errors as
problem+json.
"""

from __future__ import annotations

import attrs

from streams.protocol import caching, offsets, sse
from streams.protocol.errors import ProtocolError
from streams.protocol.headers import is_text
from streams.protocol.machine import Reply
from streams.protocol.offsets import Sentinel

JITTER_SECS = (1, 3600)  # the range the cursor's jitter is drawn from (caching.cursor)

PROTOCOL_HEADERS = (
    "Content-Type, Stream-TTL, Stream-Expires-At, Stream-Closed, Stream-Seq, "
    "Stream-Forked-From, Stream-Fork-Offset, Stream-Fork-Sub-Offset, Producer-Id, "
    "Producer-Epoch, Producer-Seq, If-None-Match, Authorization, "
    "Stream-State-Validation, Stream-State-Compaction, X-Request-Id"
)
EXPOSED_HEADERS = (
    "Stream-Next-Offset, Stream-Cursor, Stream-Up-To-Date, Stream-Closed, Stream-TTL, "
    "Stream-Expires-At, Stream-SSE-Data-Encoding, Producer-Epoch, Producer-Seq, "
    "Producer-Expected-Seq, Producer-Received-Seq, ETag, Location, Content-Type, "
    "Stream-State-Validation, Stream-State-Compaction, Stream-State-Base, Stream-State-Skipped, "
    "X-Request-Id"
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
SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}


def common_headers(
    origin: str | None, allowed: tuple[str, ...] = ("*",)
) -> list[tuple[bytes, bytes]]:
    """The headers every response carries: security, and CORS for browsers (which send an
    `Origin`) when `allowed` (`DS_HTTP__CORS_ORIGINS`) holds `*` or their origin. With a list
    of origins, responses vary by `Origin`, so a cache does not hand one origin's to another."""
    if "*" in allowed:
        return SECURITY_HEADERS + CORS_HEADERS if origin is not None else list(SECURITY_HEADERS)
    headers = [*SECURITY_HEADERS, (b"vary", b"Origin")]
    if origin is not None and origin.lower() in allowed:
        headers += [(b"access-control-allow-origin", origin.encode("latin-1")), CORS_HEADERS[1]]
    return headers


def preflight() -> Reply:
    return Reply(204, dict(PREFLIGHT))


def private(reply: Reply) -> Reply:
    """A cacheable reply for its requester only (auth on): a shared cache such as a CDN would
    keep a `public` one and hand it to clients without a token (PROTOCOL section 10)."""
    cache = reply.headers.get("Cache-Control", "")
    if not cache.startswith("public"):
        return reply
    return attrs.evolve(
        reply, headers={**reply.headers, "Cache-Control": "private" + cache[len("public") :]}
    )


def has_body(status: int, method: str) -> bool:
    return status not in (204, 304) and method != "HEAD"


def content(reply: Reply, method: str) -> tuple[bytes, int | None]:
    """The body a reply sends, and its Content-Length (None: 204 and 304 have none; a HEAD
    reply's is its GET's)."""
    body = reply.body if has_body(reply.status, method) else b""
    return body, None if reply.status in (204, 304) else len(reply.body)


def error_reply(error: ProtocolError, method: str) -> Reply:
    """An error as problem+json, or with no body where none may go (HEAD, 304, some 409s)."""
    headers = dict(error.headers)
    if error.body and has_body(error.status, method):
        headers["Content-Type"] = "application/problem+json"
        return Reply(error.status, headers, error.problem_json())
    return Reply(error.status, headers)


def head_reply(reply: Reply) -> Reply:
    """Metadata is never cached: it changes with every append."""
    return attrs.evolve(reply, headers={**reply.headers, "Cache-Control": caching.NO_STORE})


def created(reply: Reply, url: str) -> Reply:
    """A create's reply; a stream it created is named by its URL (Location)."""
    if reply.status != 201:
        return reply
    return attrs.evolve(reply, headers={**reply.headers, "Location": url})


def location(scheme: str, host: str | None, server: tuple[str, int] | None, path: str) -> str:
    """A created stream's URL, as the client addressed it (Host), else as the server listens."""
    if host is None:
        name, port = server or ("localhost", 80)
        host = f"{name}:{port}"
    return f"{scheme}://{host}{path}"


@attrs.frozen
class ReadView:
    """What a read answered, as far as its response headers go: the range [start, end) it
    read, and the stream as of that read."""

    start: int
    end: int
    tail: int
    closed: bool  # the stream is closed (maybe with more to read before its tail)
    incarnation: str
    content_type: str
    deadline: float | None  # when the stream expires (Unix seconds), if it does

    @property
    def up_to_date(self) -> bool:
        """It read to the tail: all there is (a read from past the tail too)."""
        return self.end >= self.tail

    @property
    def eof(self) -> bool:
        """Closed, and read to its end (or from past it): nothing will ever follow."""
        return self.closed and self.up_to_date


def live_headers(view: ReadView, cursor: str | None, now: float, jitter: int) -> dict[str, str]:
    """Where the reader goes next, and whether it is done (no cursor then)."""
    headers = {"Stream-Next-Offset": offsets.encode(view.end)}
    if view.up_to_date:
        headers["Stream-Up-To-Date"] = "true"
    if view.eof:
        headers["Stream-Closed"] = "true"
    else:
        headers["Stream-Cursor"] = caching.cursor(now, cursor, jitter)
    return headers


def no_data_reply(view: ReadView, cursor: str | None, now: float, jitter: int) -> Reply:
    """A long-poll with no data to return: nothing came before its timeout, or the stream
    is closed and it is at its end (which the headers say)."""
    return Reply(204, live_headers(view, cursor, now, jitter))


def read_reply(
    view: ReadView,
    start: int | Sentinel,
    cursor: str | None,
    *,
    live: bool,
    if_none_match: str | None,
    now: float,
    jitter: int,
) -> Reply:
    """The status and headers of a read with a body (catch-up, or a long-poll that got
    data or EOF): 200, or 304 when a catch-up's If-None-Match holds its ETag."""
    headers = live_headers(view, cursor, now, jitter)
    headers["Content-Type"] = view.content_type
    if start is Sentinel.NOW:
        headers["Cache-Control"] = caching.NO_STORE
        return Reply(200, headers)
    tag = caching.etag(view.incarnation, view.start, view.end, view.eof)
    headers["ETag"] = tag
    if view.start == view.end and not view.closed:
        headers["Cache-Control"] = "no-cache"
    else:
        left = None if view.deadline is None else view.deadline - now
        headers["Cache-Control"] = caching.catch_up_cache_control(left)
    return conditional(headers, tag, live=live, if_none_match=if_none_match)


def conditional(
    headers: dict[str, str], tag: str, *, live: bool, if_none_match: str | None
) -> Reply:
    """200 with `headers`, or 304 (no Content-Type) when a catch-up's If-None-Match holds
    its ETag `tag`."""
    if not live and caching.matches(if_none_match, tag):
        return Reply(304, {k: v for k, v in headers.items() if k != "Content-Type"})
    return Reply(200, headers)


def sse_reply(content_type: str) -> tuple[Reply, bool]:
    """The start of an SSE response, and whether its data events are base64 (not text)."""
    as_base64 = not is_text(content_type)
    headers = dict(SSE_HEADERS)
    if as_base64:
        headers["Stream-SSE-Data-Encoding"] = "base64"
    return Reply(200, headers), as_base64


def sse_control(view: ReadView, cursor: str | None, now: float, jitter: int) -> bytes:
    """The control event after each batch: where to resume, and whether it is the end."""
    return sse.control_event(
        offsets.encode(view.end),
        cursor=caching.cursor(now, cursor, jitter),
        up_to_date=view.up_to_date,
        closed=view.eof,
    )
