"""Settings come from the environment under the Rust reference server's names."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519
from jwt.algorithms import OKPAlgorithm

from streams.config import Settings

SECRET = "a test secret of at least 32 bytes, never a real one"


def test_defaults_without_environment() -> None:
    assert Settings.from_env({}) == Settings()


def test_every_setting_has_its_name() -> None:
    settings = Settings.from_env(
        {
            "DS_STORAGE__MODE": "memory",
            "DS_STORAGE__DATA_DIR": "/srv/streams",
            "DS_SERVER__LONG_POLL_TIMEOUT_SECS": "2.5",
            "DS_SERVER__SSE_RECONNECT_INTERVAL_SECS": "30",
            "DS_SERVER__SEND_TIMEOUT_SECS": "7",
            "DS_LIMITS__MAX_APPEND_BYTES": "1000",
            "DS_LIMITS__READ_CHUNK_BYTES": "2000",
            "DS_LIMITS__READ_PIECE_BYTES": "500",
            "DS_LIMITS__TAIL_CACHE_BYTES": "3000",
            "DS_LIMITS__MAX_NAME_BYTES": "100",
            "DS_ACTORS__IDLE_TIMEOUT_SECS": "1",
            "DS_ACTORS__MAX_RESIDENT": "50",
            "DS_LIMITS__BODY_TIMEOUT_SECS": "5",
            "DS_LIMITS__MAX_BUFFERED_BODY_BYTES": "4000",
            "DS_SERVER__MAX_CONNECTIONS": "200",
            "DS_LIMITS__MAX_FORK_DEPTH": "10",
            "DS_SERVER__READER_WAKE_DELAY_SECS": "0.25",
            "DS_STATE__MAX_VIEW_ENTITIES": "20",
            "DS_STATE__MAX_VIEW_BYTES": "30",
            "DS_STATE__MAX_RESIDENT_VIEW_BYTES": "40",
            "DS_STATE__MAX_SNAPSHOT_ENTITIES": "50",
            "DS_AUTH__MODE": "jwt",
            "DS_AUTH__JWT_SECRET": SECRET,
            "DS_AUTH__AUDIENCE": "streams",
            "DS_AUTH__ISSUER": "https://idp.example",
            "DS_AUTH__LEEWAY_SECS": "0",
        }
    )
    assert settings == Settings(
        storage_mode="memory",
        data_dir=Path("/srv/streams"),
        long_poll_timeout=2.5,
        sse_reconnect_interval=30.0,
        send_timeout=7.0,
        max_append_bytes=1000,
        read_chunk_bytes=2000,
        read_piece_bytes=500,
        tail_cache_bytes=3000,
        max_name_bytes=100,
        actor_idle_timeout=1.0,
        max_resident_actors=50,
        body_timeout=5.0,
        max_buffered_body_bytes=4000,
        max_connections=200,
        max_fork_depth=10,
        reader_wake_delay=0.25,
        max_view_entities=20,
        max_view_bytes=30,
        max_resident_view_bytes=40,
        max_snapshot_entities=50,
        auth_mode="jwt",
        auth_jwt_secret=SECRET,
        auth_audience="streams",
        auth_issuer="https://idp.example",
        auth_leeway=0.0,
    )


def test_the_body_budget_holds_at_least_one_largest_append() -> None:
    raised = Settings.from_env({"DS_LIMITS__MAX_APPEND_BYTES": str(512 << 20)})
    assert raised.max_buffered_body_bytes == 512 << 20  # the default follows the append limit
    with pytest.raises(ValueError, match="DS_LIMITS__MAX_BUFFERED_BODY_BYTES"):
        Settings.from_env(
            {"DS_LIMITS__MAX_APPEND_BYTES": "1000", "DS_LIMITS__MAX_BUFFERED_BODY_BYTES": "999"}
        )


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("DS_STORAGE__MODE", "disk"),
        ("DS_SERVER__LONG_POLL_TIMEOUT_SECS", "soon"),
        ("DS_ACTORS__MAX_RESIDENT", "0"),
        ("DS_LIMITS__MAX_APPEND_BYTES", "-1"),
        ("DS_SERVER__MAX_CONNECTIONS", "0"),
        ("DS_LIMITS__BODY_TIMEOUT_SECS", "never"),
        ("DS_AUTH__MODE", "basic"),
        ("DS_AUTH__LEEWAY_SECS", "-1"),
        ("DS_AUTH__LEEWAY_SECS", "nan"),
        ("DS_AUTH__LEEWAY_SECS", "soon"),
    ],
)
def test_bad_values_name_the_setting(key: str, value: str) -> None:
    with pytest.raises(ValueError, match=key):
        Settings.from_env({key: value})


def ed25519_jwk(**fields: Any) -> dict[str, Any]:
    public = ed25519.Ed25519PrivateKey.generate().public_key()
    jwk = OKPAlgorithm.to_jwk(public, as_dict=True)
    assert isinstance(jwk, dict)
    return {**jwk, **fields}


def test_auth_reads_public_keys_from_a_jwks_file(tmp_path: Path) -> None:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [ed25519_jwk(kid="a"), ed25519_jwk(kid="b")]}))
    settings = Settings.from_env({"DS_AUTH__MODE": "jwt", "DS_AUTH__JWKS_PATH": str(path)})
    assert (settings.auth_mode, settings.auth_jwks_path) == ("jwt", path)
    assert Settings.from_env({"DS_AUTH__JWKS_PATH": str(path)}).auth_mode == "off"


def test_the_secret_is_never_printed() -> None:
    settings = Settings.from_env({"DS_AUTH__MODE": "jwt", "DS_AUTH__JWT_SECRET": SECRET})
    assert SECRET not in repr(settings) and SECRET not in str(settings)


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({}, "DS_AUTH__JWT_SECRET"),
        ({"DS_AUTH__JWT_SECRET": SECRET, "DS_AUTH__JWKS_PATH": "jwks.json"}, "exactly one"),
        ({"DS_AUTH__JWT_SECRET": "short"}, "DS_AUTH__JWT_SECRET must be at least 32 bytes"),
    ],
)
def test_jwt_mode_needs_one_good_key_source(environ: dict[str, str], named: str) -> None:
    with pytest.raises(ValueError, match=named):
        Settings.from_env({"DS_AUTH__MODE": "jwt", **environ})


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (None, "cannot be read"),
        ("{not json", "is not JSON"),
        ("[]", "is not a JWKS"),
        ('{"keys": {}}', "is not a JWKS"),
        ('{"keys": []}', "holds no signature keys"),
        (json.dumps({"keys": [ed25519_jwk(use="enc")]}), "holds no signature keys"),
        ('{"keys": [1]}', "key 0 is not a JSON object"),
        ('{"keys": [{"kty": "nope"}]}', "key 0 is not a usable key"),
        (json.dumps({"keys": [ed25519_jwk(d="c2VjcmV0")]}), "key 0 is a private key"),
        (json.dumps({"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}), "HS256 is not a public-key"),
        (json.dumps({"keys": [ed25519_jwk(alg="HS256")]}), "key 0 is not a usable key"),
        (json.dumps({"keys": [ed25519_jwk(kid=7)]}), "kid must be a string"),
        (json.dumps({"keys": [ed25519_jwk(kid="a"), ed25519_jwk(kid="a")]}), "used twice"),
        (json.dumps({"keys": [ed25519_jwk(), ed25519_jwk(kid="a")]}), "each needs a kid"),
    ],
)
def test_a_bad_jwks_file_is_an_error_at_start(
    tmp_path: Path, content: str | None, reason: str
) -> None:
    path = tmp_path / "jwks.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ValueError, match="DS_AUTH__JWKS_PATH") as raised:
        Settings.from_env({"DS_AUTH__MODE": "jwt", "DS_AUTH__JWKS_PATH": str(path)})
    assert reason in str(raised.value)
