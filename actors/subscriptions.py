"""The subscription supervisor: every subscription's state, its persistence, its wakes.

Theory of operation. The rules are the pure state machine's
(`streams.protocol.subscriptions`, whose docstring has the states); this task keeps the
subscriptions in memory, saves each one (`actors.storage.subscriptions`) before the request
that changed it is answered, and does what the machine says is due: deliver a webhook
(`actors.webhooks`), post a wake event to a wake stream (an ordinary append, through the
stream's actor), or wait for a lease or a retry. It learns of new data from the commits
every actor notes (`actors.wakeups.Commits`), in the step that publishes the commit to
live readers, so it never reads a log and a commit never waits for it. Stream tails it
has not been told are asked of the streams' actors (`Describe`).

Changes to one subscription are serialized by its lock (so its saves land in order);
deliveries and posts run as tasks of their own, at most one per wake, and report back
under the lock. Nothing here blocks a stream actor: appends to wake streams are requests
like any other.
"""

from __future__ import annotations

import json
import logging
import math
import secrets
import time
from collections.abc import Callable
from typing import Any

import attrs
import trio

from actors import messages as m
from actors.service import Streams
from actors.storage.subscriptions import SubscriptionStore, load_ring
from actors.webhooks import Webhooks
from streams.protocol import subscription_views as views
from streams.protocol import wake_tokens
from streams.protocol.errors import ProtocolError
from streams.protocol.machine import AppendRequest
from streams.protocol.subscription_config import Config, error, is_reserved
from streams.protocol.subscriptions import Clock, Subscription
from streams.protocol.webhook_signing import SEED_BYTES, KeyRing

logger = logging.getLogger(__name__)


@attrs.frozen
class SubscriptionLimits:
    max_subscriptions: int = 1000
    max_links: int = 10_000  # streams linked to one subscription
    token_ttl: float = 3600.0  # callback and claim tokens
    key_max_age: float = 0.0  # rotate the signing key when older (0: never)
    key_publish: float = 86_400.0  # a retired key stays in the JWKS this long


def not_found() -> ProtocolError:
    return error(404, "SUBSCRIPTION_NOT_FOUND", "subscription not found")


