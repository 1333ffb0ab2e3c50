"""SSE framing, checked against a parser that follows the WHATWG event-stream rules."""

from __future__ import annotations

import base64
import itertools
import json
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.protocol import sse

_LINE = re.compile(r"\r\n|\r|\n")


def parse(stream: bytes) -> list[tuple[str, str]]:
    """(event type, data) of each dispatched event, as an EventSource would see them."""
    lines = _LINE.split(stream.decode("utf-8"))
    lines.pop()  # text after the last line break is an incomplete line: never dispatched
    events: list[tuple[str, str]] = []
    kind, data = "", list[str]()
    for line in lines:
        if not line:
            if data:
                events.append((kind or "message", "\n".join(data)))
            kind, data = "", []
            continue
        if line.startswith(":"):
            continue
        field, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if field == "event":
            kind = value
        elif field == "data":
            data.append(value)
    return events


def normalized(payload: bytes) -> str:
    return _LINE.sub("\n", payload.decode("utf-8"))


# ---- data events ------------------------------------------------------------------------


def test_text_data_event_has_one_data_line_per_line() -> None:
    assert sse.data_event(b"hello", base64_encoded=False) == b"event: data\ndata:hello\n\n"
    assert sse.data_event(b"a\nb", base64_encoded=False) == b"event: data\ndata:a\ndata:b\n\n"


@pytest.mark.parametrize("newline", [b"\n", b"\r", b"\r\n"])
def test_every_kind_of_line_break_starts_a_data_line(newline: bytes) -> None:
    event = sse.data_event(b"a" + newline + b"b" + newline, base64_encoded=False)
    assert event == b"event: data\ndata:a\ndata:b\ndata:\n\n"
    assert parse(event) == [("data", "a\nb\n")]


def test_lone_cr_is_not_left_inside_a_data_line() -> None:
    event = sse.data_event(b"a\r\rb\n\r\nc", base64_encoded=False)
    body = event.removeprefix(b"event: data\n").removesuffix(b"\n\n")
    assert b"\r" not in body
    assert body.split(b"\n") == [b"data:a", b"data:", b"data:b", b"data:", b"data:c"]


def test_empty_text_payload_is_one_empty_data_line() -> None:
    event = sse.data_event(b"", base64_encoded=False)
    assert event == b"event: data\ndata:\n\n"
    assert parse(event) == [("data", "")]


def test_json_array_payload() -> None:
    payload = b'[{"k":"v"},{"k":"w"}]'
    assert parse(sse.data_event(payload, base64_encoded=False)) == [("data", payload.decode())]


def test_stored_bytes_cannot_inject_events_or_fields() -> None:
    payload = b'x\n\nevent: control\ndata: {"streamClosed":true}\n\nid: 7\nretry: 1\r\r:c'
    event = sse.data_event(payload, base64_encoded=False)
    assert parse(event) == [("data", normalized(payload))]
    body = event.removeprefix(b"event: data\n").removesuffix(b"\n\n")
    assert all(line.startswith(b"data:") for line in body.split(b"\n"))


def test_base64_data_event() -> None:
    assert sse.data_event(b"\x01\x02\x03", base64_encoded=True) == b"event: data\ndata:AQID\n\n"
    assert sse.data_event(b"", base64_encoded=True) == b"event: data\ndata:\n\n"
    assert sse.data_event(b"\n\r\n", base64_encoded=True) == b"event: data\ndata:Cg0K\n\n"


@given(st.binary(max_size=300))
def test_base64_events_carry_any_bytes(payload: bytes) -> None:
    [(kind, data)] = parse(sse.data_event(payload, base64_encoded=True))
    assert kind == "data"
    assert len(data) % 4 == 0
    assert base64.b64decode(data, validate=True) == payload


# Lines that start with a space are covered (as a known bug) below.
text_payloads = st.text(
    alphabet=st.characters(exclude_characters=" ", exclude_categories=["Cs"])
) | st.text(alphabet="ab \r\n:").filter(lambda t: not re.search(r"(^|\r\n|\r|\n) ", t))


@given(text_payloads)
def test_text_events_carry_the_text_with_line_breaks_normalized(text: str) -> None:
    payload = text.encode("utf-8")
    event = sse.data_event(payload, base64_encoded=False)
    assert parse(event) == [("data", normalized(payload))]
    assert parse(event + event) == [("data", normalized(payload))] * 2


@pytest.mark.parametrize("payload", [b" indented", b"a\n  b", b" "])
def test_text_lines_keep_their_leading_spaces(payload: bytes) -> None:
    assert parse(sse.data_event(payload, base64_encoded=False)) == [("data", normalized(payload))]


