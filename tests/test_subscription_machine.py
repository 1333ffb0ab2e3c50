"""The pure subscription core without a server: configuration, globs, the delivery state
machine, tokens, signing keys and webhook URL rules (PROTOCOL.md sections 6, 7, 12.8-12.10)."""

from __future__ import annotations

import base64
import itertools
import json
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from streams.protocol import offsets, wake_tokens
from streams.protocol import subscription_views as views
from streams.protocol.errors import ProtocolError
from streams.protocol.subscription_config import Config, Limits, glob_match, parse_config
from streams.protocol.subscriptions import BEFORE_FIRST, Clock, Subscription
from streams.protocol.webhook_signing import KeyRing
from streams.protocol.webhook_urls import target

KEY = b"k" * 32
LIMITS = Limits()


def clock(now: float = 1000.0, jitter: float = 0.0, ttl: float = 3600.0) -> Clock:
    ids = itertools.count(1)
    return Clock(now, lambda: f"w_{next(ids)}", KEY, ttl, jitter)


def config(body: dict[str, Any]) -> Config:
    return parse_config(json.dumps(body).encode(), LIMITS)


def webhook(pattern: str = "events/*") -> Subscription:
    conf = config(
        {"type": "webhook", "pattern": pattern, "webhook": {"url": "https://x.example/h"}}
    )
    return Subscription("s1", "inc1", conf, 0.0, "http://h/v1/stream")


def pull() -> Subscription:
    conf = config({"type": "pull-wake", "pattern": "events/*", "wake_stream": "wake/pool"})
    return Subscription("p1", "inc1", conf, 0.0, "http://h/v1/stream")


def code(info: pytest.ExceptionInfo[ProtocolError]) -> tuple[int, str]:
    return info.value.status, info.value.code


def claims_of(token: str | None, now: float = 1000.0) -> wake_tokens.Claims:
    assert token is not None
    return wake_tokens.verify(KEY, token, now)


# ---- configuration and globs -----------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "path", "matches"),
    [
        ("events/*", "events/a", True),
        ("events/*", "events/a/b", False),
        ("events/*", "events", False),
        ("events/**", "events", True),
        ("events/**", "events/a/b/c", True),
        ("**", "anything/at/all", True),
        ("a/**/z", "a/z", True),
        ("a/**/z", "a/b/c/z", True),
        ("a/**/z", "a/b/c/y", False),
        ("*/x/**", "q/x", True),
        ("**/b/**/d", "a/b/c/d", True),
        ("**/b/**/d", "a/c/d", False),
        ("/events/*/", "events/a", True),
    ],
)
def test_glob_rules(pattern: str, path: str, matches: bool) -> None:
    assert glob_match(pattern, path) is matches


def test_many_double_stars_do_not_recurse() -> None:
    assert glob_match("/".join(["**"] * 500 + ["x"]), "/".join(["a"] * 500 + ["x"]))


def test_config_identity_is_normalized() -> None:
    a = config({"type": "pull-wake", "streams": ["b", "/a/", "b"], "wake_stream": "w"})
    b = config({"type": "pull-wake", "streams": ["a", "b"], "wake_stream": "/w"})
    assert a.streams == ("a", "b")
    assert a.digest() == b.digest()
    c = config(
        {"type": "pull-wake", "streams": ["a", "b"], "wake_stream": "w", "lease_ttl_ms": 2000}
    )
    assert c.digest() != a.digest()
    assert Config.of_record(a.record()) == a


@pytest.mark.parametrize(
    "body",
    [
        {"type": "nope", "pattern": "x"},
        {"type": "webhook", "webhook": {"url": "https://x.example"}},  # no pattern or streams
        {"type": "webhook", "pattern": "x"},  # no URL
        {"type": "pull-wake", "pattern": "x"},  # no wake stream
        {"type": "pull-wake", "pattern": "x", "wake_stream": "w", "lease_ttl_ms": 999},
        {"type": "pull-wake", "pattern": "x", "wake_stream": "w", "lease_ttl_ms": 600_001},
        {"type": "pull-wake", "pattern": "x", "wake_stream": "w", "lease_ttl_ms": True},
        {"type": "pull-wake", "streams": "x", "wake_stream": "w"},
        {"type": "pull-wake", "streams": [1], "wake_stream": "w"},
        {"type": "pull-wake", "pattern": "__ds/x", "wake_stream": "w"},
        {"type": "pull-wake", "pattern": "x", "wake_stream": "w", "description": 5},
    ],
)
def test_bad_configurations_are_400(body: dict[str, Any]) -> None:
    with pytest.raises(ProtocolError) as info:
        config(body)
    assert code(info) == (400, "INVALID_REQUEST")


