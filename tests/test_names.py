"""Stream names from request paths and Stream-Forked-From: strict UTF-8, exact comparison."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.protocol import names
from streams.protocol.errors import ProtocolError

LIMIT = 1024


def from_raw(raw_path: bytes) -> str:
    return names.from_path(names.request_path(raw_path, "ignored"), LIMIT)


def status(call: object, *args: object) -> int:
    with pytest.raises(ProtocolError) as caught:
        call(*args)  # type: ignore[operator]
    return caught.value.status


# ---- request paths ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "name"),
    [
        (b"/v1/stream/a", "a"),
        (b"/v1/stream/a/b/c", "a/b/c"),
        (b"/v1/stream/a%2Fb", "a/b"),  # percent-encoding does not matter
        (b"/v1/stream/%41", "A"),
        (b"/v1/stream/caf%C3%A9", "caf\u00e9"),
        (b"/v1/stream/cafe%CC%81", "cafe\u0301"),
        (b"/v1/stream/a%0Ab%0Dc", "a\nb\rc"),  # allowed; logged escaped
        (b"/v1/stream/s?offset=-1", "s"),  # a raw path with its query string
    ],
)
def test_names_are_the_percent_decoded_path(raw: bytes, name: str) -> None:
    assert from_raw(raw) == name


@pytest.mark.parametrize(
    "raw",
    [
        b"/v1/stream/a%ff",
        b"/v1/stream/a%fe",
        b"/v1/stream/%C3",  # truncated sequence
        b"/v1/stream/%C0%AF",  # overlong encoding of "/"
        b"/v1/stream/%ED%A0%80",  # an encoded surrogate
        b"/v1/stream/%F4%90%80%80",  # past U+10FFFF
        b"/v1/stream/ok/%80",
    ],
)
def test_names_that_are_not_utf8_are_400(raw: bytes) -> None:
    assert status(from_raw, raw) == 400


def test_distinct_invalid_bytes_no_longer_meet_as_one_name() -> None:
    """`a%ff` and `a%fe` were both decoded to `a\ufffd`: one stream for two names."""
    assert status(from_raw, b"/v1/stream/a%ff") == 400
    assert status(from_raw, b"/v1/stream/a%fe") == 400
    assert from_raw(b"/v1/stream/a%EF%BF%BD") == "a\ufffd"  # U+FFFD itself is a fine name


def test_names_compare_by_code_point_without_normalization() -> None:
    composed, decomposed = "caf\u00e9", "cafe\u0301"
    assert unicodedata.normalize("NFC", decomposed) == composed
    assert from_raw(b"/v1/stream/caf%C3%A9") == composed
    assert from_raw(b"/v1/stream/cafe%CC%81") == decomposed
    assert composed != decomposed
    assert from_raw(b"/v1/stream/A") != from_raw(b"/v1/stream/a")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"/elsewhere", 404),
        (b"/v1/stream/", 404),
        (b"/v1/stream/__ds", 404),
        (b"/v1/stream/__ds/subscriptions", 404),
        (b"/v1/stream/nul%00name", 400),
        (b"/v1/stream/" + b"y" * (LIMIT + 1), 400),
        (b"/v1/stream/" + b"%C3%A9" * (LIMIT // 2) + b"x", 400),  # the limit counts bytes
    ],
)
def test_other_path_rules(raw: bytes, expected: int) -> None:
    assert status(from_raw, raw) == expected


def test_the_longest_name_is_accepted() -> None:
    assert from_raw(b"/v1/stream/" + b"%C3%A9" * (LIMIT // 2)) == "\u00e9" * (LIMIT // 2)


def test_without_a_raw_path_the_decoded_path_is_used() -> None:
    """ASGI's raw_path is optional; the decoded path is then used as it is, not decoded twice."""
    assert names.request_path(None, "/v1/stream/100%25") == b"/v1/stream/100%25"
    assert names.from_path(names.request_path(None, "/v1/stream/caf\u00e9"), LIMIT) == "caf\u00e9"


@given(st.text(min_size=1).filter(lambda t: "\x00" not in t and not t.startswith("__ds")))
def test_any_utf8_name_round_trips_through_percent_encoding(name: str) -> None:
    raw = "".join(f"%{byte:02X}" for byte in name.encode("utf-8", "surrogatepass"))
    path = names.request_path(b"/v1/stream/" + raw.encode(), "")
    if any("\ud800" <= c <= "\udfff" for c in name):
        assert status(names.from_path, path, 10**6) == 400
    else:
        assert names.from_path(path, 10**6) == name


# ---- Stream-Forked-From -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "name"),
    [
        ("src", "src"),
        ("/src", "src"),
        ("/v1/stream/src", "src"),
        ("  /v1/stream/a/b  ", "a/b"),
        ("/v1/stream/caf%C3%A9", "caf\u00e9"),
        ("caf\u00c3\u00a9", "caf\u00e9"),  # raw UTF-8 bytes, as the latin-1 header decodes them
        ("caf\u00c3\u00a0", "caf\u00e0"),  # ends in 0xa0, which str.strip() would remove
        ("\u00c3\u0085\t", "\u00c5"),  # ends in 0x85 (NEL to str.strip())
        ("a%2Fb", "a/b"),
    ],
)
def test_fork_sources_follow_the_path_rules(header: str, name: str) -> None:
    assert names.from_fork_header(header, LIMIT) == name


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("/v1/stream/a%ff", 400),
        ("a\u00ff", 400),  # a raw 0xff byte
        ("", 400),
        ("/", 400),
        ("/v1/stream/", 400),
        ("__ds/x", 404),
        ("nul%00", 400),
        ("y" * (LIMIT + 1), 400),
        ("\u0100", 400),  # cannot have come from a latin-1 header
    ],
)
def test_bad_fork_sources(header: str, expected: int) -> None:
    assert status(names.from_fork_header, header, LIMIT) == expected


# ---- the base path (DS_HTTP__STREAM_BASE_PATH) ---------------------------------------------


def test_the_default_base_path_also_has_the_plural_prefix() -> None:
    assert names.prefixes("/v1/stream") == (b"/v1/stream/", b"/v1/streams/")
    assert names.prefixes("/api/s") == (b"/api/s/",)
    under = names.prefixes("/v1/stream")
    assert names.from_path(b"/v1/streams/a/b", LIMIT, under) == "a/b"
    assert names.from_path(b"/v1/stream/s", LIMIT, under) == "s"  # not "/s" of the plural
    assert names.from_fork_header("/v1/streams/a%2Fb", LIMIT, under) == "a/b"
    assert status(names.from_path, b"/v1/streams/a", LIMIT) == 404  # only when asked


def test_a_configured_base_path_replaces_the_default() -> None:
    under = names.prefixes("/api/s")
    assert names.from_path(b"/api/s/x", LIMIT, under) == "x"
    assert status(names.from_path, b"/v1/stream/x", LIMIT, under) == 404
    assert status(names.from_path, b"/api/sx", LIMIT, under) == 404
    assert status(names.from_path, b"/api/s/__ds/x", LIMIT, under) == 404
    assert names.from_fork_header("/api/s/x", LIMIT, under) == "x"
    assert names.from_fork_header("x", LIMIT, under) == "x"
