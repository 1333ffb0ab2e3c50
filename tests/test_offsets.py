"""Offsets: fixed-width tokens whose string order is their numeric order."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.protocol import offsets
from streams.protocol.errors import ProtocolError
from streams.protocol.offsets import Sentinel

MAX = 10**16 - 1
positions = st.integers(min_value=0, max_value=MAX)


def test_encode_is_two_zero_padded_16_digit_fields() -> None:
    assert offsets.encode(0) == "0000000000000000_0000000000000000"
    assert offsets.encode(42) == "0000000000000000_0000000000000042"
    assert offsets.encode(MAX) == "0000000000000000_9999999999999999"


@pytest.mark.parametrize("position", [-1, MAX + 1, 10**20])
def test_encode_rejects_positions_out_of_range(position: int) -> None:
    with pytest.raises(ValueError):
        offsets.encode(position)


@given(positions)
def test_decode_inverts_encode(position: int) -> None:
    assert offsets.decode(offsets.encode(position)) == position


@given(positions, positions)
def test_string_order_is_numeric_order(a: int, b: int) -> None:
    ta, tb = offsets.encode(a), offsets.encode(b)
    assert (ta < tb) == (a < b)
    assert (ta == tb) == (a == b)
    assert len(ta) == len(tb) == 33


@given(positions)
def test_minted_tokens_are_url_safe_and_never_sentinels(position: int) -> None:
    token = offsets.encode(position)
    assert token not in ("-1", "now")
    assert not set(token) & set(",&=?/")
    assert set(token) <= set("0123456789_")


@pytest.mark.parametrize(
    "token",
    [
        "",
        "0",
        "-1",
        "now",
        "0000000000000000",
        "0000000000000000_",
        "0000000000000000_000000000000001",  # 15 digits
        "0000000000000000_00000000000000001",  # 17 digits
        "0000000000000001_0000000000000000",  # non-zero segment
        "0000000000000000-0000000000000000",
        "0000000000000000_000000000000000a",
        "0000000000000000_+000000000000001",
        "0000000000000000_-000000000000001",
        " 0000000000000000_0000000000000000",
        "0000000000000000_0000000000000000 ",
        "0000000000000000_0000000000000000\n",
        "0000000000000000_0000000000000000_0000000000000000",
    ],
)
def test_decode_rejects_tokens_the_server_never_minted(token: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        offsets.decode(token)
    assert caught.value.status == 400
    assert caught.value.code == "INVALID_OFFSET"


def test_decode_error_truncates_long_tokens() -> None:
    with pytest.raises(ProtocolError) as caught:
        offsets.decode("x" * 10_000)
    assert len(caught.value.detail) < 200


@pytest.mark.parametrize(
    "digits",
    [
        "\u0660" * 15 + "\u0661",  # ARABIC-INDIC DIGIT ZERO/ONE
        "\uff10" * 15 + "\uff11",  # FULLWIDTH DIGIT ZERO/ONE
    ],
    ids=["arabic-indic", "fullwidth"],
)
def test_decode_rejects_non_ascii_digits(digits: str) -> None:
    with pytest.raises(ProtocolError):
        offsets.decode("0000000000000000_" + digits)


def test_parse_recognizes_sentinels() -> None:
    assert offsets.parse("-1") is Sentinel.START
    assert offsets.parse("now") is Sentinel.NOW


@given(positions)
def test_parse_decodes_minted_tokens(position: int) -> None:
    assert offsets.parse(offsets.encode(position)) == position


@pytest.mark.parametrize("token", ["NOW", "Now", "-2", "-01", " -1", "now ", "1"])
def test_parse_sentinels_are_exact(token: str) -> None:
    with pytest.raises(ProtocolError) as caught:
        offsets.parse(token)
    assert caught.value.status == 400


@pytest.mark.parametrize("length", [17, 4301, 100_000])
def test_overlong_offsets_are_400(length: int) -> None:
    for token in ("9" * length, "0000000000000000_" + "9" * length, "0" * length + "_1"):
        with pytest.raises(ProtocolError) as caught:
            offsets.parse(token)
        assert caught.value.status == 400
