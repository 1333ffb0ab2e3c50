"""Webhook signing keys (PROTOCOL.md 6.5, 7.1, 12.10): Ed25519 keys, the JWK Set that
publishes them, and the `Webhook-Signature` header. Pure: seeds and time are passed in.

The ring's last key is the active one. A `kid` is `ds_` + the key's RFC 7638 JWK thumbprint,
so it is stable for the key's life and derived from its material. Rotation adds a key and
retires the previous one; a retired key stays published for `publish` seconds (at least the
receivers' replay window), since deliveries signed just before the rotation may still be
verified. The ring also holds the HMAC key of callback tokens (`wake_tokens`).
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import attrs
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

SEED_BYTES = 32


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


@attrs.frozen
class SigningKey:
    seed: bytes = attrs.field(repr=False)
    created: float
    retired: float | None = None

    @property
    def private(self) -> Ed25519PrivateKey:
        return Ed25519PrivateKey.from_private_bytes(self.seed)

    @property
    def x(self) -> str:
        raw = self.private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        return b64url(raw)

    @property
    def kid(self) -> str:
        thumbprint = json.dumps(
            {"crv": "Ed25519", "kty": "OKP", "x": self.x}, separators=(",", ":"), sort_keys=True
        )
        return "ds_" + b64url(hashlib.sha256(thumbprint.encode()).digest())

    def jwk(self) -> dict[str, str]:
        return {
            "kty": "OKP",
            "crv": "Ed25519",
            "kid": self.kid,
            "use": "sig",
            "alg": "EdDSA",
            "x": self.x,
        }


@attrs.define
class KeyRing:
    keys: list[SigningKey]
    token_key: bytes = attrs.field(repr=False)

    @classmethod
    def new(cls, seed: bytes, token_key: bytes, now: float) -> KeyRing:
        return cls([SigningKey(seed, now)], token_key)

    @property
    def active(self) -> SigningKey:
        return self.keys[-1]

    def sign(self, body: bytes, now: float) -> str:
        """`t=<unix seconds>,kid=<kid>,ed25519=<base64url signature of "t.body">`."""
        timestamp = int(now)
        key = self.active
        signature = key.private.sign(str(timestamp).encode() + b"." + body)
        return f"t={timestamp},kid={key.kid},ed25519={b64url(signature)}"

    def due(self, now: float, max_age: float) -> bool:
        """The active key is older than `max_age` seconds (0: never rotate)."""
        return max_age > 0 and now - self.active.created >= max_age

    def rotate(self, seed: bytes, now: float, publish: float) -> None:
        """A new active key; the old one retires, and keys retired over `publish` seconds
        ago are forgotten."""
        old = [k if k.retired is not None else attrs.evolve(k, retired=now) for k in self.keys]
        kept = [k for k in old if k.retired is not None and now - k.retired < publish]
        self.keys = [*kept, SigningKey(seed, now)]

    def jwks(self) -> dict[str, Any]:
        return {"keys": [key.jwk() for key in self.keys]}

    def encode(self) -> bytes:
        return json.dumps(
            {
                "token_key": b64url(self.token_key),
                "keys": [
                    {"seed": b64url(k.seed), "created": k.created, "retired": k.retired}
                    for k in self.keys
                ],
            }
        ).encode()

    @classmethod
    def decode(cls, raw: bytes) -> KeyRing:
        doc = json.loads(raw)

        def unb64(text: str) -> bytes:
            return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))

        keys = [SigningKey(unb64(k["seed"]), k["created"], k["retired"]) for k in doc["keys"]]
        if not keys or any(len(k.seed) != SEED_BYTES for k in keys):
            raise ValueError("a key ring holds at least one 32-byte seed")
        return cls(keys, unb64(doc["token_key"]))
