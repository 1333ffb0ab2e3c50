"""What a subscription says: its GET body, a webhook delivery's body, a wake event.
Pure. A description (GET) holds no secret: the signing metadata is public; only a
delivery's body carries its wake's callback token."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from streams.protocol.subscriptions import Subscription


def action_url(sub: Subscription, action: str) -> str:
    return f"{sub.base_url}/__ds/subscriptions/{quote(sub.id, safe='')}/{action}"


def describe(
    sub: Subscription, tails: Mapping[str, int], signing: Mapping[str, str]
) -> dict[str, Any]:
    """GET's body (and PUT's): never a secret."""
    config = sub.config
    streams = [
        {k: info[k] for k in ("path", "link_type", "acked_offset")}
        for info in sub.stream_infos(tails)
    ]
    webhook = (
        None
        if config.webhook_url is None
        else {"url": config.webhook_url, "signing": dict(signing)}
    )
    return {
        "id": sub.id,
        "subscription_id": sub.id,
        "type": config.kind,
        "pattern": config.pattern,
        "streams": streams,
        "webhook": webhook,
        "wake_stream": config.wake_stream,
        "lease_ttl_ms": config.lease_ttl_ms,
        "created_at": iso(sub.created_at),
        "status": sub.status,
        "description": config.description,
    }


def payload(sub: Subscription, tails: Mapping[str, int]) -> dict[str, Any]:
    """A webhook delivery's body."""
    assert sub.wake is not None
    return {
        "subscription_id": sub.id,
        "wake_id": sub.wake.id,
        "generation": sub.wake.generation,
        "streams": sub.stream_infos(tails),
        "callback_url": action_url(sub, "callback"),
        "callback_token": sub.wake.token,
    }


def wake_event(sub: Subscription, now: float, tails: Mapping[str, int]) -> dict[str, Any]:
    """A pull-wake wake event, naming the first stream with pending work."""
    assert sub.wake is not None
    pending = sub.pending(tails)
    return {
        "type": "wake",
        "subscription_id": sub.id,
        "stream": pending[0] if pending else None,
        "generation": sub.wake.generation,
        "ts": int(now * 1000),
    }


def iso(unix: float) -> str:
    """RFC 3339 in UTC with milliseconds, as the spec's example."""
    moment = datetime.fromtimestamp(unix, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
