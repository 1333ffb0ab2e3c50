"""The subscription supervisor's operations for the HTTP adapter
(`streams.subscriptions_http`): each runs under the subscription's hold
(`Subscriptions._holding`), so it reads what is stored and saves what it changes.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any

import trio

from actors.service import Streams
from actors.storage.subscriptions import Held, SubscriptionStore
from actors.wakeups import Commits
from actors.webhooks import Webhooks
from streams.protocol import subscription_views as views
from streams.protocol import wake_tokens
from streams.protocol.errors import ProtocolError
from streams.protocol.subscription_config import Config, error, is_reserved
from streams.protocol.subscriptions import Clock, Subscription
from streams.protocol.webhook_signing import KeyRing

if TYPE_CHECKING:
    from collections.abc import Callable

    from actors.subscriptions import SubscriptionLimits


def not_found() -> ProtocolError:
    return error(404, "SUBSCRIPTION_NOT_FOUND", "subscription not found")


class Requests:
    """Mixed into `actors.subscriptions.Subscriptions`, whose state it shares."""

    streams: Streams
    commits: Commits
    store: SubscriptionStore
    webhooks: Webhooks
    limits: SubscriptionLimits
    clock: Callable[[], float]
    random_bytes: Callable[[int], bytes]
    subs: dict[str, Subscription]
    tails: dict[str, int]
    _events: dict[str, dict[str, int | None]]
    _locks: dict[str, trio.Lock]
    _held: dict[str, Held]
    _rearm: trio.Event

    if TYPE_CHECKING:

        @property
        def ring(self) -> KeyRing: ...

        def _holding(self, id: str) -> AbstractAsyncContextManager[Subscription | None]: ...

        async def _fresh_ring(self) -> KeyRing: ...

        async def _tail(self, name: str) -> int: ...

        def _time(self) -> Clock: ...

        def _kick(self, id: str) -> None: ...

        def _absorb(self) -> None: ...

        def _start_due(self, sub: Subscription) -> None: ...

    def signing(self, base_url: str) -> dict[str, str]:
        return {
            "alg": "ed25519",
            "kid": self.ring.active.kid,
            "jwks_url": base_url + "/__ds/jwks.json",
        }

    async def jwks(self) -> dict[str, Any]:
        return (await self._fresh_ring()).jwks()

    async def describe(self, id: str, base_url: str) -> dict[str, Any]:
        await self._fresh_ring()
        async with self._holding(id) as sub:
            return views.describe(_found(sub), self.tails, self.signing(base_url))

    async def create(self, id: str, config: Config, base_url: str) -> bool:
        """Create (True) or re-confirm (False) a subscription; 409 if it differs."""
        async with self._holding(id) as existing:
            if existing is not None:
                if existing.config.digest() != config.digest():
                    raise error(
                        409,
                        "SUBSCRIPTION_ALREADY_EXISTS",
                        "a subscription with this id has another configuration",
                    )
                return False
            count = await self._held[id].count() if self.store.shared else len(self.subs)
            if count >= self.limits.max_subscriptions:
                raise error(
                    409,
                    "SUBSCRIPTION_LIMIT",
                    f"at most {self.limits.max_subscriptions} subscriptions"
                    " (DS_SUBSCRIPTIONS__MAX_SUBSCRIPTIONS)",
                )
            if config.webhook_url is not None:
                await self.webhooks.check(config.webhook_url)
            incarnation = self.random_bytes(8).hex()
            sub = Subscription(id, incarnation, config, self.clock(), base_url)
            self.commits.enabled = True  # from here, commits concerning it are noted
            self._absorb()
            self.subs[id] = sub
            try:
                for path in config.streams:
                    await self._link(sub, path, "explicit")
                if config.pattern is not None:
                    for name in await self.streams.registry.storage.names():
                        if not is_reserved(name) and config.matches(name):
                            await self._link(sub, name, "glob")
            except BaseException:
                del self.subs[id]
                raise
        self._kick(id)
        return True

    async def _link(self, sub: Subscription, path: str, kind: str) -> None:
        """Link at the current tail: creating a subscription replays no history."""
        tail = await self._tail(path)
        if path in sub.links:
            sub.links[path].kinds.add(kind)
        elif not sub.link(path, kind, tail, self.limits.max_links):
            if path != sub.config.wake_stream:
                raise error(
                    409,
                    "SUBSCRIPTION_LIMIT",
                    f"at most {self.limits.max_links} streams per subscription"
                    " (DS_SUBSCRIPTIONS__MAX_LINKS)",
                )
            return
        self.tails.setdefault(path, tail)

    async def delete(self, id: str) -> None:
        """Tombstone: the record goes, and every token it issued with it (incarnation)."""
        async with self._holding(id):
            self.subs.pop(id, None)
            self._events.pop(id, None)
            self._locks.pop(id, None)

    async def add_streams(self, id: str, paths: tuple[str, ...]) -> None:
        async with self._holding(id) as sub:
            for path in paths:
                await self._link(_found(sub), path, "explicit")
        self._kick(id)

    async def remove_stream(self, id: str, path: str) -> None:
        async with self._holding(id) as sub:
            _found(sub).unlink_explicit(path)  # a glob link of the same stream stays

    async def claim(self, id: str, worker: str) -> dict[str, Any]:
        async with self._holding(id) as sub:
            body = _found(sub).claim(worker, self.tails, self._time())
        self._rearm.set()
        return body

    async def ack(self, id: str, token: str, body: dict[str, Any], kind: str) -> dict[str, Any]:
        """A webhook's callback (`kind` webhook) or a pull-wake worker's ack."""
        async with self._holding(id) as held:
            sub = _found(held)
            if sub.config.kind != kind:
                raise error(400, "INVALID_REQUEST", f"the subscription is not {kind}")
            claims = wake_tokens.verify(self.ring.token_key, token, self.clock())
            result = sub.ack(claims, body, self.tails, self._time())
        self._start_due(sub)
        return result

    async def release(self, id: str, token: str, body: dict[str, Any]) -> None:
        async with self._holding(id) as held:
            sub = _found(held)
            claims = wake_tokens.verify(self.ring.token_key, token, self.clock())
            sub.release(claims, body, self.tails, self._time())
        self._start_due(sub)


def _found(sub: Subscription | None) -> Subscription:
    if sub is None:
        raise not_found()
    return sub
