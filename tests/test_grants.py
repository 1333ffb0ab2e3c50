"""Grants from a token's scope and the grant each request needs: pure, checked against a
regular-expression oracle built with `re.escape`."""

from __future__ import annotations

import itertools
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from streams.protocol import grants
from streams.protocol.errors import ProtocolError
from streams.protocol.grants import Grants, Need, matches, needed, parse_scope

LIMIT = 1024

# Names and patterns from a small alphabet, so that segments collide often; regex
# metacharacters included, to show they stay literal.
segment_text = st.text(alphabet="ab.+?()[]\\^$|{}", max_size=4)
names = st.lists(segment_text, min_size=1, max_size=5).map("/".join)
pattern_segments = st.one_of(
    segment_text,
    st.just("*"),
    st.just("**"),
    st.lists(st.sampled_from(["a", "b", ".", "*", "(", "["]), min_size=1, max_size=5).map("".join),
)
patterns = st.lists(pattern_segments, min_size=1, max_size=5).map("/".join)


def oracle(pattern: str, name: str) -> bool:
    """The glob as a regular expression over "/" + name: each segment is "/" + its text (a
    `*` there is `[^/]*`, the rest escaped), and a `**` segment is any number of segments."""
    regex = ""
    for segment in pattern.split("/"):
        if segment == "**":
            regex += "(?:/[^/]*)*"
        else:
            regex += "/" + "[^/]*".join(re.escape(part) for part in segment.split("*"))
    return re.fullmatch(regex, "/" + name, re.DOTALL) is not None


@given(patterns, names)
def test_the_glob_matches_as_the_oracle_says(pattern: str, name: str) -> None:
    assert matches(pattern, name) == oracle(pattern, name)


def test_stars_within_one_segment_match_as_the_oracle_says() -> None:
    """Every pattern over "ab*" against every name over "ab", up to 5 characters each: the
    overlaps that a random sample rarely hits (a*a against a, a*ab*b against abb)."""
    patterns = ["".join(chars) for n in range(6) for chars in itertools.product("ab*", repeat=n)]
    texts = ["".join(chars) for n in range(6) for chars in itertools.product("ab", repeat=n)]
    for pattern in patterns:
        for text in texts:
            assert matches(pattern, text) == oracle(pattern, text), (pattern, text)


def test_segments_match_as_the_oracle_says() -> None:
    """Every pattern of up to 4 segments from a, *, ** and a* against every name of up to 4
    segments from a, b and ab: `**` takes zero or more segments wherever it stands."""
    patterns = [
        "/".join(segments)
        for n in range(1, 5)
        for segments in itertools.product(["a", "*", "**", "a*"], repeat=n)
    ]
    texts = [
        "/".join(segments)
        for n in range(1, 5)
        for segments in itertools.product(["a", "b", "ab"], repeat=n)
    ]
    for pattern in patterns:
        for text in texts:
            assert matches(pattern, text) == oracle(pattern, text), (pattern, text)


@given(names)
def test_a_pattern_without_stars_matches_only_itself(name: str) -> None:
    assert matches(name, name)
    assert not matches(name, name + "x")
    assert not matches(name + "x", name)


@given(st.lists(segment_text, min_size=2, max_size=5).map("/".join))
def test_a_star_never_crosses_a_slash_and_a_double_star_does(name: str) -> None:
    assert not matches("*", name)
    assert matches("**", name)
    first, _, rest = name.partition("/")
    assert matches(f"{first}/**", name)
    assert matches(f"{first}/*", name) == ("/" not in rest)


@pytest.mark.parametrize(
    ("pattern", "name", "expected"),
    [
        ("chat/room-1", "chat/room-1", True),
        ("chat/room-1", "chat/room-10", False),
        ("chat/*", "chat/room-1", True),
        ("chat/*", "chat/room-1/thread", False),
        ("chat/*", "chat", False),
        ("chat/**", "chat", True),  # zero segments
        ("chat/**", "chat/a/b/c", True),
        ("chat/**", "chatter", False),
        ("chat/**/log", "chat/log", True),
        ("chat/**/log", "chat/a/b/log", True),
        ("chat/**/log", "chat/a/b/logs", False),
        ("**", "anything/at/all", True),
        ("room-*", "room-7", True),
        ("room-*-log", "room-7-log", True),
        ("room-*-log", "room-7/x-log", False),
        ("a.c", "abc", False),  # no regex: "." is a dot
        ("a+", "aa", False),
        ("[ab]", "a", False),
        ("[ab]", "[ab]", True),
        ("a?", "ab", False),
        ("(.*)", "xyz", False),
    ],
)
def test_patterns(pattern: str, name: str, expected: bool) -> None:
    assert matches(pattern, name) == expected


def test_scopes_hold_read_and_write_grants_and_nothing_else() -> None:
    granted = parse_scope("read:chat/** write:chat/room-1 openid profile read: write:")
    assert granted == Grants(read=(("chat", "**"),), write=(("chat", "room-1"),))
    assert granted.allows(Need("read", "chat/room-2"))
    assert granted.allows(Need("write", "chat/room-1"))
    assert not granted.allows(Need("write", "chat/room-2"))
    assert parse_scope("") == Grants()
    assert parse_scope("  read:a\twrite:b\n") == Grants(read=(("a",),), write=(("b",),))


def test_write_implies_nothing_about_read() -> None:
    writer = parse_scope("write:s")
    assert writer.allows(Need("write", "s"))
    assert not writer.allows(Need("read", "s"))
    reader = parse_scope("read:s")
    assert not reader.allows(Need("write", "s"))


@pytest.mark.parametrize(
    ("method", "action"),
    [("GET", "read"), ("HEAD", "read"), ("PUT", "write"), ("POST", "write"), ("DELETE", "write")],
)
def test_each_method_needs_read_or_write(method: str, action: str) -> None:
    assert needed(method, "s", {}, LIMIT) == (Need(action, "s"),)  # type: ignore[arg-type]


def test_preflights_and_other_methods_need_nothing() -> None:
    assert needed("OPTIONS", "s", {}, LIMIT) == ()
    assert needed("PATCH", "s", {}, LIMIT) == ()


def test_a_fork_also_needs_read_on_its_source() -> None:
    headers = {"stream-forked-from": "/v1/stream/chat/room-1"}
    assert needed("PUT", "copy", headers, LIMIT) == (
        Need("write", "copy"),
        Need("read", "chat/room-1", source=True),
    )
    assert needed("POST", "copy", headers, LIMIT) == (Need("write", "copy"),)
    with pytest.raises(ProtocolError) as caught:
        needed("PUT", "copy", {"stream-forked-from": "/v1/stream/"}, LIMIT)
    assert caught.value.status == 400


def test_errors_say_why_without_echoing_the_name() -> None:
    missing = grants.unauthorized("no token", invalid=False)
    assert (missing.status, missing.code) == (401, "UNAUTHORIZED")
    assert missing.headers == {"WWW-Authenticate": "Bearer"}
    invalid = grants.unauthorized("expired")
    assert invalid.headers == {"WWW-Authenticate": 'Bearer error="invalid_token"'}
    refused = grants.forbidden(Need("read", 'a"b\r\nX: y', source=True))
    assert (refused.status, refused.code) == (403, "FORBIDDEN")
    assert refused.detail == "the token does not grant read on the fork source"
    assert refused.headers == {"WWW-Authenticate": 'Bearer error="insufficient_scope"'}
