"""Bearer JWT auth (DS_AUTH__MODE=jwt), in-process through the protocol's ASGI handler and
once against the real server: 401 for every token that does not verify, 403 for one that
lacks the grant, the grant each method needs, and what stays open."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
import trio
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from hypothesis import given
from hypothesis import strategies as st
from jwt.algorithms import OKPAlgorithm, RSAAlgorithm

from actors.registry import Registry
from actors.service import Streams
from actors.storage.memory import MemoryStorage
from streams.auth import authenticator
from streams.config import Settings
from streams.http import StreamsHTTP
from streams.protocol.errors import ProtocolError
from tests.asgi import Response, request, start
from tests.server import running_server

SECRET = "a test secret of at least 32 bytes, never a real one"
TEXT = {"Content-Type": "text/plain"}
INVALID = 'Bearer error="invalid_token"'
ALL = "read:** write:**"


def mint(
    scope: object = ALL,
    *,
    key: Any = SECRET,
    algorithm: str = "HS256",
    kid: str | None = None,
    **claims: Any,
) -> str:
    """A token valid for five minutes unless `claims` say otherwise (None drops a claim)."""
    payload = {"exp": int(time.time()) + 300, "scope": scope, **claims}
    payload = {k: v for k, v in payload.items() if v is not None}
    headers = {"kid": kid} if kid is not None else None
    return jwt.encode(payload, key, algorithm=algorithm, headers=headers)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def unsigned(header: dict[str, Any], payload: dict[str, Any], key: bytes = b"") -> str:
    """A token assembled by hand, HMAC-signed with `key` (or not at all)."""

    def part(doc: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(doc).encode()).rstrip(b"=").decode()

    signing_input = f"{part(header)}.{part(payload)}"
    if not key:
        return f"{signing_input}."
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{base64.urlsafe_b64encode(signature).rstrip(b'=').decode()}"


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def other_rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ed_key() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


@pytest.fixture(scope="module")
def jwks_path(
    tmp_path_factory: pytest.TempPathFactory,
    rsa_key: rsa.RSAPrivateKey,
    ed_key: ed25519.Ed25519PrivateKey,
) -> Path:
    rsa_jwk = RSAAlgorithm.to_jwk(rsa_key.public_key(), as_dict=True)
    ed_jwk = OKPAlgorithm.to_jwk(ed_key.public_key(), as_dict=True)
    assert isinstance(rsa_jwk, dict) and isinstance(ed_jwk, dict)
    path = tmp_path_factory.mktemp("jwks") / "jwks.json"
    keys = [{**rsa_jwk, "kid": "rsa-1", "use": "sig"}, {**ed_jwk, "kid": "ed-1"}]
    path.write_text(json.dumps({"keys": keys}))
    return path


async def serving(nursery: trio.Nursery, **settings: Any) -> StreamsHTTP:
    registry = Registry(MemoryStorage())
    await nursery.start(registry.run)
    auth = {"auth_mode": "jwt", "auth_jwt_secret": SECRET, **settings}
    return StreamsHTTP(Streams(registry), Settings(storage_mode="memory", **auth))


def assert_unauthorized(response: Response) -> None:
    assert response.status == 401
    assert response.headers["www-authenticate"] == INVALID
    assert response.problem()["code"] == "UNAUTHORIZED"


def assert_forbidden(response: Response) -> None:
    assert response.status == 403
    assert response.problem()["code"] == "FORBIDDEN"


# ---- auth off (the default) -------------------------------------------------------------------


async def test_auth_is_off_by_default_and_needs_no_token() -> None:
    assert Settings().auth_mode == "off"
    assert authenticator(Settings.from_env({})) is None
    async with trio.open_nursery() as nursery:
        app = await serving(nursery, auth_mode="off")
        assert (await request(app, "PUT", "s", headers=TEXT)).status == 201
        assert (await request(app, "POST", "s", b"hi", headers=TEXT)).status == 204
        read = await request(app, "GET", "s", query="offset=-1")
        assert (read.status, read.body) == (200, b"hi")
        assert read.headers["cache-control"].startswith("public")
        nursery.cancel_scope.cancel()


# ---- 401 --------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "HEAD", "PUT", "POST", "DELETE"])
async def test_a_request_without_a_token_gets_401_with_a_bare_challenge(method: str) -> None:
    async with trio.open_nursery() as nursery:
        app = await serving(nursery)
        response = await request(app, method, "s", headers=TEXT)
        assert response.status == 401
        assert response.headers["www-authenticate"] == "Bearer"
        if method != "HEAD":
            assert response.problem()["code"] == "UNAUTHORIZED"
        basic = await request(app, method, "s", headers={"Authorization": "Basic dXNlcjpwYXNz"})
        assert basic.status == 401
        assert basic.headers["www-authenticate"] == "Bearer"
        nursery.cancel_scope.cancel()


def tampered() -> str:
    """A read-only token whose payload was swapped for one granting everything."""
    header, _, signature = mint("read:s").split(".")
    payload = unsigned({}, {"exp": int(time.time()) + 300, "scope": ALL}).split(".")[1]
    return f"{header}.{payload}.{signature}"


def hs256_invalid_tokens() -> dict[str, str]:
    now = int(time.time())
    return {
        "bad signature": mint(key="another secret of at least 32 bytes, not ours"),
        "alg none": mint(key=None, algorithm="none"),
        "alg none by hand": unsigned({"alg": "none"}, {"exp": now + 300, "scope": ALL}),
        "expired": mint(exp=now - 120),
        "not yet valid": mint(nbf=now + 120),
        "no expiry": mint(exp=None),
        "malformed": "not-a-jwt",
        "three garbage parts": "a.b.c",
        "a header that is no object": "WzFd.e30.c2ln",  # [1], {}, "sig"
        "scope not a string": mint(["read:**"]),
        "tampered payload": tampered(),
    }


@pytest.mark.parametrize("case", list(hs256_invalid_tokens()))
async def test_tokens_that_do_not_verify_get_401_and_change_nothing(case: str) -> None:
    token = hs256_invalid_tokens()[case]
    async with trio.open_nursery() as nursery:
        app = await serving(nursery)
        assert (await request(app, "PUT", "s", headers={**TEXT, **bearer(mint())})).status == 201
        assert_unauthorized(await request(app, "POST", "s", b"x", headers=bearer(token)))
        assert_unauthorized(await request(app, "GET", "s", headers=bearer(token)))
        assert_unauthorized(await request(app, "DELETE", "s", headers=bearer(token)))
        read = await request(app, "GET", "s", query="offset=-1", headers=bearer(mint()))
        assert (read.status, read.body) == (200, b"")
        nursery.cancel_scope.cancel()


async def test_a_malformed_authorization_header_gets_401() -> None:
    async with trio.open_nursery() as nursery:
        app = await serving(nursery)
        for value in ["Bearer", "Bearer ", "Bearer a b", "Bearer\ttoken", f"Bearer {mint()}, x"]:
            response = await request(app, "GET", "s", headers={"Authorization": value})
            assert_unauthorized(response)
        nursery.cancel_scope.cancel()


async def test_audience_and_issuer_are_checked_when_set() -> None:
    async with trio.open_nursery() as nursery:
        app = await serving(nursery, auth_audience="streams", auth_issuer="https://idp")
        good = mint(aud="streams", iss="https://idp")
        assert (await request(app, "PUT", "s", headers={**TEXT, **bearer(good)})).status == 201
        for token in [
            mint(aud="other", iss="https://idp"),
            mint(aud="streams", iss="https://other"),
            mint(iss="https://idp"),  # no audience
            mint(aud="streams"),  # no issuer
        ]:
            assert_unauthorized(await request(app, "GET", "s", headers=bearer(token)))
        unchecked = await serving(nursery)  # neither set: neither checked
        token = mint(aud="anyone", iss="anywhere")
        assert (
            await request(unchecked, "PUT", "s", headers={**TEXT, **bearer(token)})
        ).status == 201
        nursery.cancel_scope.cancel()


async def test_the_leeway_allows_a_little_clock_skew() -> None:
    now = int(time.time())
    skewed = [mint(exp=now - 10), mint(nbf=now + 10)]
    async with trio.open_nursery() as nursery:
        lenient = await serving(nursery, auth_leeway=30.0)
        strict = await serving(nursery, auth_leeway=0.0)
        for token in skewed:
            assert (await request(lenient, "HEAD", "s", headers=bearer(token))).status == 404
            assert_unauthorized(await request(strict, "GET", "s", headers=bearer(token)))
        nursery.cancel_scope.cancel()


async def test_public_key_tokens_are_checked_with_the_key_their_kid_names(
    jwks_path: Path,
    rsa_key: rsa.RSAPrivateKey,
    other_rsa_key: rsa.RSAPrivateKey,
    ed_key: ed25519.Ed25519PrivateKey,
) -> None:
    public_pem = rsa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    now = int(time.time())
    invalid = {
        "wrong key": mint(key=other_rsa_key, algorithm="RS256", kid="rsa-1"),
        "unknown kid": mint(key=rsa_key, algorithm="RS256", kid="rsa-2"),
        "no kid": mint(key=rsa_key, algorithm="RS256"),
        "RS256 under the Ed25519 kid": mint(key=rsa_key, algorithm="RS256", kid="ed-1"),
        "alg none": mint(key=None, algorithm="none", kid="rsa-1"),
        "HS256 keyed with the public key": unsigned(
            {"alg": "HS256", "kid": "rsa-1"}, {"exp": now + 300, "scope": ALL}, public_pem
        ),
        "HS256 with our secret": mint(kid="rsa-1"),
        "expired": mint(key=ed_key, algorithm="EdDSA", kid="ed-1", exp=now - 120),
    }
    async with trio.open_nursery() as nursery:
        app = await serving(nursery, auth_jwt_secret=None, auth_jwks_path=jwks_path)
        by_rsa = bearer(mint(key=rsa_key, algorithm="RS256", kid="rsa-1"))
        by_ed = bearer(mint(key=ed_key, algorithm="EdDSA", kid="ed-1"))
        assert (await request(app, "PUT", "s", headers={**TEXT, **by_rsa})).status == 201
        assert (await request(app, "POST", "s", b"x", headers={**TEXT, **by_ed})).status == 204
        assert (await request(app, "GET", "s", query="offset=-1", headers=by_rsa)).body == b"x"
        for case, token in invalid.items():
            response = await request(app, "POST", "s", b"y", headers={**TEXT, **bearer(token)})
            assert response.status == 401, case
            assert_unauthorized(response)
        assert (await request(app, "GET", "s", query="offset=-1", headers=by_ed)).body == b"x"
        nursery.cancel_scope.cancel()


async def test_a_refused_request_is_answered_before_its_body_is_read() -> None:
    async with trio.open_nursery() as nursery:
        app = await serving(nursery)
        big = {**TEXT, "Content-Length": str(10 << 20)}
        for headers in [big, {**big, **bearer(mint("read:**"))}]:
            with trio.fail_after(10):  # the body never comes: reading it would hang
                exchange = start(nursery, app, "POST", "s", None, headers)
                await exchange.done.wait()
            assert exchange.response.status in (401, 403)
            assert exchange.response.headers["connection"] == "close"
        nursery.cancel_scope.cancel()


@given(st.text(max_size=200))
def test_any_authorization_header_is_a_401_or_grants(value: str) -> None:
    auth = authenticator(Settings(auth_mode="jwt", auth_jwt_secret=SECRET))
    assert auth is not None
    for header in (value, f"Bearer {value}"):
        try:
            auth.grants(header)
        except ProtocolError as error:
            assert error.status == 401


# ---- grants -----------------------------------------------------------------------------------


async def test_a_valid_token_without_the_grant_gets_403() -> None:
    async with trio.open_nursery() as nursery:
        app = await serving(nursery)
        admin = bearer(mint())
        assert (await request(app, "PUT", "chat/room-1", headers={**TEXT, **admin})).status == 201
        other = bearer(mint("read:news/** write:news/**"))
        assert_forbidden(await request(app, "GET", "chat/room-1", headers=other))
        assert_forbidden(await request(app, "POST", "chat/room-1", b"x", headers={**TEXT, **other}))
        empty = bearer(mint(scope=None))  # no scope claim at all
        assert_forbidden(await request(app, "GET", "chat/room-1", headers=empty))
        head = await request(app, "HEAD", "chat/room-1", headers=other)
        assert (head.status, head.body) == (403, b"")
        assert head.headers["www-authenticate"] == 'Bearer error="insufficient_scope"'
        nursery.cancel_scope.cancel()


async def test_head_and_get_need_read_and_put_post_delete_need_write() -> None:
    async with trio.open_nursery() as nursery:
        app = await serving(nursery)
        reader = bearer(mint("read:s"))
        writer = bearer(mint("write:s"))
        assert_forbidden(await request(app, "PUT", "s", headers={**TEXT, **reader}))
        assert (await request(app, "PUT", "s", headers={**TEXT, **writer})).status == 201
        assert_forbidden(await request(app, "POST", "s", b"x", headers={**TEXT, **reader}))
        assert (await request(app, "POST", "s", b"x", headers={**TEXT, **writer})).status == 204
        for method in ["GET", "HEAD"]:  # write implies nothing about read
            assert (await request(app, method, "s", headers=writer)).status == 403
            assert (await request(app, method, "s", headers=reader)).status == 200
        read = await request(app, "GET", "s", query="offset=-1", headers=reader)
        assert read.body == b"x"
        assert_forbidden(await request(app, "DELETE", "s", headers=reader))
        assert (await request(app, "DELETE", "s", headers=writer)).status == 204
        nursery.cancel_scope.cancel()


async def test_grants_match_stream_names_by_glob() -> None:
    async with trio.open_nursery() as nursery:
        app = await serving(nursery)
        token = bearer(mint("read:chat/** write:chat/* write:logs/room-*/today"))
        for name in ["chat/a", "logs/room-7/today"]:
            assert (await request(app, "PUT", name, headers={**TEXT, **token})).status == 201
        for name in ["chat/a/b", "chat", "logs/room-7/tomorrow", "logs/x/room-7/today"]:
            assert_forbidden(await request(app, "PUT", name, headers={**TEXT, **token}))
        for name in ["chat", "chat/a", "chat/a/b/c"]:  # `**`: any number of segments
            assert (await request(app, "GET", name, headers=token)).status in (200, 404)
        assert_forbidden(await request(app, "GET", "logs/room-7/today", headers=token))
        assert_forbidden(await request(app, "GET", "chatter", headers=token))
        nursery.cancel_scope.cancel()


async def test_a_fork_needs_read_on_its_source() -> None:
    async with trio.open_nursery() as nursery:
        app = await serving(nursery)
        admin = bearer(mint())
        assert (await request(app, "PUT", "src", headers={**TEXT, **admin})).status == 201
        fork = {"Stream-Forked-From": "/v1/stream/src"}
        write_only = bearer(mint("write:copy"))
        refused = await request(app, "PUT", "copy", headers={**fork, **write_only})
        assert_forbidden(refused)
        assert "fork source" in refused.problem()["detail"]
        assert (await request(app, "HEAD", "copy", headers=admin)).status == 404
        read_source = bearer(mint("write:copy read:src"))
        assert (await request(app, "PUT", "copy", headers={**fork, **read_source})).status == 201
        nursery.cancel_scope.cancel()


async def test_preflights_need_no_token() -> None:
    async with trio.open_nursery() as nursery:
        app = await serving(nursery)
        headers = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST"}
        response = await request(app, "OPTIONS", "s", headers=headers)
        assert response.status == 204
        assert "Authorization" in response.headers["access-control-allow-headers"]
        nursery.cancel_scope.cancel()


async def test_reads_are_not_for_shared_caches_when_auth_is_on() -> None:
    async with trio.open_nursery() as nursery:
        app = await serving(nursery)
        token = bearer(mint())
        assert (await request(app, "PUT", "s", headers={**TEXT, **token})).status == 201
        assert (await request(app, "POST", "s", b"x", headers={**TEXT, **token})).status == 204
        read = await request(app, "GET", "s", query="offset=-1", headers=token)
        assert read.headers["cache-control"].startswith("private,")
        etag = read.headers["etag"]
        cached = await request(
            app, "GET", "s", query="offset=-1", headers={**token, "If-None-Match": etag}
        )
        assert cached.status == 304
        assert cached.headers["cache-control"].startswith("private,")
        nursery.cancel_scope.cancel()


# ---- the real server --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    data_dir = tmp_path_factory.mktemp("auth") / "data"
    env = {"DS_AUTH__MODE": "jwt", "DS_AUTH__JWT_SECRET": SECRET}
    with running_server(data_dir, env) as base_url:
        yield base_url, data_dir.parent


def test_the_real_server_checks_tokens_and_keeps_health_open(server: tuple[str, Path]) -> None:
    base_url, logs = server
    token = mint("read:s write:s")
    with httpx.Client(base_url=base_url, timeout=10) as http:
        assert http.get("/healthz").status_code == 200
        assert http.get("/readyz").status_code == 200
        refused = http.put("/v1/stream/s", headers=TEXT)
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"] == "Bearer"
        assert refused.headers["content-type"] == "application/problem+json"
        assert http.put("/v1/stream/s", headers={**TEXT, **bearer(token)}).status_code == 201
        expired = mint("read:s", exp=int(time.time()) - 120)
        response = http.get("/v1/stream/s", headers=bearer(expired))
        assert (response.status_code, response.headers["www-authenticate"]) == (401, INVALID)
        assert http.get("/v1/stream/t", headers=bearer(token)).status_code == 403
        preflight = http.options("/v1/stream/s", headers={"Origin": "https://app.example"})
        assert preflight.status_code == 204
    for log in logs.glob("server-*.log"):  # tokens are never logged
        text = log.read_text()
        assert token not in text and expired not in text
        assert token.split(".")[2] not in text