class Subscriptions:
    def __init__(
        self,
        streams: Streams,
        store: SubscriptionStore,
        webhooks: Webhooks,
        limits: SubscriptionLimits,
        clock: Callable[[], float] = time.time,
        random_bytes: Callable[[int], bytes] = secrets.token_bytes,
    ) -> None:
        self.streams = streams
        self.commits = streams.registry.commits
        self.store = store
        self.webhooks = webhooks
        self.limits = limits
        self.clock = clock
        self.random_bytes = random_bytes
        self.subs: dict[str, Subscription] = {}
        self.tails: dict[str, int] = {}  # of the linked streams, as last noted
        self._ring: KeyRing | None = None
        self._locks: dict[str, trio.Lock] = {}
        self._busy: set[tuple[str, int]] = set()  # (id, generation) being delivered or posted
        self._kicked: set[str] = set()
        self._rearm = trio.Event()
        self._nursery: trio.Nursery | None = None

    # ---- running ------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await self._load()
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._absorbing)
                nursery.start_soon(self._timing)
                for id in list(self.subs):
                    self._kick(id)  # resume what a restart interrupted
                task_status.started()
        finally:
            with trio.CancelScope(shield=True):
                await self.webhooks.aclose()

    async def _load(self) -> None:
        self._ring = await load_ring(self.store, self.clock(), self.random_bytes)
        await self._maybe_rotate()
        for record in await self.store.load():
            try:
                sub = Subscription.of_record(json.loads(record))
            except (ValueError, KeyError, TypeError):
                logger.exception("a subscription record cannot be read: skipped")
                continue
            self.subs[sub.id] = sub
        self.commits.enabled = bool(self.subs)
        names = await self.streams.registry.storage.names() if self.subs else []
        for sub in self.subs.values():
            for name in names:  # streams first committed after the last save
                if not is_reserved(name) and sub.config.matches(name):
                    sub.link(name, "glob", -1, self.limits.max_links)
            for path in sub.links:
                if path not in self.tails:
                    self.tails[path] = await self._tail(path)

    @property
    def ring(self) -> KeyRing:
        assert self._ring is not None, "run() loads the keys first"
        return self._ring

    async def _maybe_rotate(self) -> None:
        if self.ring.due(self.clock(), self.limits.key_max_age):
            await self.rotate()

    async def rotate(self) -> None:
        """A new active signing key; the old one stays published (`key_publish`)."""
        self.ring.rotate(self.random_bytes(SEED_BYTES), self.clock(), self.limits.key_publish)
        await self.store.save_keys(self.ring.encode())
        logger.info("webhook signing key rotated: now %s", self.ring.active.kid)

    async def _tail(self, name: str) -> int:
        try:
            snapshot: m.Snapshot = await self.streams.registry.call(name, m.Describe())
        except ProtocolError:
            return 0  # no such stream (yet)
        return 0 if snapshot.soft_deleted else snapshot.tail

    def _time(self) -> Clock:
        return Clock(
            self.clock(),
            lambda: "w_" + self.random_bytes(12).hex(),
            self.ring.token_key,
            self.limits.token_ttl,
            int.from_bytes(self.random_bytes(4), "big") / 2**31 - 1.0,
        )

    def _lock(self, id: str) -> trio.Lock:
        return self._locks.setdefault(id, trio.Lock())

    def _absorb(self) -> None:
        """Apply the commits noted since last time, and kick the subscriptions they concern
        (whoever calls this: a request handler that takes the notes takes them for all)."""
        touched: set[str] = set()
        for name, tail in self.commits.take().items():
            if is_reserved(name):
                continue
            linked = False
            for sub in self.subs.values():
                if sub.committed(name, tail, self.limits.max_links):
                    touched.add(sub.id)
                    linked = linked or name in sub.links
            if tail is None or not linked:
                self.tails.pop(name, None)
            else:
                self.tails[name] = tail
        for id in touched:
            self._kick(id)

    async def _absorbing(self) -> None:
        while True:
            await self.commits.wait()
            self._absorb()

    def _kick(self, id: str) -> None:
        """Look at `id` soon: issue a wake if work is pending, end a lease that ran out."""
        if id not in self._kicked and self._nursery is not None:
            self._kicked.add(id)
            self._nursery.start_soon(self._settle, id)

    async def _settle(self, id: str) -> None:
        async with self._lock(id):
            self._kicked.discard(id)
            sub = self.subs.get(id)
            if sub is None:
                return
            self._absorb()
            before = sub.record()
            clock = self._time()
            sub.tick(self.tails, clock)
            sub.maybe_wake(self.tails, clock)
            if sub.record() != before:
                await self._save(sub)
            self._start_due(sub)

    def _deadline(self, sub: Subscription) -> float | None:
        if sub.id in self._kicked:
            return None  # looked at soon anyway (and the timer must not spin meanwhile)
        wake = sub.wake
        if wake is not None and (sub.id, wake.generation) in self._busy:
            return wake.lease_until  # its attempt is running: its result decides what next
        return sub.deadline()

    async def _timing(self) -> None:
        """Kick each subscription whose lease ends or whose retry is due."""
        while True:
            self._rearm = trio.Event()
            deadlines = [d for sub in self.subs.values() if (d := self._deadline(sub)) is not None]
            wait = max(0.0, min(deadlines) - self.clock()) if deadlines else math.inf
            with trio.move_on_after(wait):
                await self._rearm.wait()
                continue
            now = self.clock()
            for sub in list(self.subs.values()):
                deadline = self._deadline(sub)
                if deadline is not None and deadline <= now:
                    self._kick(sub.id)
            await trio.sleep(0)  # let the kicks run before looking again

    def _start_due(self, sub: Subscription) -> None:
        self._rearm.set()
        wake, due = sub.wake, sub.due(self.clock())
        if wake is None or due is None or (sub.id, wake.generation) in self._busy:
            return
        assert self._nursery is not None
        self._busy.add((sub.id, wake.generation))
        work = self._deliver if due == "deliver" else self._post
        self._nursery.start_soon(work, sub, wake.generation)

    async def _save(self, sub: Subscription) -> None:
        await self.store.save(sub.id, json.dumps(sub.record()).encode())

    async def _deliver(self, sub: Subscription, generation: int) -> None:
        try:
            await self._maybe_rotate()
            assert sub.config.webhook_url is not None
            body = json.dumps(views.payload(sub, self.tails)).encode()
            signature = self.ring.sign(body, self.clock())
            outcome = await self.webhooks.post(sub.config.webhook_url, body, signature)
            if not outcome.ok:
                logger.warning("webhook delivery of %r failed: %s", sub.id, outcome.detail)
            async with self._lock(sub.id):
                if self.subs.get(sub.id) is not sub:
                    return  # deleted meanwhile: its result changes nothing
                self._absorb()
                if outcome.ok:
                    sub.delivered(generation, outcome.done, self._time(), self.tails)
                else:
                    sub.failed(generation, self._time())
                await self._save(sub)
                self._busy.discard((sub.id, generation))
                self._start_due(sub)
        finally:
            self._busy.discard((sub.id, generation))
            self._rearm.set()

    async def _post(self, sub: Subscription, generation: int) -> None:
        try:
            stream = sub.config.wake_stream
            assert stream is not None
            event = json.dumps(views.wake_event(sub, self.clock(), self.tails)).encode()
            try:
                snapshot: m.Snapshot = await self.streams.registry.call(stream, m.Describe())
                request = AppendRequest(snapshot.config.content_type, event)
                await self.streams.append(stream, request)
            except ProtocolError as failure:
                logger.warning("wake event of %r not written to %r: %s", sub.id, stream, failure)
            async with self._lock(sub.id):
                if self.subs.get(sub.id) is sub:
                    sub.posted(generation)
                    await self._save(sub)
        finally:
            self._busy.discard((sub.id, generation))

    # ---- the HTTP adapter's operations ---------------------------------------------------

    def _get(self, id: str) -> Subscription:
        sub = self.subs.get(id)
        if sub is None:
            raise not_found()
        return sub

    def signing(self, base_url: str) -> dict[str, str]:
        return {
            "alg": "ed25519",
            "kid": self.ring.active.kid,
            "jwks_url": base_url + "/__ds/jwks.json",
        }

    def jwks(self) -> dict[str, Any]:
        return self.ring.jwks()

    def describe(self, id: str, base_url: str) -> dict[str, Any]:
        return views.describe(self._get(id), self.tails, self.signing(base_url))

    async def create(self, id: str, config: Config, base_url: str) -> bool:
        """Create (True) or re-confirm (False) a subscription; 409 if it differs."""
        async with self._lock(id):
            existing = self.subs.get(id)
            if existing is not None:
                if existing.config.digest() != config.digest():
                    raise error(
                        409,
                        "SUBSCRIPTION_ALREADY_EXISTS",
                        "a subscription with this id has another configuration",
                    )
                return False
            if len(self.subs) >= self.limits.max_subscriptions:
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
                await self._save(sub)
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
        async with self._lock(id):
            if self.subs.pop(id, None) is not None:
                await self.store.remove(id)
            self._locks.pop(id, None)

    async def add_streams(self, id: str, paths: tuple[str, ...]) -> None:
        async with self._lock(id):
            sub = self._get(id)
            for path in paths:
                await self._link(sub, path, "explicit")
            await self._save(sub)
        self._kick(id)

    async def remove_stream(self, id: str, path: str) -> None:
        async with self._lock(id):
            sub = self._get(id)
            sub.unlink_explicit(path)  # a glob link of the same stream stays
            await self._save(sub)

    async def claim(self, id: str, worker: str) -> dict[str, Any]:
        async with self._lock(id):
            sub = self._get(id)
            self._absorb()
            body = sub.claim(worker, self.tails, self._time())
            await self._save(sub)
            self._rearm.set()
            return body

    async def ack(self, id: str, token: str, body: dict[str, Any], kind: str) -> dict[str, Any]:
        """A webhook's callback (`kind` webhook) or a pull-wake worker's ack."""
        async with self._lock(id):
            sub = self._get(id)
            if sub.config.kind != kind:
                raise error(400, "INVALID_REQUEST", f"the subscription is not {kind}")
            claims = wake_tokens.verify(self.ring.token_key, token, self.clock())
            self._absorb()
            result = sub.ack(claims, body, self.tails, self._time())
            await self._save(sub)
            self._start_due(sub)
            return result

    async def release(self, id: str, token: str, body: dict[str, Any]) -> None:
        async with self._lock(id):
            sub = self._get(id)
            claims = wake_tokens.verify(self.ring.token_key, token, self.clock())
            self._absorb()
            sub.release(claims, body, self.tails, self._time())
            await self._save(sub)
            self._start_due(sub)
