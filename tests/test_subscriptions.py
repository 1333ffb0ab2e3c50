"""Subscriptions through the HTTP routes, in-process, on trio's mock clock: what the
conformance suite does not check (retries, restarts, leases, tombstones, tokens, globs,
key rotation, SSRF)."""

from __future__ import annotations

import base64
import itertools
import json
from typing import Any

import httpx
import jwt
import pytest
import trio
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from actors.storage.memory import MemoryStorage
from actors.storage.subscriptions import MemorySubscriptions
from streams.protocol import offsets
from tests.subscription_helpers import RECEIVER, Receiver, Served, done, serving

SUBS = "__ds/subscriptions/"


def hook(pattern: str = "events/*", url: str = RECEIVER, **more: Any) -> dict[str, Any]:
    return {"type": "webhook", "pattern": pattern, "webhook": {"url": url}, **more}


def puller(pattern: str = "events/*", **more: Any) -> dict[str, Any]:
    return {"type": "pull-wake", "pattern": pattern, "wake_stream": "wake", **more}


def verify(served_jwks: dict[str, Any], delivery: dict[str, Any]) -> str:
    """The delivery's signature verifies with the JWKS key it names; returns that kid."""
    t, kid, sig = (part.split("=", 1)[1] for part in delivery["_signature"].split(","))
    jwk = next(key for key in served_jwks["keys"] if key["kid"] == kid)
    public = Ed25519PublicKey.from_public_bytes(base64.urlsafe_b64decode(jwk["x"] + "="))
    public.verify(base64.urlsafe_b64decode(sig + "=="), t.encode() + b"." + delivery["_raw"])
    return str(kid)


async def wake_events(served: Served) -> list[dict[str, Any]]:
    status, events = await served("GET", "wake")
    assert status == 200
    return list(events)


async def acked(served: Served, id: str) -> dict[str, str]:
    _, body = await served("GET", SUBS + id)
    return {s["path"]: s["acked_offset"] for s in body["streams"]}


