"""The tail cache answers exactly the ranges it holds, and nothing else."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from actors.tail_cache import TailCache


@given(
    st.integers(0, 50),
    st.lists(st.binary(max_size=20), max_size=20),
    st.integers(1, 30),
    st.data(),
)
def test_cache_returns_the_stream_bytes_it_still_holds(
    start: int, chunks: list[bytes], limit: int, data: st.DataObject
) -> None:
    cache = TailCache(start, limit)
    for chunk in chunks:
        cache.extend(chunk)
    stream = b"\0" * start + b"".join(chunks)  # the stream's bytes by position
    assert cache.end == len(stream)
    assert cache.end - cache.start <= max(2 * limit, 0) or cache.start == start
    low = data.draw(st.integers(0, len(stream)))
    high = data.draw(st.integers(low, len(stream)))
    got = cache.get(low, high)
    if low >= cache.start:
        assert got == stream[low:high]
    else:
        assert got is None
    assert cache.get(cache.end, cache.end + 1) is None


def test_of_keeps_the_newest_records_up_to_the_limit() -> None:
    cache = TailCache.of(100, [b"cc", b"bbb", b"aaaa"], limit=4)
    assert (cache.start, cache.end) == (95, 100)
    assert cache.get(95, 100) == b"bbbcc"
    assert cache.get(94, 100) is None