def test_a_body_that_is_not_an_object_is_400() -> None:
    for raw in (b"[1]", b"{", b"\xff"):
        with pytest.raises(ProtocolError) as info:
            parse_config(raw, LIMITS)
        assert code(info) == (400, "INVALID_REQUEST")


# ---- webhook delivery ------------------------------------------------------------------


def test_a_new_matching_stream_is_linked_before_its_data_and_wakes() -> None:
    sub = webhook()
    assert sub.committed("events/a", 10, 100)
    assert sub.links["events/a"].acked == BEFORE_FIRST
    assert not sub.committed("other/a", 10, 100)
    tails = {"events/a": 10}
    assert sub.maybe_wake(tails, clock())
    wake = sub.wake
    assert wake is not None and wake.generation == 1 and wake.snapshot == {"events/a": 10}
    assert sub.due(1000.0) == "deliver"
    assert not sub.maybe_wake(tails, clock())  # one wake in flight at a time
    payload = views.payload(sub, tails)
    assert payload["callback_url"] == "http://h/v1/stream/__ds/subscriptions/s1/callback"
    assert payload["streams"][0]["has_pending"] is True
    assert claims_of(payload["callback_token"]).generation == 1


def test_an_empty_new_stream_is_not_pending() -> None:
    sub = webhook()
    sub.committed("events/a", 0, 100)
    assert not sub.maybe_wake({"events/a": 0}, clock())


def test_done_acks_the_snapshot_and_wakes_again_for_what_came_after() -> None:
    sub = webhook()
    sub.committed("events/a", 10, 100)
    sub.maybe_wake({"events/a": 10}, clock())
    sub.delivered(1, True, clock(), {"events/a": 25})  # 15 bytes arrived meanwhile
    assert sub.links["events/a"].acked == 10
    assert sub.wake is not None and sub.wake.generation == 2
    sub.delivered(1, True, clock(), {"events/a": 25})  # stale: changes nothing
    assert sub.wake.generation == 2 and sub.links["events/a"].acked == 10


def test_callback_acks_fences_and_extends_the_lease() -> None:
    sub = webhook()
    sub.committed("events/a", 10, 100)
    tails = {"events/a": 10}
    sub.maybe_wake(tails, clock())
    sub.delivered(1, False, clock(now=1000.0), tails)
    assert sub.wake is not None and sub.wake.lease_until == 1030.0
    claims = claims_of(sub.wake.token)
    beat = {"wake_id": "w_1", "generation": 1}
    assert sub.ack(claims, beat, tails, clock(now=1010.0)) == {"ok": True, "next_wake": False}
    assert sub.wake.lease_until == 1040.0
    for bad in ({"wake_id": "w_2", "generation": 1}, {"wake_id": "w_1", "generation": 2}):
        with pytest.raises(ProtocolError) as info:
            sub.ack(claims, bad, tails, clock())
        assert code(info) == (409, "FENCED")
    offset = offsets.encode(10)
    done = {**beat, "acks": [{"stream": "events/a", "offset": offset}], "done": True}
    assert sub.ack(claims, done, tails, clock()) == {"ok": True, "next_wake": False}
    assert sub.wake is None and sub.links["events/a"].acked == 10
    with pytest.raises(ProtocolError) as info:
        sub.ack(claims, done, tails, clock())
    assert code(info) == (409, "FENCED")


@pytest.mark.parametrize(
    ("ack", "why"),
    [
        ({"stream": "events/zz", "offset": offsets.encode(1)}, "unknown stream"),
        ({"stream": "events/a", "offset": "-1"}, "malformed"),
        ({"stream": "events/a", "offset": offsets.encode(11)}, "beyond the tail"),
        ({"stream": "events/a", "offset": offsets.encode(4)}, "goes back"),
        ({"stream": "events/a"}, "no offset"),
    ],
)
def test_bad_acks_are_409_and_change_nothing(ack: dict[str, Any], why: str) -> None:
    sub = webhook()
    sub.committed("events/a", 10, 100)
    sub.links["events/a"].acked = 5
    sub.maybe_wake({"events/a": 10}, clock())
    assert sub.wake is not None
    before = sub.record()
    body = {"wake_id": "w_1", "generation": 1, "acks": [ack], "done": True}
    with pytest.raises(ProtocolError) as info:
        sub.ack(claims_of(sub.wake.token), body, {"events/a": 10}, clock())
    assert code(info) == (409, "INVALID_OFFSET"), why
    assert sub.record() == before


