"""Request header parsing: Stream-Closed, TTL, Expires-At, content types, producers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.protocol import headers
from streams.protocol.errors import ProtocolError
from streams.protocol.headers import MAX_SAFE_INTEGER, Producer


def assert_400(error: pytest.ExceptionInfo[ProtocolError]) -> None:
    assert error.value.status == 400


# ---- Stream-Closed ----------------------------------------------------------------------


@pytest.mark.parametrize("value", ["true", "TRUE", "True", "tRuE"])
def test_is_true_accepts_true_in_any_case(value: str) -> None:
    assert headers.is_true(value)


@pytest.mark.parametrize("value", [None, "", "false", "yes", "1", "t", "truee", "true,true"])
def test_is_true_treats_anything_else_as_absent(value: str | None) -> None:
    assert not headers.is_true(value)


# ---- Stream-TTL -------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "ttl"), [("0", 0), ("1", 1), ("3600", 3600)])
def test_parse_ttl_accepts_plain_decimals(value: str, ttl: int) -> None:
    assert headers.parse_ttl(value) == ttl


def test_parse_ttl_accepts_max_safe_integer() -> None:
    assert headers.parse_ttl(str(MAX_SAFE_INTEGER)) == MAX_SAFE_INTEGER


@pytest.mark.parametrize(
    "value",
    [
        *("", "+3600", "-1", "03600", "00", "3600.0", "3.6e3", "1e3", " 3600", "3600 "),
        *("0x10", "abc", "\u0663", str(MAX_SAFE_INTEGER + 1), "9" * 100),
    ],
)
def test_parse_ttl_rejects_everything_else(value: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        headers.parse_ttl(value)
    assert_400(caught)


@given(st.integers(min_value=0, max_value=MAX_SAFE_INTEGER))
def test_parse_ttl_round_trips_integers(ttl: int) -> None:
    assert headers.parse_ttl(str(ttl)) == ttl


# ---- Stream-Expires-At ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2024-01-01T00:00:00Z", datetime(2024, 1, 1, tzinfo=UTC)),
        ("2024-01-01t00:00:00z", datetime(2024, 1, 1, tzinfo=UTC)),
        ("2024-01-01 00:00:00Z", datetime(2024, 1, 1, tzinfo=UTC)),
        ("2024-01-01T02:00:00+02:00", datetime(2024, 1, 1, tzinfo=UTC)),
        ("2023-12-31T19:30:00-04:30", datetime(2024, 1, 1, tzinfo=UTC)),
        ("2024-01-01T00:00:00.250Z", datetime(2024, 1, 1, 0, 0, 0, 250000, tzinfo=UTC)),
        ("  2024-01-01T00:00:00Z  ", datetime(2024, 1, 1, tzinfo=UTC)),
    ],
)
def test_parse_expires_at_reads_rfc3339(value: str, expected: datetime) -> None:
    assert headers.parse_expires_at(value) == pytest.approx(expected.timestamp(), abs=1e-6)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "2024-01-01",
        "2024-01-01T00:00:00",  # no offset
        "2024-01-01T00:00Z",  # no seconds
        "2024-1-1T00:00:00Z",
        "2024-01-01T00:00:00+0200",
        "2024-01-01T00:00:00 Z",
        "1704067200",
        "Mon, 01 Jan 2024 00:00:00 GMT",
        "2024-02-30T00:00:00Z",  # the shape is right, the date is not
        "2024-13-01T00:00:00Z",
        "2024-01-01T25:00:00Z",
        "2024-01-01T00:00:00+24:00",
    ],
)
def test_parse_expires_at_rejects_non_rfc3339(value: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        headers.parse_expires_at(value)
    assert_400(caught)


def test_format_expires_at_is_utc_with_milliseconds() -> None:
    moment = datetime(2024, 1, 2, 3, 4, 5, 678000, tzinfo=UTC).timestamp()
    assert headers.format_expires_at(moment) == "2024-01-02T03:04:05.678Z"
    assert headers.format_expires_at(0) == "1970-01-01T00:00:00.000Z"


# Past ~2242 a float timestamp is coarser than a microsecond, and formatting (which truncates
# to milliseconds) can then show one millisecond less than was parsed.
@given(
    st.datetimes(
        min_value=datetime(1970, 1, 1),
        max_value=datetime(2200, 1, 1),
        timezones=st.just(UTC),
    ).map(lambda d: d.replace(microsecond=d.microsecond // 1000 * 1000))
)
def test_format_then_parse_round_trips_millisecond_times(moment: datetime) -> None:
    text = headers.format_expires_at(moment.timestamp())
    assert text.endswith("Z")
    assert headers.parse_expires_at(text) == pytest.approx(moment.timestamp(), abs=1e-3)
    assert headers.format_expires_at(headers.parse_expires_at(text)) == text


@given(
    st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(9000, 1, 1)),
    st.integers(min_value=-23 * 60 - 59, max_value=23 * 60 + 59),
)
def test_parse_expires_at_honours_offsets(naive: datetime, offset_minutes: int) -> None:
    naive = naive.replace(microsecond=0)
    sign = "+" if offset_minutes >= 0 else "-"
    hours, minutes = divmod(abs(offset_minutes), 60)
    text = naive.isoformat() + f"{sign}{hours:02d}:{minutes:02d}"
    expected = (naive - timedelta(minutes=offset_minutes)).replace(tzinfo=UTC).timestamp()
    assert headers.parse_expires_at(text) == expected


@pytest.mark.parametrize("value", ["9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00"])
def test_every_accepted_expiry_can_be_formatted(value: str) -> None:
    try:
        seconds = headers.parse_expires_at(value)
    except ProtocolError as error:
        assert error.status == 400
        return
    assert headers.format_expires_at(seconds).endswith("Z")


# ---- content types ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "essence"),
    [
        ("application/json", "application/json"),
        ("Application/JSON; charset=utf-8", "application/json"),
        ("  text/plain ;charset=utf-8", "text/plain"),
        ("text/plain;a=b;c=d", "text/plain"),
        ("", ""),
    ],
)
def test_media_type_is_the_lower_case_essence(content_type: str, essence: str) -> None:
    assert headers.media_type(content_type) == essence


@pytest.mark.parametrize(
    ("content_type", "json"),
    [
        ("application/json", True),
        ("APPLICATION/JSON", True),
        ("application/json; charset=utf-8", True),
        ("application/json-seq", False),
        ("application/ndjson", False),
        ("application/vnd.api+json", False),
        ("text/json", False),
    ],
)
def test_is_json_only_for_application_json(content_type: str, json: bool) -> None:
    assert headers.is_json(content_type) is json


@pytest.mark.parametrize(
    ("content_type", "text"),
    [
        ("text/plain", True),
        ("Text/HTML; charset=utf-8", True),
        ("text/event-stream", True),
        ("application/json", True),
        ("application/json; charset=utf-8", True),
        ("application/octet-stream", False),
        ("application/ndjson", False),
        ("image/png", False),
        ("texts/plain", False),
    ],
)
def test_is_text_for_text_and_json(content_type: str, text: bool) -> None:
    assert headers.is_text(content_type) is text


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/json; charset=utf-8", "application/vnd.x+json", "a/b"],
)
def test_valid_content_types(content_type: str) -> None:
    assert headers.valid_content_type(content_type)


@pytest.mark.parametrize(
    "content_type", ["", "text", "text/", "/plain", "/", "text /plain", "text/ plain", "; a=b"]
)
def test_invalid_content_types(content_type: str) -> None:
    assert not headers.valid_content_type(content_type)


# ---- producers --------------------------------------------------------------------------


def producer_headers(pid: str | None, epoch: str | None, seq: str | None) -> dict[str, str]:
    values = {"producer-id": pid, "producer-epoch": epoch, "producer-seq": seq}
    return {k: v for k, v in values.items() if v is not None}


def test_parse_producer_none_when_all_absent() -> None:
    assert headers.parse_producer({}) is None
    assert headers.parse_producer({"content-type": "text/plain"}) is None


def test_parse_producer_reads_all_three() -> None:
    parsed = headers.parse_producer(producer_headers("writer-1", "3", "17"))
    assert parsed == Producer("writer-1", 3, 17)


def test_parse_producer_limits_are_inclusive() -> None:
    top = str(MAX_SAFE_INTEGER)
    assert headers.parse_producer(producer_headers("p", top, top)) == Producer(
        "p", MAX_SAFE_INTEGER, MAX_SAFE_INTEGER
    )
    assert headers.parse_producer(producer_headers("p", "0", "0")) == Producer("p", 0, 0)


@pytest.mark.parametrize(
    ("pid", "epoch", "seq"),
    [
        ("p", None, None),
        (None, "0", None),
        (None, None, "0"),
        ("p", "0", None),
        ("p", None, "0"),
        (None, "0", "0"),
    ],
)
def test_parse_producer_needs_all_three_together(
    pid: str | None, epoch: str | None, seq: str | None
) -> None:
    with pytest.raises(ProtocolError) as caught:
        headers.parse_producer(producer_headers(pid, epoch, seq))
    assert_400(caught)


@pytest.mark.parametrize("pid", ["", " ", "\t"])
def test_parse_producer_rejects_empty_id(pid: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        headers.parse_producer(producer_headers(pid, "0", "0"))
    assert_400(caught)


@pytest.mark.parametrize(
    "number", ["", "-1", "+1", "1.0", "1e3", "01", "abc", str(MAX_SAFE_INTEGER + 1), "\u0661"]
)
@pytest.mark.parametrize("field", ["epoch", "seq"])
def test_parse_producer_rejects_bad_integers(number: str, field: str) -> None:
    values = {"epoch": "0", "seq": "0", field: number}
    with pytest.raises(ProtocolError) as caught:
        headers.parse_producer(producer_headers("p", values["epoch"], values["seq"]))
    assert_400(caught)


@given(
    st.text(min_size=1).filter(str.strip),
    st.integers(min_value=0, max_value=MAX_SAFE_INTEGER),
    st.integers(min_value=0, max_value=MAX_SAFE_INTEGER),
)
def test_parse_producer_round_trips(pid: str, epoch: int, seq: int) -> None:
    parsed = headers.parse_producer(producer_headers(pid, str(epoch), str(seq)))
    assert parsed == Producer(pid, epoch, seq)


# ---- Stream-Fork-Sub-Offset -------------------------------------------------------------


@pytest.mark.parametrize(("value", "number"), [("0", 0), ("7", 7), (str(2**53 - 1), 2**53 - 1)])
def test_parse_sub_offset_accepts_non_negative_integers(value: str, number: int) -> None:
    assert headers.parse_sub_offset(value) == number


@pytest.mark.parametrize("value", ["-1", "1.5", "x", "", "07", str(2**53)])
def test_parse_sub_offset_rejects_the_rest(value: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        headers.parse_sub_offset(value)
    assert_400(caught)


# ---- numbers longer than Python converts -------------------------------------------------

# Python refuses int() of more than 4300 digits with a ValueError; these once answered 500.
OVERLONG = ["9" * 17, "1" + "0" * 4300, "9" * 4301, "7" * 100_000, " " + "9" * 5000 + " "]


def parse_one(header: str, value: str) -> int:
    """`value` parsed as `header` (with valid values for its companions)."""
    if header == "Stream-TTL":
        return headers.parse_ttl(value)
    if header == "Stream-Fork-Sub-Offset":
        return headers.parse_sub_offset(value)
    stamp = {"producer-id": "p", "producer-epoch": "0", "producer-seq": "0"}
    stamp[header.lower()] = value
    producer = headers.parse_producer(stamp)
    assert producer is not None
    return producer.epoch if header == "Producer-Epoch" else producer.seq


@pytest.mark.parametrize("value", OVERLONG, ids=lambda v: f"{len(v)}-chars")
@pytest.mark.parametrize(
    "header", ["Stream-TTL", "Stream-Fork-Sub-Offset", "Producer-Epoch", "Producer-Seq"]
)
def test_overlong_numbers_are_400_not_a_conversion_error(header: str, value: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_one(header, value)
    assert_400(caught)
    assert len(caught.value.detail) < 200  # the value is not echoed whole


@pytest.mark.parametrize(
    "header", ["Stream-TTL", "Stream-Fork-Sub-Offset", "Producer-Epoch", "Producer-Seq"]
)
def test_the_longest_accepted_number_has_sixteen_digits(header: str) -> None:
    top = str(MAX_SAFE_INTEGER)
    assert len(top) == 16
    assert parse_one(header, top) == MAX_SAFE_INTEGER
