"""What one message of a state stream is: the lenient reading the fold uses and the strict one
structural validation uses, over the cases of the spec, the JSON schema and the official
TypeScript helpers (research notes §1.4 and the edge cases of §4)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from state.changes import (
    ABSENT,
    Change,
    Control,
    classify,
    decode_json,
    encode_json,
    parse_stored,
    structural_error,
)


def change(operation: str, **fields: Any) -> dict[str, Any]:
    headers = {"operation": operation, **fields.pop("headers", {})}
    return {"type": "user", "key": "1", **fields, "headers": headers}


VALID: list[tuple[Any, Change | Control]] = [
    (change("insert", value={"name": "a"}), Change("user", "1", "insert", {"name": "a"})),
    (change("insert", value=None), Change("user", "1", "insert", None)),  # null is a value
    (change("insert", value="dark"), Change("user", "1", "insert", "dark")),
    (
        change("update", value=2, old_value=1),
        Change("user", "1", "update", 2, old_value=1),
    ),
    (change("update", value=2), Change("user", "1", "update", 2)),
    (change("upsert", value=[1]), Change("user", "1", "upsert", [1])),  # the TS helpers' op
    (change("delete"), Change("user", "1", "delete")),
    (change("delete", old_value={"a": 1}), Change("user", "1", "delete", old_value={"a": 1})),
    (change("delete", value=None), Change("user", "1", "delete", None)),
    (
        change(
            "insert",
            value=1,
            headers={"txid": "t1", "timestamp": "2024-01-02T03:04:05Z", "sourceApp": "web"},
        ),
        Change("user", "1", "insert", 1, txid="t1", timestamp="2024-01-02T03:04:05Z"),
    ),
    (  # what the TS reference server stamps into a change on read
        change("insert", value=1, headers={"offset": "0000_0042"}),
        Change("user", "1", "insert", 1),
    ),
    ({"headers": {"control": "reset"}}, Control("reset")),
    (
        {"headers": {"control": "snapshot-start", "offset": "42"}},
        Control("snapshot-start", "42"),
    ),
    ({"headers": {"control": "snapshot-end", "offset": ""}}, Control("snapshot-end", "")),
]


@pytest.mark.parametrize(("message", "expected"), VALID)
def test_valid_messages(message: Any, expected: Change | Control) -> None:
    assert classify(message) == expected
    assert structural_error(message) is None


# (message, what classify reads, the strict reason)
INVALID: list[tuple[Any, Change | Control | None, str]] = [
    (42, None, "a message must be a JSON object"),
    ("x", None, "a message must be a JSON object"),
    ([change("insert", value=1)], None, "a message must be a JSON object"),
    (None, None, "a message must be a JSON object"),
    ({"type": "user", "key": "1", "value": 1}, None, "headers must be an object"),
    ({"foo": 1}, None, "headers must be an object"),
    ({"headers": "insert"}, None, "headers must be an object"),
    ({"headers": ["operation"]}, None, "headers must be an object"),
    ({"headers": None}, None, "headers must be an object"),
    ({"headers": {}}, None, "headers must have exactly one of operation and control"),
    (
        change("insert", value=1, headers={"control": "reset"}),
        Change("user", "1", "insert", 1),  # the TS guards test `operation` first
        "headers must have exactly one of operation and control",
    ),
    (
        {"headers": {"operation": "insert", "control": "reset"}},
        Control("reset"),  # not a usable change: read as what else it says
        "headers must have exactly one of operation and control",
    ),
    (
        change("merge", value=1),
        None,
        "headers.operation must be one of insert, update, upsert, delete",
    ),
    (change("INSERT", value=1), None, "headers.operation must be one of"),
    (
        {"type": "u", "key": "1", "value": 1, "headers": {"operation": 1}},
        None,
        "headers.operation must be one of",
    ),
    (
        {"headers": {"control": "up-to-date"}},  # removed from the protocol's vocabulary
        None,
        "headers.control must be one of snapshot-start, snapshot-end, reset",
    ),
    ({"headers": {"control": None}}, None, "headers.control must be one of"),
    ({**change("insert", value=1), "key": 1}, None, "key must be a non-empty string"),
    ({**change("insert", value=1), "key": ""}, None, "key must be a non-empty string"),
    ({**change("insert", value=1), "key": None}, None, "key must be a non-empty string"),
    ({**change("insert", value=1), "type": ""}, None, "type must be a non-empty string"),
    ({**change("insert", value=1), "type": ["user"]}, None, "type must be a non-empty string"),
    ({"key": "1", "value": 1, "headers": {"operation": "insert"}}, None, "type must be a"),
    ({"type": "u", "headers": {"operation": "delete"}}, None, "key must be a non-empty string"),
    (change("insert"), None, "value is required for insert"),
    (change("update", old_value=1), None, "value is required for update"),
    (change("upsert"), None, "value is required for upsert"),
    (
        {**change("insert", value=1), "foo": 1},
        Change("user", "1", "insert", 1),
        "unknown field 'foo'",
    ),
    (
        {"headers": {"control": "reset"}, "type": "user"},
        Control("reset"),
        "unknown field 'type'",
    ),
    (
        change("insert", value=1, headers={"txid": ""}),
        Change("user", "1", "insert", 1, txid=""),
        "headers.txid must be a non-empty string",
    ),
    (
        change("insert", value=1, headers={"txid": 5}),
        Change("user", "1", "insert", 1),  # a txid that is not a string is not kept
        "headers.txid must be a non-empty string",
    ),
    (
        change("insert", value=1, headers={"timestamp": "yesterday"}),
        Change("user", "1", "insert", 1, timestamp="yesterday"),
        "headers.timestamp must be an RFC 3339 date-time",
    ),
    (
        change("insert", value=1, headers={"timestamp": 1700000000}),
        Change("user", "1", "insert", 1),
        "headers.timestamp must be an RFC 3339 date-time",
    ),
    (
        {"headers": {"control": "reset", "offset": 5}},
        Control("reset"),  # an offset that is not a string is not kept
        "headers.offset must be a string",
    ),
]


@pytest.mark.parametrize(("message", "classified", "reason"), INVALID)
def test_invalid_messages(message: Any, classified: Change | Control | None, reason: str) -> None:
    assert classify(message) == classified
    error = structural_error(message)
    assert error is not None
    assert error.startswith(reason)


@pytest.mark.parametrize(
    "timestamp",
    [
        "2024-01-02T03:04:05Z",
        "2024-01-02t03:04:05z",
        "2024-01-02T03:04:05.123456Z",
        "2024-01-02T03:04:05+05:30",
        "2024-12-31T23:59:60-00:00",  # a leap second
    ],
)
def test_rfc3339_timestamps(timestamp: str) -> None:
    assert structural_error(change("insert", value=1, headers={"timestamp": timestamp})) is None


@pytest.mark.parametrize(
    "timestamp",
    [
        "",
        "2024-01-02",
        "2024-01-02T03:04:05",  # no zone
        "2024-01-02 03:04:05Z",
        "2024-13-02T03:04:05Z",
        "2024-01-32T03:04:05Z",
        "2024-01-02T24:04:05Z",
        "2024-01-02T03:04:05.Z",
        "2024-01-02T03:04:05+0530",
        "2024-01-02T03:04:05Z\n",
        "\uff12\uff10\uff12\uff14-01-02T03:04:05Z",  # digits, but not ASCII ones
    ],
)
def test_timestamps_that_are_not_rfc3339(timestamp: str) -> None:
    reason = structural_error(change("insert", value=1, headers={"timestamp": timestamp}))
    assert reason == "headers.timestamp must be an RFC 3339 date-time"


def test_nan_and_infinity_never_reach_a_message() -> None:
    for text in ("NaN", "Infinity", "-Infinity"):
        with pytest.raises(ValueError):
            decode_json('{"value":' + text + "}")
        with pytest.raises(ValueError):
            parse_stored(b'{"value":' + text.encode() + b"},")
    with pytest.raises(ValueError):
        encode_json(float("nan"))


def test_stored_data_parses_to_its_messages() -> None:
    assert parse_stored(b"") == []
    assert parse_stored(b'{"a":1},[1,2],"x",') == [{"a": 1}, [1, 2], "x"]
    assert parse_stored(memoryview(b'null,"\xc3\xa9",')) == [None, "é"]


def test_absent_is_not_null() -> None:
    assert classify(change("delete"))
    assert ABSENT is not None
    assert repr(ABSENT) == "ABSENT"


scalars = st.none() | st.booleans() | st.integers() | st.text(max_size=5)
json_values = st.recursive(
    scalars | st.floats(allow_nan=False, allow_infinity=False),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=8,
)
fields = st.sampled_from(["type", "key", "value", "old_value", "headers", "x"])
header_fields = st.sampled_from(["operation", "control", "txid", "timestamp", "offset", "y"])
words = st.sampled_from(["insert", "update", "upsert", "delete", "reset", "snapshot-start", ""])
messy = st.dictionaries(
    fields,
    json_values | words | st.dictionaries(header_fields, json_values | words),
)


@st.composite
def mangled(draw: st.DrawFn) -> Any:
    """A valid change or control message with fields dropped or replaced: the near misses."""
    message: dict[str, Any] = draw(
        st.sampled_from(
            [
                change("insert", value=1, headers={"txid": "t", "timestamp": "x"}),
                change("update", value=None, old_value=2),
                change("upsert", value=[]),
                change("delete", old_value=3),
                {"headers": {"control": "reset", "offset": "5"}},
                {"headers": {"control": "snapshot-start"}},
            ]
        )
    )
    message = {**message, "headers": dict(message["headers"])}
    for place in draw(st.lists(st.sampled_from([message, message["headers"]]), max_size=3)):
        name = draw(st.sampled_from([*sorted(place), "operation", "control", "value"]))
        if draw(st.booleans()):
            place.pop(name, None)
        else:
            place[name] = draw(json_values | words)
    return message


@given(json_values | messy | mangled())
def test_any_json_is_read_without_raising(message: Any) -> None:
    """classify never raises; what strict validation accepts the fold reads as the same kind."""
    classified = classify(message)
    if structural_error(message) is None:
        kind = Control if "control" in message["headers"] else Change
        assert isinstance(classified, kind)


@given(json_values)
def test_the_encoding_is_compact_json(value: Any) -> None:
    expected = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    assert encode_json(value) == expected