def test_a_token_of_another_incarnation_is_refused() -> None:
    sub = webhook()
    sub.committed("events/a", 10, 100)
    sub.maybe_wake({"events/a": 10}, clock())
    assert sub.wake is not None
    claims = claims_of(sub.wake.token)
    again = Subscription("s1", "inc2", sub.config, 0.0, sub.base_url, sub.links, 0, sub.wake)
    with pytest.raises(ProtocolError) as info:
        again.ack(claims, {"wake_id": "w_1", "generation": 1}, {}, clock())
    assert code(info) == (401, "TOKEN_INVALID")


def test_retries_back_off_from_1_to_60_seconds_with_20_percent_jitter() -> None:
    sub = webhook()
    sub.committed("events/a", 10, 100)
    sub.maybe_wake({"events/a": 10}, clock())
    delays = []
    for jitter in (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, -1.0):
        sub.failed(1, clock(now=0.0, jitter=jitter))
        assert sub.wake is not None and sub.wake.attempt_at is not None
        delays.append(sub.wake.attempt_at)
    assert delays == [1, 2, 4, 8, 16, 32, 60, 72, 48]
    assert sub.status == "failed"
    assert sub.due(47.0) is None and sub.due(48.0) == "deliver"
    sub.delivered(1, False, clock(), {"events/a": 10})
    assert sub.status == "active"


def test_a_lease_that_runs_out_wakes_again_if_work_is_pending() -> None:
    sub = webhook()
    sub.committed("events/a", 10, 100)
    tails = {"events/a": 10}
    sub.maybe_wake(tails, clock())
    sub.delivered(1, False, clock(now=0.0), tails)
    assert sub.deadline() == 30.0
    sub.tick(tails, clock(now=29.9))
    assert sub.wake is not None and sub.wake.generation == 1
    sub.tick(tails, clock(now=30.0))
    assert sub.wake is not None and sub.wake.generation == 2


def test_a_deleted_stream_drops_its_glob_link_and_resets_an_explicit_one() -> None:
    sub = webhook()
    sub.committed("events/a", 10, 100)
    sub.link("events/b", "explicit", 7, 100)
    sub.link("events/b", "glob", 7, 100)
    assert sub.committed("events/a", None, 100) and "events/a" not in sub.links
    assert sub.committed("events/b", None, 100)
    assert sub.links["events/b"].kinds == {"explicit"}
    assert sub.links["events/b"].acked == BEFORE_FIRST


def test_links_are_bounded_and_the_wake_stream_is_never_linked() -> None:
    sub = pull()
    assert not sub.link("wake/pool", "explicit", 0, 100)
    assert sub.link("a", "explicit", 0, 1)
    assert not sub.link("b", "explicit", 0, 1)


def test_records_round_trip() -> None:
    sub = webhook()
    sub.committed("events/a", 10, 100)
    sub.maybe_wake({"events/a": 10}, clock())
    sub.failed(1, clock())
    again = Subscription.of_record(json.loads(json.dumps(sub.record())))
    assert again.record() == sub.record()


# ---- pull-wake -------------------------------------------------------------------------


def test_claim_ack_release() -> None:
    sub = pull()
    tails = {"events/a": 10}
    with pytest.raises(ProtocolError) as info:
        sub.claim("w1", tails, clock())
    assert code(info) == (409, "NO_PENDING_WORK")
    sub.committed("events/a", 10, 100)
    assert sub.maybe_wake(tails, clock())
    assert sub.due(0.0) == "post"
    event = views.wake_event(sub, 1.5, tails)
    assert event == {
        "type": "wake",
        "subscription_id": "p1",
        "stream": "events/a",
        "generation": 1,
        "ts": 1500,
    }
    sub.posted(1)
    assert sub.due(0.0) is None
    body = {"wake_id": "w_1", "generation": 1}
    with pytest.raises(ProtocolError) as info:  # not claimed yet: nothing to ack
        sub.ack(wake_tokens.Claims("p1", "inc1", 1, 2000.0), body, tails, clock())
    assert code(info) == (409, "FENCED")
    claimed = sub.claim("w1", tails, clock(now=1000.0))
    assert claimed["generation"] == 1 and claimed["lease_ttl_ms"] == 30_000
    with pytest.raises(ProtocolError) as info:
        sub.claim("w2", tails, clock())
    assert code(info) == (409, "ALREADY_CLAIMED")
    assert info.value.fields == {"current_holder": "w1", "generation": 1}
    claims = claims_of(claimed["token"])
    sub.release(claims, body, {"events/a": 10}, clock())
    assert sub.wake is not None and sub.wake.generation == 2  # work still pending
    with pytest.raises(ProtocolError) as info:
        sub.release(claims, body, tails, clock())
    assert code(info) == (409, "FENCED")


