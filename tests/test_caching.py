"""ETags, If-None-Match, cursors and Cache-Control (PROTOCOL section 10)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.protocol import caching

INTERVAL = caching.CURSOR_INTERVAL_SECS


def at_interval(n: int, into: float = 0.0) -> float:
    return caching.CURSOR_EPOCH + n * INTERVAL + into


# ---- ETags ------------------------------------------------------------------------------


def test_etag_is_quoted_and_names_range_and_incarnation() -> None:
    assert caching.etag("abc", 0, 10, False) == '"abc:0:10"'
    assert caching.etag("abc", 5, 10, True) == '"abc:5:10:c"'


def test_etag_varies_with_everything_it_covers() -> None:
    base = caching.etag("abc", 0, 10, False)
    variants = [
        caching.etag("abd", 0, 10, False),
        caching.etag("abc", 1, 10, False),
        caching.etag("abc", 0, 11, False),
        caching.etag("abc", 0, 10, True),
    ]
    assert base not in variants
    assert len(set(variants)) == len(variants)


@given(
    st.text(alphabet="0123456789abcdef", min_size=1, max_size=32),
    st.integers(min_value=0, max_value=10**12),
    st.integers(min_value=0, max_value=10**12),
    st.booleans(),
)
def test_etag_matches_itself(incarnation: str, start: int, end: int, closed: bool) -> None:
    tag = caching.etag(incarnation, start, end, closed)
    assert tag.startswith('"') and tag.endswith('"')
    assert caching.matches(tag, tag)
    assert caching.matches(f"W/{tag}", tag)
    assert not caching.matches(caching.etag(incarnation, start, end, not closed), tag)


# ---- If-None-Match ----------------------------------------------------------------------


TAG = '"abc:0:10"'


@pytest.mark.parametrize(
    "header",
    [TAG, f"W/{TAG}", f' "x", {TAG} ', f'"x",W/{TAG}', "*", '"x", *'],
)
def test_matches(header: str) -> None:
    assert caching.matches(header, TAG)


@pytest.mark.parametrize(
    "header",
    [None, "", '"abc:0:1"', "abc:0:10", f"{TAG}x", '"abc:0:10:c"', f"w/{TAG}", '"*"'],
)
def test_does_not_match(header: str | None) -> None:
    assert not caching.matches(header, TAG)


# ---- cursors ----------------------------------------------------------------------------


def test_cursor_epoch_is_october_9_2024_utc() -> None:
    assert datetime(2024, 10, 9, tzinfo=UTC).timestamp() == caching.CURSOR_EPOCH
    assert INTERVAL == 20


@pytest.mark.parametrize(("n", "into"), [(0, 0.0), (0, 19.999), (1, 0.0), (1000, 7.5)])
def test_cursor_without_echo_is_the_current_interval(n: int, into: float) -> None:
    assert caching.cursor(at_interval(n, into), None, 1) == str(n)


@pytest.mark.parametrize("echo", ["", "abc", "1.5", "1e3", "0x10"])
def test_cursor_ignores_unparsable_echoes(echo: str) -> None:
    assert caching.cursor(at_interval(1000), echo, 3600) == "1000"


@pytest.mark.parametrize("echo", ["9" * 17, "9" * 4300, "1" * 5000, " 5000", "+5000", "\u0665"])
def test_cursor_ignores_echoes_that_are_not_short_plain_digits(echo: str) -> None:
    """A 4300-digit echo plus jitter once overflowed str()'s limit: a 500 on every read."""
    assert caching.cursor(at_interval(1000), echo, 3600) == "1000"


def test_cursor_older_echo_gets_the_current_interval() -> None:
    assert caching.cursor(at_interval(1000), "999", 3600) == "1000"
    assert caching.cursor(at_interval(1000), "-5", 3600) == "1000"


@pytest.mark.parametrize(
    ("jitter", "expected"),
    [(1, "1001"), (19, "1001"), (20, "1001"), (40, "1002"), (1000, "1050"), (3600, "1180")],
)
def test_cursor_echo_of_current_interval_moves_on_by_jitter(jitter: int, expected: str) -> None:
    assert caching.cursor(at_interval(1000), "1000", jitter) == expected


def test_cursor_echo_from_the_future_still_moves_on() -> None:
    assert caching.cursor(at_interval(1000), "5000", 1) == "5001"
    assert caching.cursor(at_interval(1000), "5000", 200) == "5010"


@given(
    st.floats(min_value=caching.CURSOR_EPOCH, max_value=caching.CURSOR_EPOCH + 10**9),
    st.none() | st.integers(min_value=-(10**6), max_value=10**8).map(str),
    st.integers(min_value=1, max_value=3600),
)
def test_cursor_never_goes_backwards(now: float, echo: str | None, jitter: int) -> None:
    cursor = int(caching.cursor(now, echo, jitter))
    current = int((now - caching.CURSOR_EPOCH) // INTERVAL)
    assert cursor >= current
    if echo is not None:
        assert cursor > int(echo)
        # the jitter is at most 3600 s worth of intervals past the echo
        assert cursor <= max(current, int(echo) + 3600 // INTERVAL)


# ---- Cache-Control ----------------------------------------------------------------------


def test_catch_up_cache_control_defaults_to_sixty_seconds() -> None:
    assert caching.catch_up_cache_control(None) == (
        "public, max-age=60, stale-while-revalidate=300"
    )


@pytest.mark.parametrize(
    ("left", "age"),
    [(1e9, 60), (60.0, 60), (59.9, 59), (30.0, 30), (0.5, 0), (0.0, 0), (-10.0, 0)],
)
def test_catch_up_cache_control_never_outlives_the_stream(left: float, age: int) -> None:
    assert caching.catch_up_cache_control(left) == (
        f"public, max-age={age}, stale-while-revalidate=300"
    )


def test_no_store() -> None:
    assert caching.NO_STORE == "no-store"
