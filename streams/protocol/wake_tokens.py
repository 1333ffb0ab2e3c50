"""Callback and claim tokens (PROTOCOL.md 7.1-7.3, 12.9): HMAC-signed claims naming the
subscription (and its incarnation: a deleted and re-created subscription refuses the old
ones), the wake generation and an expiry. Pure: the key and the time are passed in.

A token is `base64url(json claims).base64url(HMAC-SHA256(key, first part))`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

import attrs

from streams.protocol.subscription_config import error


@attrs.frozen
class Claims:
    subscription: str
    incarnation: str
    generation: int
    expires: float  # Unix time


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def mint(key: bytes, claims: Claims) -> str:
    payload = {
        "sub": claims.subscription,
        "inc": claims.incarnation,
        "gen": claims.generation,
        "exp": int(claims.expires),
    }
    first = _b64(json.dumps(payload, separators=(",", ":")).encode())
    return f"{first}.{_b64(hmac.new(key, first.encode(), hashlib.sha256).digest())}"


def verify(key: bytes, token: str, now: float) -> Claims:
    """The token's claims if its signature holds and it has not expired; else 401
    TOKEN_INVALID or TOKEN_EXPIRED (the error never echoes the token)."""
    first, dot, signature = token.partition(".")
    expected = _b64(hmac.new(key, first.encode(), hashlib.sha256).digest())
    if not dot or not hmac.compare_digest(signature.encode(), expected.encode()):
        raise error(401, "TOKEN_INVALID", "the token is not valid")
    try:
        payload: dict[str, Any] = json.loads(_unb64(first))
        claims = Claims(
            str(payload["sub"]), str(payload["inc"]), int(payload["gen"]), float(payload["exp"])
        )
    except (ValueError, KeyError, TypeError):
        raise error(401, "TOKEN_INVALID", "the token is not valid") from None
    if now > claims.expires:
        raise error(401, "TOKEN_EXPIRED", "the token has expired")
    return claims


def bearer(authorization: str | None) -> str:
    """The token of an `Authorization: Bearer` header; 401 TOKEN_INVALID without one."""
    scheme, _, token = (authorization or "").strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise error(401, "TOKEN_INVALID", "a bearer token is required in Authorization")
    return token.strip()
