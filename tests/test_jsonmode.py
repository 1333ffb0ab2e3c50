"""JSON mode: validation, one-level flattening, compact storage and array framing."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.protocol import jsonmode
from streams.protocol.errors import ProtocolError
from streams.protocol.machine import encode_body

JSON = "application/json"

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**64), max_value=2**64)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=8,
)


def stored(body: bytes, *, allow_empty: bool = False) -> list[bytes]:
    """The stored messages of a body, split where the stored bytes say they end."""
    flat = jsonmode.flatten(body) if allow_empty else encode_body(JSON, body, creating=False)
    messages, position = [], 0
    for size in jsonmode.sizes(flat):
        messages.append(flat[position : position + size])
        position += size
    assert position == len(flat)
    return messages


@pytest.fixture(params=["whole", "message by message"], autouse=True)
def parse_mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every test runs both ways a body is parsed: small bodies at once, large ones (as if
    every body were large) a message at a time."""
    if request.param != "whole":
        monkeypatch.setattr(jsonmode, "WHOLE_PARSE_BYTES", 0)
        monkeypatch.setattr(jsonmode, "ENCODE_BATCH", 2)


def read_back(messages: list[bytes]) -> Any:
    return json.loads(jsonmode.as_array(b"".join(messages)))


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"event": "created"}', [b'{"event":"created"},']),
        (b'[{"event": "a"}, {"event": "b"}]', [b'{"event":"a"},', b'{"event":"b"},']),
        (b"[[1,2], [3,4]]", [b"[1,2],", b"[3,4],"]),
        (b"[[[1,2,3]]]", [b"[[1,2,3]],"]),
        (b"1", [b"1,"]),
        (b'"text"', [b'"text",']),
        (b"null", [b"null,"]),
        (b"true", [b"true,"]),
        (b"[null, false]", [b"null,", b"false,"]),
        (b"[[]]", [b"[],"]),
        (b"{}", [b"{},"]),
        (b' \n\t {"a" :  1 } \r\n', [b'{"a":1},']),
    ],
)
def test_messages_flatten_exactly_one_level(body: bytes, expected: list[bytes]) -> None:
    assert stored(body) == expected


def test_messages_keep_non_ascii_as_utf8() -> None:
    assert stored('{"k": "h\u00e9llo \u2603 \U0001f600"}'.encode()) == [
        '{"k":"h\u00e9llo \u2603 \U0001f600"},'.encode()
    ]
    assert stored(b'"\\u00e9"') == ['"\u00e9",'.encode()]


def test_messages_escape_control_characters() -> None:
    [message] = stored(b'"a\\nb\\rc\\u0000"')
    assert b"\n" not in message and b"\r" not in message and b"\x00" not in message
    assert json.loads(message[:-1]) == "a\nb\rc\x00"


def test_empty_array_is_rejected_on_append() -> None:
    with pytest.raises(ProtocolError) as caught:
        stored(b"[]")
    assert caught.value.status == 400
    assert caught.value.code == "EMPTY_ARRAY"


def test_empty_array_is_nothing_on_create() -> None:
    assert stored(b"[]", allow_empty=True) == []
    assert stored(b" [ ] ", allow_empty=True) == []


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b" ",
        b"{",
        b"[1,]",
        b"{'a': 1}",
        b"undefined",
        b"NaN",
        b"Infinity",
        b"-Infinity",
        b"[1, NaN]",
        b'{"a": Infinity}',
        b"1 2",
        b"[1] [2]",
        b"\xff\xfe",
        b'"\xc3"',
        b"\xef\xbb\xbf{}",  # a UTF-8 byte order mark
        b"[" * 100_000 + b"]" * 100_000,
    ],
)
def test_invalid_json_is_a_400(body: bytes) -> None:
    with pytest.raises(ProtocolError) as caught:
        stored(body, allow_empty=True)
    assert caught.value.status == 400
    assert caught.value.code == "INVALID_JSON"


@pytest.mark.parametrize(
    "body",
    [b"1e400", b"[1, -1e400]", b'{"a": 1e999}', b'"\\ud800"', b'["ok", "\\udfff"]'],
)
def test_unrepresentable_json_is_a_400(body: bytes) -> None:
    with pytest.raises(ProtocolError) as caught:
        stored(body)
    assert caught.value.status == 400


def test_as_array_wraps_stored_messages() -> None:
    assert jsonmode.as_array(b"") == b"[]"
    assert jsonmode.as_array(b"1,") == b"[1]"
    assert jsonmode.as_array(b'{"a":1},[2],"x",') == b'[{"a":1},[2],"x"]'


@given(json_values)
def test_a_single_value_reads_back_as_itself(value: Any) -> None:
    body = json.dumps(value, indent=1).encode()
    messages = stored(body, allow_empty=True)
    expected = value if isinstance(value, list) else [value]
    assert len(messages) == len(expected)
    assert all(m.endswith(b",") for m in messages)
    assert read_back(messages) == expected


@settings(max_examples=50)
@given(st.lists(json_values, max_size=6))
def test_each_message_is_compact_json_and_ranges_are_arrays(values: list[Any]) -> None:
    messages = stored(json.dumps(values).encode(), allow_empty=True)
    assert [json.loads(m[:-1]) for m in messages] == values
    for m in messages:
        assert m[:-1] == json.dumps(
            json.loads(m[:-1]), separators=(",", ":"), ensure_ascii=False
        ).encode("utf-8")
    # any contiguous run of whole messages is a valid array of just those messages
    for i in range(len(messages) + 1):
        for j in range(i, len(messages) + 1):
            assert read_back(messages[i:j]) == values[i:j]


@settings(max_examples=40)
@given(st.lists(st.lists(json_values, min_size=1, max_size=3), max_size=3))
def test_batches_concatenate_into_one_array(batches: list[list[Any]]) -> None:
    stored_bytes = b"".join(b"".join(stored(json.dumps(b).encode())) for b in batches)
    assert json.loads(jsonmode.as_array(stored_bytes)) == [v for b in batches for v in b]


@pytest.mark.parametrize("cut", [0, 1, 5, 9, 14])
def test_a_json_body_sent_in_pieces_is_the_whole_array(cut: int) -> None:
    stored = jsonmode.flatten(b'[1, "two", {"3": 4}]')
    pieces = [stored[:cut], stored[cut:]] if 0 < cut < len(stored) else [stored]
    body = b"".join(
        jsonmode.json_piece(piece, first=i == 0, last=i == len(pieces) - 1)
        for i, piece in enumerate(pieces)
    )
    assert body == jsonmode.as_array(stored)
    assert len(body) == jsonmode.body_length(len(stored), json=True)
    assert jsonmode.body_length(0, json=True) == len(jsonmode.as_array(b""))
    assert jsonmode.body_length(7, json=False) == 7
