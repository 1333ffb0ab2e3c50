"""ETags, cursors and Cache-Control for CDN collapsing (PROTOCOL section 10)."""

from __future__ import annotations

from datetime import UTC, datetime

CURSOR_EPOCH = datetime(2024, 10, 9, tzinfo=UTC).timestamp()
CURSOR_INTERVAL_SECS = 20
CATCH_UP_MAX_AGE = 60
CATCH_UP = "public, max-age={age}, stale-while-revalidate=300"
NO_STORE = "no-store"
MAX_CURSOR_DIGITS = 16  # an echoed cursor is an interval number; longer is not ours


def etag(incarnation: str, start: int, end: int, closed: bool) -> str:
    """Varies with the range and with closure, so a 304 never hides EOF."""
    return f'"{incarnation}:{start}:{end}{":c" if closed else ""}"'


def matches(if_none_match: str | None, tag: str) -> bool:
    if not if_none_match:
        return False
    candidates = (c.strip().removeprefix("W/") for c in if_none_match.split(","))
    return any(c in (tag, "*") for c in candidates)


def cursor(now: float, client_cursor: str | None, jitter_secs: int) -> str:
    """The current interval number, always strictly past the client's echoed cursor.

    `jitter_secs` (1-3600, random in production) spreads clients that caught up with the
    current interval over later ones so CDN cache keys keep moving.
    """
    current = int((now - CURSOR_EPOCH) // CURSOR_INTERVAL_SECS)
    echoed = None
    if client_cursor is not None and _is_cursor(client_cursor):
        echoed = int(client_cursor)
    if echoed is not None and echoed >= current:
        return str(echoed + max(1, jitter_secs // CURSOR_INTERVAL_SECS))
    return str(current)


def _is_cursor(text: str) -> bool:
    """Plain digits, short enough that int() and str() of it (plus jitter) stay cheap and
    within Python's 4300-digit conversion limit: a 4300-digit echo once answered 500."""
    return 0 < len(text) <= MAX_CURSOR_DIGITS and text.isascii() and text.isdigit()


def catch_up_cache_control(seconds_left: float | None) -> str:
    """Cacheable, but never for longer than the stream may still live."""
    age = CATCH_UP_MAX_AGE if seconds_left is None else int(min(CATCH_UP_MAX_AGE, seconds_left))
    return CATCH_UP.format(age=max(age, 0))
