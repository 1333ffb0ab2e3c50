"""Log frames: whole, checksummed frames scan back; torn or corrupt tails stop the scan."""

from __future__ import annotations

import struct
import zlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from actors.storage import framing
from actors.storage.framing import HEADER, Scanned

Record = tuple[bytes, bytes]

RECORDS: list[Record] = [
    (b"\xa2akfcreateat\x01", b"first data"),
    (b"\xa1ak", b""),
    (b"m", b"third"),
    (b"\xa3ak\x00\x01\x02", b"\x00" * 40),
]
FIELDS = struct.Struct("<III")  # body length, meta length, CRC-32 of meta + data


def build(records: list[Record]) -> tuple[bytes, list[int]]:
    """The log bytes, and where each frame starts followed by the end."""
    buffer, starts = b"", []
    for meta, data in records:
        starts.append(len(buffer))
        buffer += framing.frame(meta, data)
    return buffer, [*starts, len(buffer)]


def scan(buffer: bytes, start: int = 0) -> tuple[list[Record], int]:
    """The (meta, data) of each valid frame, and the end of the valid prefix."""
    *frames, end = framing.scan(buffer, start)
    assert isinstance(end, int)
    found = []
    for item in frames:
        assert isinstance(item, Scanned)
        data = buffer[item.data_locator : item.data_locator + item.data_length]
        found.append((item.meta, data))
    return found, end


def flipped(buffer: bytes, position: int, mask: int) -> bytes:
    corrupt = bytearray(buffer)
    corrupt[position] ^= mask
    return bytes(corrupt)


def with_fields(framed: bytes, body_length: int, meta_length: int, crc: int) -> bytes:
    """A frame with rewritten header fields and a header checksum that matches them."""
    fields = FIELDS.pack(body_length, meta_length, crc)
    return fields + zlib.crc32(fields).to_bytes(4, "little") + framed[HEADER.size :]


# ---- layout -----------------------------------------------------------------------------


def test_frame_layout() -> None:
    meta, data = b"meta", b"payload"
    framed = framing.frame(meta, data)
    assert len(framed) == HEADER.size + len(meta) + len(data)
    fields = framed[: FIELDS.size]
    assert FIELDS.unpack(fields) == (len(meta) + len(data), len(meta), zlib.crc32(meta + data))
    assert int.from_bytes(framed[FIELDS.size : HEADER.size], "little") == zlib.crc32(fields)
    assert framed[HEADER.size :] == meta + data
    assert framing.data_offset(meta) == HEADER.size + len(meta)
    assert framed[framing.data_offset(meta) :] == data


# ---- scanning valid logs ----------------------------------------------------------------


def test_scan_of_nothing_is_just_the_start() -> None:
    assert list(framing.scan(b"")) == [0]


def test_scan_yields_frames_with_locators() -> None:
    buffer, starts = build(RECORDS)
    items = list(framing.scan(buffer))
    assert items[-1] == len(buffer)
    for item, (meta, data), start in zip(items[:-1], RECORDS, starts[:-1], strict=True):
        assert item == Scanned(meta, start + framing.data_offset(meta), len(data))
    assert scan(buffer) == (RECORDS, len(buffer))


def test_scan_accepts_memoryview_and_bytearray() -> None:
    buffer, _ = build(RECORDS)
    assert list(framing.scan(memoryview(buffer))) == list(framing.scan(buffer))
    assert list(framing.scan(bytearray(buffer))) == list(framing.scan(buffer))


def test_scan_from_a_frame_boundary() -> None:
    buffer, starts = build(RECORDS)
    assert scan(buffer, starts[2]) == (RECORDS[2:], len(buffer))
    assert scan(buffer, len(buffer)) == ([], len(buffer))


# ---- torn tails -------------------------------------------------------------------------


@pytest.mark.parametrize("kept", range(len(RECORDS)))
def test_torn_frame_at_every_byte_yields_exactly_the_frames_before_it(kept: int) -> None:
    buffer, starts = build(RECORDS[: kept + 1])
    for cut in range(starts[kept], len(buffer)):
        torn = buffer[:cut]
        assert scan(torn) == (RECORDS[:kept], starts[kept]), cut
        assert framing.torn(torn, starts[kept]), cut
    assert scan(buffer) == (RECORDS[: kept + 1], len(buffer))


def test_a_whole_log_has_no_torn_tail_to_cut() -> None:
    buffer, _ = build(RECORDS)
    assert framing.torn(buffer, len(buffer))
    assert framing.torn(b"", 0)


# ---- corruption -------------------------------------------------------------------------


@pytest.mark.parametrize("bad", range(len(RECORDS)))
@pytest.mark.parametrize("mask", [0x01, 0x04, 0x80, 0xFF])
def test_a_flipped_byte_stops_the_scan_at_its_frame(bad: int, mask: int) -> None:
    buffer, starts = build(RECORDS)
    for position in range(starts[bad], starts[bad + 1]):
        assert scan(flipped(buffer, position, mask)) == (RECORDS[:bad], starts[bad]), position


@pytest.mark.parametrize("mask", [0x01, 0x02, 0x04])
def test_a_flipped_meta_length_does_not_move_the_meta_data_split(mask: int) -> None:
    # The body checksum covers meta + data as one run, so it cannot see the split move;
    # the header checksum must.
    buffer, _ = build([(b"meta", b"data"), (b"next", b"frame")])
    assert scan(flipped(buffer, 4, mask)) == ([], 0)