def test_a_claim_issues_the_wake_when_none_is_in_flight() -> None:
    sub = pull()
    sub.committed("events/a", 10, 100)
    claimed = sub.claim("w1", {"events/a": 10}, clock())
    assert claimed["generation"] == 1
    assert sub.wake is not None and sub.wake.posted  # the claimer needs no wake event


# ---- tokens, signing keys, URLs --------------------------------------------------------


def test_tokens_expire_and_do_not_verify_with_another_key() -> None:
    token = wake_tokens.mint(KEY, wake_tokens.Claims("s", "i", 3, 100.0))
    assert wake_tokens.verify(KEY, token, 100.0).generation == 3
    for key, now, expected in ((KEY, 100.5, "TOKEN_EXPIRED"), (b"x" * 32, 0.0, "TOKEN_INVALID")):
        with pytest.raises(ProtocolError) as info:
            wake_tokens.verify(key, token, now)
        assert code(info) == (401, expected)
    for bad in ("", "abc", token + "x", "." + token.split(".")[1]):
        with pytest.raises(ProtocolError):
            wake_tokens.verify(KEY, bad, 0.0)


def test_signatures_verify_with_the_published_key_and_rotation_keeps_old_keys() -> None:
    ring = KeyRing.new(b"\x01" * 32, KEY, 0.0)
    kid = ring.active.kid
    assert kid.startswith("ds_") and kid == KeyRing.decode(ring.encode()).active.kid
    header = ring.sign(b'{"a":1}', 1234.9)
    t, k, sig = (part.split("=", 1)[1] for part in header.split(","))
    assert (t, k) == ("1234", kid)
    jwk = ring.jwks()["keys"][0]
    public = Ed25519PublicKey.from_public_bytes(base64.urlsafe_b64decode(jwk["x"] + "="))
    public.verify(base64.urlsafe_b64decode(sig + "=="), b'1234.{"a":1}')
    ring.rotate(b"\x02" * 32, 100.0, publish=50.0)
    assert [key["kid"] for key in ring.jwks()["keys"]] == [kid, ring.active.kid]
    assert ring.active.kid != kid
    ring.rotate(b"\x03" * 32, 160.0, publish=50.0)  # the first retired 60 s ago: gone
    assert kid not in [key["kid"] for key in ring.jwks()["keys"]]
    assert len(ring.jwks()["keys"]) == 2
    assert ring.due(160.0 + 10, 10) and not ring.due(160.0 + 9, 10) and not ring.due(1e9, 0)


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.1/hook",
        "https://10.0.0.1/hook",
        "https://192.168.1.1/",
        "https://172.16.0.1/",
        "https://169.254.169.254/latest/meta-data",
        "https://127.0.0.1/",
        "https://[::1]/",
        "https://[fd00::1]/",
        "https://[fe80::1]/",
        "https://[::ffff:10.0.0.1]/",
        "https://0.0.0.0/",
        "https://100.64.0.1/",
        "https://localhost/",
        "https://app.localhost/",
        "http://example.com/",
        "http://2130706433/",
        "http://127.0.1.1/",
        "ftp://example.com/",
        "https://user:pw@example.com/",
        "not a url",
        "https:///nohost",
    ],
)
def test_unsafe_webhook_urls_are_rejected(url: str) -> None:
    with pytest.raises(ProtocolError) as info:
        target(url, allow_local_http=True)
    assert code(info) == (400, "WEBHOOK_URL_REJECTED")


def test_the_localhost_exception_and_resolved_addresses() -> None:
    local = target("http://127.0.0.1:9/h", allow_local_http=True)
    assert local.local_dev and local.allows("127.0.0.1") and not local.allows("10.0.0.1")
    assert target("http://localhost:9/h", True).allows("::1")
    with pytest.raises(ProtocolError):
        target("http://localhost:9/h", allow_local_http=False)
    public = target("https://hooks.example/h", False)
    assert public.port == 443 and not public.local_dev
    assert public.allows("93.184.216.34") and public.allows("2606:2800:220:1::1")
    for private in (
        "10.1.2.3",
        "127.0.0.1",
        "169.254.169.254",
        "::1",
        "fd00::1",
        "::ffff:192.168.0.1",
        "224.0.0.1",
        "nonsense",
    ):
        assert not public.allows(private), private