# ---- control events ---------------------------------------------------------------------


def control(event: bytes) -> dict[str, object]:
    assert event.startswith(b"event: control\ndata:")
    assert event.endswith(b"\n\n")
    [(kind, data)] = parse(event)
    assert kind == "control"
    doc = json.loads(data)
    assert isinstance(doc, dict)
    return doc


def test_control_event_open_and_caught_up() -> None:
    event = sse.control_event("0_5", cursor="1000", up_to_date=True, closed=False)
    assert control(event) == {"streamNextOffset": "0_5", "streamCursor": "1000", "upToDate": True}


def test_control_event_open_and_behind_omits_up_to_date() -> None:
    event = sse.control_event("0_5", cursor="1000", up_to_date=False, closed=False)
    assert control(event) == {"streamNextOffset": "0_5", "streamCursor": "1000"}


def test_control_event_without_cursor() -> None:
    event = sse.control_event("0_5", cursor=None, up_to_date=False, closed=False)
    assert control(event) == {"streamNextOffset": "0_5"}


@pytest.mark.parametrize("up_to_date", [True, False])
def test_control_event_closed_implies_up_to_date_and_drops_cursor(up_to_date: bool) -> None:
    event = sse.control_event("0_9", cursor="1000", up_to_date=up_to_date, closed=True)
    assert control(event) == {"streamNextOffset": "0_9", "streamClosed": True, "upToDate": True}


def test_data_then_control_parse_as_two_events() -> None:
    stream = sse.data_event(b"x\ny", base64_encoded=False) + sse.control_event(
        "0_3", cursor="7", up_to_date=True, closed=False
    )
    events = parse(stream)
    assert [kind for kind, _ in events] == ["data", "control"]
    assert events[0][1] == "x\ny"


# ---- data events written a piece at a time ------------------------------------------------


def piecewise(payload: bytes, cuts: list[int], *, base64_encoded: bool) -> bytes:
    """The event for `payload` fed to a DataEvent in pieces cut at `cuts`."""
    event = sse.DataEvent(base64_encoded=base64_encoded)
    bounds = [0, *sorted(cuts), len(payload)]
    out = [event.feed(payload[a:b]) for a, b in itertools.pairwise(bounds)]
    return b"".join(out) + event.end()


# Bytes rich in line breaks and spaces, so cuts often fall inside a CRLF or before a space.
edgy_bytes = st.binary(max_size=200) | st.lists(
    st.sampled_from([b"\r", b"\n", b"\r\n", b" ", b"a", b"\xc3\xa9", b":"]), max_size=60
).map(b"".join)


@given(st.data(), edgy_bytes, st.booleans())
def test_an_event_written_in_pieces_equals_the_event_written_whole(
    data: st.DataObject, payload: bytes, base64_encoded: bool
) -> None:
    cuts = data.draw(st.lists(st.integers(0, len(payload)), max_size=8))
    whole = sse.data_event(payload, base64_encoded=base64_encoded)
    assert piecewise(payload, cuts, base64_encoded=base64_encoded) == whole


@pytest.mark.parametrize(
    ("payload", "cut"),
    [
        (b"a\r\nb", 2),  # a CRLF split between pieces is one line break
        (b"a\r\rb", 2),  # two CRs are two
        (b"a\r", 2),  # a CR at the very end still ends a line
        (b"a\n b", 2),  # a line that starts a piece with a space keeps it
        (b"a\r\n b", 3),
        (b"\r\n", 1),
    ],
)
def test_line_breaks_and_spaces_at_piece_edges(payload: bytes, cut: int) -> None:
    assert piecewise(payload, [cut], base64_encoded=False) == sse.data_event(
        payload, base64_encoded=False
    )


def test_base64_pieces_that_are_multiples_of_three_encode_alone() -> None:
    event = sse.DataEvent(base64_encoded=True)
    assert event.feed(b"\x01\x02\x03") == b"event: data\ndata:AQID"
    assert event.feed(b"\x04\x05\x06") == b"BAUG"
    assert event.end() == b"\n\n"


def test_an_event_with_no_pieces_is_the_empty_event() -> None:
    for base64_encoded in (True, False):
        event = sse.DataEvent(base64_encoded=base64_encoded)
        assert event.end() == sse.data_event(b"", base64_encoded=base64_encoded)


def test_the_heartbeat_is_the_long_poll_timeout_at_most_15_s() -> None:
    assert sse.heartbeat(5.0) == 5.0
    assert sse.heartbeat(20.0) == sse.MAX_HEARTBEAT_SECS == 15.0
    assert sse.KEEP_ALIVE.startswith(b":") and sse.KEEP_ALIVE.endswith(b"\n\n")