async def test_create_confirm_conflict_read_and_jwks(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with serving() as served:
        await served.stream("events/old", {"n": 0})
        status, created = await served("PUT", SUBS + "s1", hook(description="d"))
        assert status == 201
        assert created["webhook"]["signing"]["jwks_url"].endswith("/v1/stream/__ds/jwks.json")
        assert created["streams"] == [
            {"path": "events/old", "link_type": "glob", "acked_offset": offsets.encode(8)}
        ]  # existing streams are linked at their tail
        assert (await served("PUT", SUBS + "s1", hook(description="d")))[0] == 200
        status, conflict = await served("PUT", SUBS + "s1", hook(description="other"))
        assert (status, conflict["error"]["code"]) == (409, "SUBSCRIPTION_ALREADY_EXISTS")
        status, jwks = await served("GET", "__ds/jwks.json")
        assert status == 200 and jwks["keys"][0]["kid"] == created["webhook"]["signing"]["kid"]
        assert "secret" not in json.dumps(created)
        status, missing = await served("GET", SUBS + "nope")
        assert (status, missing["error"]["code"]) == (404, "SUBSCRIPTION_NOT_FOUND")
        status, bad = await served("PUT", SUBS + "s2", b"{")
        assert (status, bad["error"]["code"]) == (400, "INVALID_REQUEST")


async def test_a_signed_webhook_and_its_callback(autojump_clock: trio.testing.MockClock) -> None:
    async with serving() as served:
        await served("PUT", SUBS + "s1", hook())
        await served.stream("events/a", {"n": 1})
        delivery = await served.receiver.next()
        _, jwks = await served("GET", "__ds/jwks.json")
        verify(jwks, delivery)
        assert delivery["_url"] == "https://93.184.216.34/h"  # pinned to the checked address
        assert delivery["_host"] == "hooks.example"
        tail = delivery["streams"][0]["tail_offset"]
        ack = {
            "wake_id": delivery["wake_id"],
            "generation": delivery["generation"],
            "acks": [{"stream": "events/a", "offset": tail}],
            "done": True,
        }
        auth = {"Authorization": "Bearer " + delivery["callback_token"]}
        status, _ = await served("POST", SUBS + "s1/callback", ack)
        assert status == 401  # the token goes in Authorization only
        status, body = await served("POST", SUBS + "s1/callback", ack, auth)
        assert (status, body) == (200, {"ok": True, "next_wake": False})
        assert (await acked(served, "s1"))["events/a"] == tail
        status, fenced = await served("POST", SUBS + "s1/callback", ack, auth)
        assert (status, fenced["error"]["code"]) == (409, "FENCED")


async def test_failed_deliveries_back_off_and_the_status_says_so(
    autojump_clock: trio.testing.MockClock,
) -> None:
    failures = 3

    def flaky(_: httpx.Request) -> httpx.Response:
        return (
            httpx.Response(500)
            if receiver.count <= failures
            else httpx.Response(200, json={"done": True})
        )

    receiver = Receiver(flaky)
    async with serving(
        receiver=receiver, random_bytes=lambda n: b"\x80" + b"\x00" * (n - 1)
    ) as served:
        await served("PUT", SUBS + "s1", hook())
        await served.stream("events/a", {"n": 1})
        times = []
        for _ in range(failures + 1):
            await served.receiver.next()
            times.append(trio.current_time())
            if len(times) == 2:
                _, body = await served("GET", SUBS + "s1")
                assert body["status"] == "failed"
        gaps = [round(b - a, 3) for a, b in itertools.pairwise(times)]
        assert gaps == [1.0, 2.0, 4.0]  # jitter bytes chosen to give exactly 0
        await trio.sleep(1)
        _, body = await served("GET", SUBS + "s1")
        assert body["status"] == "active"
        assert body["streams"][0]["acked_offset"] != "-1"


async def test_redirects_are_not_followed(autojump_clock: trio.testing.MockClock) -> None:
    def moved(_: httpx.Request) -> httpx.Response:
        return httpx.Response(302, headers={"Location": "http://10.0.0.1/"})

    async with serving(receiver=Receiver(moved)) as served:
        await served("PUT", SUBS + "s1", hook())
        await served.stream("events/a", {"n": 1})
        await served.receiver.next()
        await served.receiver.next()  # retried: the 302 was a failure, its target never asked
        _, body = await served("GET", SUBS + "s1")
        assert body["status"] == "failed"


@pytest.mark.parametrize(
    ("url", "names"),
    [
        ("https://evil.example/h", {"evil.example": ["10.0.0.5"]}),
        ("https://mixed.example/h", {"mixed.example": ["93.184.216.34", "192.168.1.1"]}),
        ("https://v6.example/h", {"v6.example": ["fd00::1"]}),
        ("https://meta.example/h", {"meta.example": ["169.254.169.254"]}),
        ("https://2130706433/h", {"2130706433": ["127.0.0.1"]}),  # a decimal IPv4
        ("https://nowhere.example/h", {}),
        ("http://10.0.0.1/hook", {}),
    ],
)
async def test_unsafe_webhook_targets_are_rejected_after_resolution(
    url: str, names: dict[str, list[str]], autojump_clock: trio.testing.MockClock
) -> None:
    async with serving(names=names) as served:
        status, body = await served("PUT", SUBS + "s1", hook(url=url))
        assert (status, body["error"]["code"]) == (400, "WEBHOOK_URL_REJECTED")
        assert (await served("GET", SUBS + "s1"))[0] == 404


async def test_a_name_re_pointed_at_a_private_address_is_not_delivered_to(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with serving() as served:
        await served("PUT", SUBS + "s1", hook())
        served.names["hooks.example"] = ["10.0.0.7"]  # DNS rebinding after the check
        await served.stream("events/a", {"n": 1})
        await trio.sleep(10)
        assert served.receiver.count == 0
        _, body = await served("GET", SUBS + "s1")
        assert body["status"] == "failed"


async def test_pull_wake_lease_expiry_fences_the_old_worker(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with serving() as served:
        await served.stream("wake", [])
        await served("PUT", SUBS + "p1", puller(lease_ttl_ms=1000))
        await served.stream("events/a", {"n": 1})
        await trio.sleep(0.1)
        assert [e["generation"] for e in await wake_events(served)] == [1]
        status, claimed = await served("POST", SUBS + "p1/claim", {"worker": "w1"})
        assert status == 200
        await trio.sleep(1.5)  # the lease runs out: a new wake is posted
        assert [e["generation"] for e in await wake_events(served)] == [1, 2]
        auth = {"Authorization": "Bearer " + claimed["token"]}
        beat = {"wake_id": claimed["wake_id"], "generation": 1}
        status, fenced = await served("POST", SUBS + "p1/ack", beat, auth)
        assert (status, fenced["error"]["code"]) == (409, "FENCED")
        status, again = await served("POST", SUBS + "p1/claim", {"worker": "w2"})
        assert status == 200 and again["generation"] == 2


async def test_heartbeats_keep_a_lease(autojump_clock: trio.testing.MockClock) -> None:
    async with serving() as served:
        await served.stream("wake", [])
        await served("PUT", SUBS + "p1", puller(lease_ttl_ms=1000))
        await served.stream("events/a", {"n": 1})
        _, claimed = await served("POST", SUBS + "p1/claim", {"worker": "w1"})
        auth = {"Authorization": "Bearer " + claimed["token"]}
        beat = {"wake_id": claimed["wake_id"], "generation": claimed["generation"]}
        for _ in range(5):
            await trio.sleep(0.8)
            assert (await served("POST", SUBS + "p1/ack", beat, auth))[0] == 200
        status, busy = await served("POST", SUBS + "p1/claim", {"worker": "w2"})
        assert (status, busy["error"]["current_holder"]) == (409, "w1")


async def test_tokens_expire(autojump_clock: trio.testing.MockClock) -> None:
    async with serving(token_ttl=5.0) as served:
        await served.stream("wake", [])
        await served("PUT", SUBS + "p1", puller(lease_ttl_ms=600_000))
        await served.stream("events/a", {"n": 1})
        _, claimed = await served("POST", SUBS + "p1/claim", {"worker": "w1"})
        await trio.sleep(6)
        auth = {"Authorization": "Bearer " + claimed["token"]}
        beat = {"wake_id": claimed["wake_id"], "generation": claimed["generation"]}
        status, body = await served("POST", SUBS + "p1/ack", beat, auth)
        assert (status, body["error"]["code"]) == (401, "TOKEN_EXPIRED")


async def test_delete_is_a_tombstone_for_in_flight_callbacks(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with serving() as served:
        await served("PUT", SUBS + "s1", hook())
        await served.stream("events/a", {"n": 1})
        delivery = await served.receiver.next()
        auth = {"Authorization": "Bearer " + delivery["callback_token"]}
        ack = {
            "wake_id": delivery["wake_id"],
            "generation": 1,
            "done": True,
            "acks": [{"stream": "events/a", "offset": delivery["streams"][0]["tail_offset"]}],
        }
        assert (await served("DELETE", SUBS + "s1"))[0] == 204
        status, body = await served("POST", SUBS + "s1/callback", ack, auth)
        assert (status, body["error"]["code"]) == (404, "SUBSCRIPTION_NOT_FOUND")
        await served("PUT", SUBS + "s1", hook())  # the same id again: a new incarnation
        assert (await acked(served, "s1"))["events/a"] != "-1"  # linked at its tail
        status, body = await served("POST", SUBS + "s1/callback", ack, auth)
        assert (status, body["error"]["code"]) == (401, "TOKEN_INVALID")


async def test_double_star_globs_link_later_streams_before_their_data(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with serving() as served:
        await served.stream("wake", [])
        await served.stream("t/x/old", {"n": 0})
        await served("PUT", SUBS + "p1", puller("t/**"))
        await served.stream("t/a/b/c", {"n": 1})
        await served.stream("u/a", {"n": 1})
        await trio.sleep(0.1)
        links = await acked(served, "p1")
        assert links == {"t/x/old": offsets.encode(8), "t/a/b/c": "-1"}
        _, claimed = await served("POST", SUBS + "p1/claim", {"worker": "w"})
        pending = {s["path"]: s["has_pending"] for s in claimed["streams"]}
        assert pending == {"t/x/old": False, "t/a/b/c": True}


async def test_explicit_links_and_deleted_streams(autojump_clock: trio.testing.MockClock) -> None:
    async with serving() as served:
        await served.stream("wake", [])
        body = puller()
        body["streams"] = ["events/a"]
        await served("PUT", SUBS + "p1", body)
        await served.stream("events/a", {"n": 1})
        await served("DELETE", "events/a")
        await trio.sleep(0.1)
        _, got = await served("GET", SUBS + "p1")
        assert got["streams"] == [
            {"path": "events/a", "link_type": "explicit", "acked_offset": "-1"}
        ]
        assert (await served("DELETE", SUBS + "p1/streams/events/a"))[0] == 204
        assert (await acked(served, "p1")) == {}
        status, bad = await served("POST", SUBS + "p1/streams", {"streams": "x"})
        assert (status, bad["error"]["code"]) == (400, "INVALID_REQUEST")


async def test_restart_keeps_retry_schedules_leases_and_keys(
    autojump_clock: trio.testing.MockClock,
) -> None:
    storage, store = MemoryStorage(), MemorySubscriptions()
    receiver = Receiver(lambda _: httpx.Response(503))
    async with serving(storage, store, receiver) as served:
        await served.stream("wake", [])
        await served("PUT", SUBS + "s1", hook())
        await served("PUT", SUBS + "p1", puller())
        await served.stream("events/a", {"n": 1})
        for _ in range(4):  # attempts at 0, 1, 3 and 7 s: the next one at about 15 s
            await served.receiver.next()
        failed_at = trio.current_time()
        _, claimed = await served("POST", SUBS + "p1/claim", {"worker": "w1"})
        _, jwks = await served("GET", "__ds/jwks.json")
    receiver = Receiver(done)
    async with serving(storage, store, receiver) as served:
        delivery = await served.receiver.next()
        assert trio.current_time() - failed_at >= 8 * 0.8  # the schedule was kept
        assert delivery["generation"] == 1
        assert verify(jwks, delivery) == jwks["keys"][0]["kid"]  # the same key
        status, busy = await served("POST", SUBS + "p1/claim", {"worker": "w2"})
        assert (status, busy["error"]["current_holder"]) == (409, "w1")  # still leased
        auth = {"Authorization": "Bearer " + claimed["token"]}
        tail = claimed["streams"][0]["tail_offset"]
        ack = {
            "wake_id": claimed["wake_id"],
            "generation": claimed["generation"],
            "done": True,
            "acks": [{"stream": "events/a", "offset": tail}],
        }
        status, body = await served("POST", SUBS + "p1/ack", ack, auth)
        assert (status, body) == (200, {"ok": True, "next_wake": False})


async def test_key_rotation_keeps_the_old_key_published(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with serving(key_publish=100.0) as served:
        _, before = await served("GET", "__ds/jwks.json")
        await served.subs.rotate()
        _, after = await served("GET", "__ds/jwks.json")
        old = before["keys"][0]["kid"]
        assert after["keys"][0]["kid"] == old and len(after["keys"]) == 2
        await served("PUT", SUBS + "s1", hook())
        _, got = await served("GET", SUBS + "s1")
        assert got["webhook"]["signing"]["kid"] == after["keys"][1]["kid"]
        await served.stream("events/a", {"n": 1})
        assert verify(after, await served.receiver.next()) == after["keys"][1]["kid"]
        await trio.sleep(101)
        await served.subs.rotate()
        _, later = await served("GET", "__ds/jwks.json")
        assert old not in [k["kid"] for k in later["keys"]]


async def test_callback_routes_check_their_input(autojump_clock: trio.testing.MockClock) -> None:
    async with serving() as served:
        await served("PUT", SUBS + "p1", puller())
        status, body = await served("POST", SUBS + "p1/claim", {"worker": ""})
        assert (status, body["error"]["code"]) == (400, "INVALID_REQUEST")
        status, body = await served("POST", SUBS + "p1/claim", {"worker": "w"})
        assert (status, body["error"]["code"]) == (409, "NO_PENDING_WORK")
        status, body = await served("POST", SUBS + "p1/callback", {}, {"Authorization": "Bearer x"})
        assert (status, body["error"]["code"]) == (400, "INVALID_REQUEST")  # not a webhook
        status, body = await served("POST", SUBS + "p1/ack", {}, {"Authorization": "Bearer x.y"})
        assert (status, body["error"]["code"]) == (401, "TOKEN_INVALID")
        assert (await served("GET", SUBS + "p1/ack"))[0] == 405
        assert (await served("GET", SUBS + "p1/bogus"))[0] == 404


async def test_server_auth_guards_management_and_claims_but_not_token_routes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    secret = "s" * 32

    def bearer(scope: str) -> dict[str, str]:
        token = jwt.encode({"scope": scope, "exp": 2**40}, secret, algorithm="HS256")
        return {"Authorization": f"Bearer {token}"}

    settings = {"auth_mode": "jwt", "auth_jwt_secret": secret}
    async with serving(settings=settings) as served:
        streams = bearer("write:** read:**")
        assert (
            await served("PUT", "wake", b"[]", {**streams, "Content-Type": "application/json"})
        )[0] == 201
        assert (await served("PUT", SUBS + "p1", puller()))[0] == 401
        assert (await served("PUT", SUBS + "p1", puller(), bearer("write:events/*")))[0] == 403
        admin = bearer("write:__ds/subscriptions/* read:__ds/subscriptions/*")
        assert (await served("PUT", SUBS + "p1", puller(), admin))[0] == 201
        assert (await served("GET", SUBS + "p1", None, admin))[0] == 200
        await served("PUT", "events/a", b"[1]", {**streams, "Content-Type": "application/json"})
        assert (await served("POST", SUBS + "p1/claim", {"worker": "w"}))[0] == 401
        status, claimed = await served("POST", SUBS + "p1/claim", {"worker": "w"}, admin)
        assert status == 200
        done = {"wake_id": claimed["wake_id"], "generation": claimed["generation"], "done": True}
        auth = {"Authorization": "Bearer " + claimed["token"]}  # the claim token, not a JWT
        assert (await served("POST", SUBS + "p1/ack", done, auth))[0] == 200
        assert (await served("GET", "__ds/jwks.json"))[0] == 200  # public keys: no token


async def test_commits_taken_by_a_request_still_wake_the_others(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with serving() as served:
        await served.stream("events/a", {"n": 1})
        await served("PUT", SUBS + "s1", hook())
        await trio.sleep(1)  # it settled: nothing pending
        served.registry.commits.note("events/a", 100)  # a commit, and before the supervisor
        served.subs._absorb()  # looks, a request on another subscription takes the notes
        delivery = await served.receiver.next()
        assert delivery["streams"][0]["tail_offset"] == offsets.encode(100)
