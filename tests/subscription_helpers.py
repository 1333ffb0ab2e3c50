"""An in-process server with subscriptions, on trio's clock, whose webhooks go to a fake
receiver (an httpx mock transport) and whose host names resolve as the test says."""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import attrs
import httpx
import trio

from actors.registry import Registry
from actors.service import Streams
from actors.storage import Storage
from actors.storage.memory import MemoryStorage
from actors.storage.subscriptions import MemorySubscriptions, SubscriptionStore
from actors.subscriptions import SubscriptionLimits, Subscriptions
from actors.webhooks import WebhookLimits, Webhooks
from streams.config import Settings
from streams.http import StreamsHTTP
from streams.subscriptions_http import mount
from tests.asgi import request

RECEIVER = "https://hooks.example/h"
PUBLIC = {"hooks.example": ["93.184.216.34"]}

Reply = Callable[[httpx.Request], httpx.Response]


def done(_: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json={"done": True})


def accepted(_: httpx.Request) -> httpx.Response:
    return httpx.Response(200, json={})


class Receiver:
    """Webhook requests as they come (`next`), answered by `reply`."""

    def __init__(self, reply: Reply = accepted) -> None:
        self.reply = reply
        self.send, self.requests = trio.open_memory_channel[httpx.Request](100)
        self.count = 0

    async def handle(self, req: httpx.Request) -> httpx.Response:
        await req.aread()
        self.count += 1
        self.send.send_nowait(req)
        return self.reply(req)

    async def next(self) -> dict[str, Any]:
        with trio.fail_after(600):  # virtual time: a delivery that never comes fails the test
            req = await self.requests.receive()
        body: dict[str, Any] = json.loads(req.content)
        body["_signature"] = req.headers["webhook-signature"]
        body["_raw"] = req.content
        body["_url"] = str(req.url)
        body["_host"] = req.headers["host"]
        return body


@attrs.define
class Served:
    app: StreamsHTTP
    subs: Subscriptions
    receiver: Receiver
    registry: Registry
    names: dict[str, list[str]]

    async def __call__(
        self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
    ) -> tuple[int, Any]:
        raw = (
            b"" if body is None else body if isinstance(body, bytes) else json.dumps(body).encode()
        )
        response = await request(self.app, method, path, raw, headers=headers)
        if not response.body:
            return response.status, None
        try:
            return response.status, json.loads(response.body)
        except ValueError:
            return response.status, response.body

    async def stream(self, path: str, body: Any = None, method: str = "PUT") -> int:
        raw = b"" if body is None else json.dumps(body).encode()
        status, _ = await self(method, path, raw, {"Content-Type": "application/json"})
        return status


@asynccontextmanager
async def serving(
    storage: Storage | None = None,
    store: SubscriptionStore | None = None,
    receiver: Receiver | None = None,
    names: dict[str, list[str]] | None = None,
    random_bytes: Callable[[int], bytes] | None = None,
    settings: dict[str, Any] | None = None,
    lead_retry: float = 1.0,
    **limits: Any,
) -> AsyncIterator[Served]:
    resolved = dict(PUBLIC) if names is None else names

    async def resolve(host: str, port: int) -> list[str]:
        if host not in resolved:
            raise OSError(f"{host} does not resolve")
        return resolved[host]

    receiver = receiver or Receiver()
    async with trio.open_nursery() as nursery:
        registry = Registry(storage or MemoryStorage(), clock=trio.current_time)
        await nursery.start(registry.run)
        streams = Streams(registry)
        http = StreamsHTTP(streams, Settings(storage_mode="memory", **(settings or {})))
        transport = httpx.MockTransport(receiver.handle)
        webhooks = Webhooks(WebhookLimits(timeout=5.0), resolve, transport)
        subs = Subscriptions(
            streams,
            store or MemorySubscriptions(),
            webhooks,
            SubscriptionLimits(**limits),
            clock=trio.current_time,
            random_bytes=random_bytes or secrets.token_bytes,
            lead_retry=lead_retry,
        )
        mount(http, subs)
        await nursery.start(subs.run)
        yield Served(http, subs, receiver, registry, resolved)
        nursery.cancel_scope.cancel()
