"""What a subscription asks for (PROTOCOL.md section 6): its configuration, parsed from a
`PUT __ds/subscriptions/:id` body, its identity hash, and the glob rules of `pattern`.

Pure: no trio, no I/O. Errors are the subscription APIs' JSON (`{"error": {"code", ...}}`),
raised as `ProtocolError`s whose `code` the HTTP adapter renders.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any, Literal

import attrs

from streams.protocol.errors import ProtocolError

Kind = Literal["webhook", "pull-wake"]
DEFAULT_LEASE_MS = 30_000
MIN_LEASE_MS = 1_000
MAX_LEASE_MS = 600_000
RESERVED = "__ds"


def error(status: int, code: str, message: str, **fields: object) -> ProtocolError:
    """A subscription API error: rendered as `{"error": {"code", "message", **fields}}`."""
    return ProtocolError(status, code, message, code=code, fields=fields)


def invalid(message: str) -> ProtocolError:
    return error(400, "INVALID_REQUEST", message)


def normalize(path: str) -> str:
    """A stream-root-relative path without leading or trailing slashes."""
    return path.strip("/")


def glob_match(pattern: str, path: str) -> bool:
    """`*` matches one segment, `**` zero or more; anything else matches itself. Iterative
    (a pattern of many `**` cannot recurse deeply): the classic two-pointer wildcard match
    over segments, where `**` is the star."""
    want = [s for s in normalize(pattern).split("/") if s]
    have = [s for s in normalize(path).split("/") if s]
    p = s = 0
    star_p, star_s = -1, 0
    while s < len(have):
        if p < len(want) and want[p] == "**":
            star_p, star_s = p, s
            p += 1
        elif p < len(want) and want[p] in ("*", have[s]):
            p += 1
            s += 1
        elif star_p >= 0:
            p, star_s = star_p + 1, star_s + 1
            s = star_s
        else:
            return False
    while p < len(want) and want[p] == "**":
        p += 1
    return p == len(want)


def is_reserved(path: str) -> bool:
    return path == RESERVED or path.startswith(RESERVED + "/")


@attrs.frozen
class Config:
    """A subscription's configuration: what its identity hash covers."""

    kind: Kind
    pattern: str | None
    streams: tuple[str, ...]  # sorted, without duplicates
    webhook_url: str | None
    wake_stream: str | None
    lease_ttl_ms: int
    description: str | None

    def digest(self) -> str:
        """The normalized configuration's hash: equal configurations re-confirm (200)."""
        canonical = {
            "type": self.kind,
            "pattern": self.pattern,
            "streams": list(self.streams),
            "webhook": None if self.webhook_url is None else {"url": self.webhook_url},
            "wake_stream": self.wake_stream,
            "lease_ttl_ms": self.lease_ttl_ms,
            "description": self.description,
        }
        encoded = json.dumps(canonical, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(encoded.encode()).hexdigest()

    def matches(self, path: str) -> bool:
        return self.pattern is not None and glob_match(self.pattern, path)

    def record(self) -> dict[str, Any]:
        return {**attrs.asdict(self), "streams": list(self.streams)}

    @classmethod
    def of_record(cls, record: Mapping[str, Any]) -> Config:
        return cls(**{**record, "streams": tuple(record["streams"])})


@attrs.frozen
class Limits:
    max_streams: int = 1000  # explicit streams in one request
    max_path_bytes: int = 1024  # a stream path, a pattern, the wake stream
    max_text_bytes: int = 1024  # an id, a worker name, a description, a URL


def parse_id(raw: str, limits: Limits) -> str:
    if not raw or len(raw.encode()) > limits.max_text_bytes or "/" in raw or "\x00" in raw:
        raise invalid(f"a subscription id is 1 to {limits.max_text_bytes} bytes, without '/'")
    return raw


def parse_json(body: bytes) -> dict[str, Any]:
    """A request body that must be a JSON object (empty: an empty object)."""
    if not body.strip():
        return {}
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise invalid("the body is not valid JSON") from None
    if not isinstance(value, dict):
        raise invalid("the body must be a JSON object")
    return value


def path_list(value: object, limits: Limits, field: str = "streams") -> tuple[str, ...]:
    """Stream paths, normalized, sorted and without duplicates."""
    if not isinstance(value, list) or len(value) > limits.max_streams:
        raise invalid(f"{field} must be an array of at most {limits.max_streams} paths")
    return tuple(sorted({stream_path(item, limits, field) for item in value}))


def stream_path(value: object, limits: Limits, field: str) -> str:
    if not isinstance(value, str):
        raise invalid(f"{field} must hold stream paths (strings)")
    path = normalize(value)
    if not path or len(path.encode()) > limits.max_path_bytes or "\x00" in path:
        raise invalid(f"{field}: a stream path is 1 to {limits.max_path_bytes} bytes")
    if is_reserved(path):
        raise invalid(f"{field}: {RESERVED}/ paths are reserved")
    return path


def _text(payload: Mapping[str, Any], field: str, limits: Limits) -> str | None:
    value = payload.get(field)
    if value is None:
        return None
    if not isinstance(value, str) or len(value.encode()) > limits.max_text_bytes:
        raise invalid(f"{field} must be a string of at most {limits.max_text_bytes} bytes")
    return value


def parse_config(body: bytes, limits: Limits) -> Config:
    """A create request's configuration, or 400 INVALID_REQUEST saying what is wrong. The
    webhook URL's safety is checked elsewhere (`webhook_urls`): it needs name resolution."""
    payload = parse_json(body)
    kind = payload.get("type")
    if kind not in ("webhook", "pull-wake"):
        raise invalid('type must be "webhook" or "pull-wake"')
    pattern = payload.get("pattern")
    if pattern is not None:
        pattern = stream_path(pattern, limits, "pattern")
    streams = path_list(payload.get("streams", []), limits)
    if pattern is None and not streams:
        raise invalid("at least one of pattern or streams is required")
    lease = payload.get("lease_ttl_ms", DEFAULT_LEASE_MS)
    if (
        not isinstance(lease, int)
        or isinstance(lease, bool)
        or not MIN_LEASE_MS <= lease <= MAX_LEASE_MS
    ):
        raise invalid(f"lease_ttl_ms must be an integer from {MIN_LEASE_MS} to {MAX_LEASE_MS}")
    url = wake_stream = None
    if kind == "webhook":
        webhook = payload.get("webhook")
        url = _text(webhook, "url", limits) if isinstance(webhook, dict) else None
        if not url:
            raise invalid("webhook subscriptions require webhook.url")
    else:
        raw = payload.get("wake_stream")
        if raw is None:
            raise invalid("pull-wake subscriptions require wake_stream")
        wake_stream = stream_path(raw, limits, "wake_stream")
    description = _text(payload, "description", limits)
    return Config(kind, pattern, streams, url, wake_stream, lease, description)