def test_damage_in_the_last_frame_is_torn_and_earlier_damage_is_not() -> None:
    buffer, starts = build(RECORDS)
    last = len(RECORDS) - 1
    for position in range(starts[last] + HEADER.size, starts[last + 1]):
        assert framing.torn(flipped(buffer, position, 0x01), starts[last]), position
    for bad in range(last):
        for position in range(starts[bad] + HEADER.size, starts[bad + 1]):
            assert not framing.torn(flipped(buffer, position, 0x01), starts[bad]), position


@pytest.mark.parametrize("bad", range(len(RECORDS)))
def test_a_damaged_header_is_not_a_torn_write(bad: int) -> None:
    buffer, starts = build(RECORDS)
    for position in range(starts[bad], starts[bad] + HEADER.size):
        corrupt = flipped(buffer, position, 0x10)
        assert scan(corrupt)[1] == starts[bad]
        assert not framing.torn(corrupt, starts[bad]), position


def test_empty_meta_is_not_a_frame() -> None:
    good, _ = build(RECORDS[:1])
    assert scan(good + framing.frame(b"", b"data")) == (RECORDS[:1], len(good))
    assert scan(framing.frame(b"", b"")) == ([], 0)


def test_zero_bytes_are_not_frames() -> None:
    # a zero-filled tail (space allocated, data never written) must not scan as records
    buffer, _ = build(RECORDS)
    assert scan(buffer + bytes(4 * HEADER.size)) == (RECORDS, len(buffer))
    assert scan(bytes(100)) == ([], 0)


def test_meta_length_beyond_body_stops_the_scan() -> None:
    framed = framing.frame(b"abc", b"def")
    bad = with_fields(framed, 6, 7, zlib.crc32(b"abcdef")) + b"\x00"
    assert scan(bad) == ([], 0)


def test_the_writer_refuses_exactly_what_the_format_cannot_hold() -> None:
    at_limit = framing.frame(b"m" * framing.MAX_META, b"d")
    assert scan(at_limit) == ([(b"m" * framing.MAX_META, b"d")], len(at_limit))
    with pytest.raises(framing.FrameTooLarge):
        framing.frame(b"m" * (framing.MAX_META + 1), b"")
    # the u32 body length, checked without allocating 4 GiB
    framing.check_size(1, framing.MAX_BODY - 1)
    framing.check_size(framing.MAX_META, framing.MAX_BODY - framing.MAX_META)
    for meta_length, data_length in [(1, framing.MAX_BODY), (framing.MAX_META + 1, 0)]:
        with pytest.raises(framing.FrameTooLarge):
            framing.check_size(meta_length, data_length)


def test_the_reader_takes_larger_metadata_than_the_writer_makes() -> None:
    """Older versions wrote one size per JSON message in the metadata, unbounded; their
    logs stay readable (the header checksum, not a size bound, tells garbage apart)."""
    meta = b"m" * (framing.MAX_META + 1)
    fields = FIELDS.pack(len(meta) + 1, len(meta), zlib.crc32(b"d", zlib.crc32(meta)))
    legacy = fields + zlib.crc32(fields).to_bytes(4, "little") + meta + b"d"
    assert scan(legacy) == ([(meta, b"d")], len(legacy))


def test_frames_larger_than_a_window_scan_and_tear_alike() -> None:
    big = (b"m" * framing.MAX_META, bytes(range(256)) * (3 * framing.WINDOW // 256 + 7))
    buffer, starts = build([RECORDS[0], big, RECORDS[2]])
    assert scan(buffer) == ([RECORDS[0], big, RECORDS[2]], len(buffer))
    for cut in (starts[1] + 3, starts[1] + HEADER.size + framing.WINDOW + 9, starts[2] - 1):
        assert scan(buffer[:cut]) == ([RECORDS[0]], starts[1])
        assert framing.torn(buffer[:cut], starts[1])
    damaged = flipped(buffer, starts[1] + HEADER.size + 2 * framing.WINDOW, 0x01)
    assert scan(damaged) == ([RECORDS[0]], starts[1])
    assert not framing.torn(damaged, starts[1])


def test_body_length_past_the_buffer_stops_the_scan() -> None:
    good, _ = build(RECORDS[:1])
    huge = with_fields(framing.frame(b"m", b"x"), 2**32 - 1, 1, 0)
    assert scan(good + huge + b"x" * 100) == (RECORDS[:1], len(good))
    assert framing.torn(good + huge + b"x" * 100, len(good))


# ---- properties -------------------------------------------------------------------------


records_strategy = st.lists(
    st.tuples(st.binary(min_size=1, max_size=40), st.binary(max_size=80)), max_size=8
)


@given(records_strategy)
def test_scan_inverts_frame(records: list[Record]) -> None:
    buffer, _ = build(records)
    assert scan(buffer) == (records, len(buffer))
    assert framing.torn(buffer, len(buffer))


@given(records_strategy.filter(bool), st.data())
def test_scan_of_a_prefix_yields_the_whole_frames_in_it(
    records: list[Record], data: st.DataObject
) -> None:
    buffer, starts = build(records)
    cut = data.draw(st.integers(min_value=0, max_value=len(buffer)), label="cut")
    whole = max(i for i, s in enumerate(starts) if s <= cut)
    assert scan(buffer[:cut]) == (records[:whole], starts[whole])
    assert framing.torn(buffer[:cut], starts[whole])


@given(records_strategy.filter(bool), st.data())
def test_scan_stops_at_a_corrupted_frame(records: list[Record], data: st.DataObject) -> None:
    buffer, starts = build(records)
    bad = data.draw(st.integers(min_value=0, max_value=len(records) - 1), label="frame")
    position = data.draw(st.integers(min_value=starts[bad], max_value=starts[bad + 1] - 1))
    mask = data.draw(st.integers(min_value=1, max_value=255), label="mask")
    assert scan(flipped(buffer, position, mask)) == (records[:bad], starts[bad])
