"""Bearer JWTs (`DS_AUTH__MODE=jwt`): verify a request's token with pyjwt, then check its
grants (`streams.protocol.grants`) against what the request needs.

The algorithm is fixed by the configured key, never taken from the token: HS256 with
`DS_AUTH__JWT_SECRET`, or the public-key algorithm of the JWKS key the token's `kid` names
(so never `none`, and never HS256 keyed with a public key). Verification is CPU work of tens
of microseconds, done on every request: nothing is cached, so nothing outlives a token's
expiry. Tokens are never logged, and errors never echo them.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jwt

from streams.protocol import grants
from streams.protocol.grants import Grants

if TYPE_CHECKING:
    from streams.config import Settings
    from streams.request import Request

HMAC = "HS256"
PUBLIC_KEY_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
MIN_SECRET_BYTES = 32  # RFC 7518 section 3.2: an HS256 key is at least the hash's size
REQUIRED_CLAIMS = ["exp"]  # a token that never expires is refused
BEARER = re.compile(r"Bearer +([A-Za-z0-9._~+/-]+=*) *", re.IGNORECASE)  # RFC 6750 2.1
REASONS: tuple[tuple[type[Exception], str], ...] = (
    (jwt.ExpiredSignatureError, "the token has expired"),
    (jwt.ImmatureSignatureError, "the token is not valid yet"),
    (jwt.InvalidAudienceError, "the token is for another audience"),
    (jwt.InvalidIssuerError, "the token is from another issuer"),
    (jwt.InvalidAlgorithmError, "the token's algorithm is not accepted"),
    (jwt.InvalidSignatureError, "the token's signature does not verify"),
)

Key = tuple[Any, str]  # a verification key and its one algorithm


class Authenticator:
    """Admits a request whose bearer token verifies and grants what the request needs."""

    def __init__(
        self,
        keys: dict[str | None, Key],
        *,
        audience: str | None,
        issuer: str | None,
        leeway: float,
        max_name_bytes: int,
    ) -> None:
        self.keys = keys  # by kid; None: a key for tokens that name none
        self.audience = audience
        self.issuer = issuer
        self.leeway = leeway
        self.max_name_bytes = max_name_bytes

    def admit(self, request: Request, name: str) -> None:
        """Raise 401 or 403 unless the request may go on; before any body is read."""
        request.private = True  # what a token may read is not for shared caches
        if request.method not in grants.METHODS:
            return  # OPTIONS preflights (browsers send no token) and methods refused anyway
        granted = self.grants(request.headers.get("authorization"))
        for need in grants.needed(request.method, name, request.headers, self.max_name_bytes):
            if not granted.allows(need):
                raise grants.forbidden(need)

    def grants(self, authorization: str | None) -> Grants:
        """The grants of the token in an `Authorization` header."""
        if authorization is None or not authorization.lower().startswith("bearer"):
            raise grants.unauthorized("a bearer token is required", invalid=False)
        match = BEARER.fullmatch(authorization)
        if match is None:
            raise grants.unauthorized("the Authorization header is not a bearer token")
        claims = self._verify(match[1])
        scope = claims.get("scope", "")
        if not isinstance(scope, str):
            raise grants.unauthorized("the token's scope claim is not a string")
        return grants.parse_scope(scope)

    def _verify(self, token: str) -> dict[str, Any]:
        try:
            key, algorithm = self._key(token)
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                options={"require": REQUIRED_CLAIMS, "verify_aud": self.audience is not None},
            )
        except jwt.PyJWTError as error:
            raise grants.unauthorized(_reason(error)) from None
        return claims

    def _key(self, token: str) -> Key:
        if None in self.keys and len(self.keys) == 1:
            return self.keys[None]
        kid = jwt.get_unverified_header(token).get("kid")
        key = self.keys.get(kid) if isinstance(kid, str) else None
        if key is None:
            raise grants.unauthorized("the token's key (kid) is not one of the server's")
        return key


def authenticator(settings: Settings) -> Authenticator | None:
    """The authenticator the settings ask for (None with auth off); a ValueError naming the
    setting if they are incomplete or the JWKS file cannot be used."""
    if settings.auth_mode == "off":
        return None
    secret, jwks = settings.auth_jwt_secret, settings.auth_jwks_path
    if (secret is None) == (jwks is None):
        raise ValueError(
            "DS_AUTH__MODE=jwt needs exactly one of DS_AUTH__JWT_SECRET (HS256) and"
            " DS_AUTH__JWKS_PATH (public keys)"
        )
    if secret is not None:
        if len(secret.encode()) < MIN_SECRET_BYTES:
            raise ValueError(f"DS_AUTH__JWT_SECRET must be at least {MIN_SECRET_BYTES} bytes")
        keys: dict[str | None, Key] = {None: (secret, HMAC)}
    else:
        assert jwks is not None
        keys = read_jwks(jwks)
    return Authenticator(
        keys,
        audience=settings.auth_audience,
        issuer=settings.auth_issuer,
        leeway=settings.auth_leeway,
        max_name_bytes=settings.max_name_bytes,
    )


def read_jwks(path: Path) -> dict[str | None, Key]:
    """The public signature keys of a JWKS file, by kid (None for a lone key without one)."""
    where = f"DS_AUTH__JWKS_PATH ({path})"
    try:
        document = json.loads(path.read_bytes())
    except OSError as error:
        raise ValueError(f"{where} cannot be read: {error.strerror}") from None
    except ValueError:
        raise ValueError(f"{where} is not JSON") from None
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        raise ValueError(f'{where} is not a JWKS: a JSON object {{"keys": [...]}}')
    keys: dict[str | None, Key] = {}
    for index, entry in enumerate(entries):
        if isinstance(entry, dict) and entry.get("use", "sig") != "sig":
            continue  # an encryption key
        kid, key = _public_key(entry, f"{where}: key {index}")
        if kid in keys:
            raise ValueError(f"{where}: key {index}: kid {kid!r} is used twice")
        keys[kid] = key
    if not keys:
        raise ValueError(f"{where} holds no signature keys")
    if None in keys and len(keys) > 1:
        raise ValueError(f"{where}: with several keys, each needs a kid")
    return keys


def _public_key(entry: object, where: str) -> tuple[str | None, Key]:
    if not isinstance(entry, dict):
        raise ValueError(f"{where} is not a JSON object")
    if "d" in entry:
        raise ValueError(f"{where} is a private key: the server needs only the public one")
    kid = entry.get("kid")
    if kid is not None and not isinstance(kid, str):
        raise ValueError(f"{where}: kid must be a string")
    try:
        jwk = jwt.PyJWK(entry)
    except jwt.PyJWTError as error:  # its message may quote the key: the type says enough
        raise ValueError(f"{where} is not a usable key ({type(error).__name__})") from None
    if jwk.algorithm_name not in PUBLIC_KEY_ALGORITHMS:
        raise ValueError(
            f"{where}: {jwk.algorithm_name} is not a public-key signature algorithm"
            " (an HS256 secret goes in DS_AUTH__JWT_SECRET)"
        )
    return kid, (jwk.key, jwk.algorithm_name)


def _reason(error: jwt.PyJWTError) -> str:
    """Why a token was refused, in words of our own: pyjwt's never reach the client."""
    if isinstance(error, jwt.MissingRequiredClaimError):
        return f"the token has no {error.claim} claim"  # one of ours: exp, aud or iss
    for kind, reason in REASONS:
        if isinstance(error, kind):
            return reason
    return "the token is malformed"
