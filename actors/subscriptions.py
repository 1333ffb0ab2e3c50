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

Changes to one subscription are serialized by its hold (`_holding`: its lock here and the
store's hold, which in postgres mode locks it in the database and reads it again, so no
process trusts a cached copy), and saved as the hold ends; deliveries and posts run as tasks
of their own, at most one per wake, and report back under a hold. Commits are applied to
the subscriptions they concern under the hold too (`_events`). Nothing here blocks a stream
actor: appends to wake streams are requests like any other.

With a shared store (several processes on one database) every process applies its own
commits and requests, and exactly one, the `delivering` one, delivers, posts and runs the
timers (`actors.subscription_sharing`, docs/subscriptions.md "Several processes").
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import secrets
import time
from collections.abc import AsyncIterator, Callable

import attrs
import trio

from actors import messages as m
from actors.service import Streams
from actors.storage.subscriptions import Held, SubscriptionStore, load_ring
from actors.subscription_requests import Requests
from actors.subscription_sharing import Sharing, concerns, log_failure
from actors.webhooks import Webhooks
from streams.protocol import subscription_views as views
from streams.protocol.errors import ProtocolError
from streams.protocol.machine import AppendRequest
from streams.protocol.subscription_config import is_reserved
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


RECENT = 1024  # shared store: commits no cached subscription took, kept for one that arrives


class Subscriptions(Sharing, Requests):
    def __init__(
        self,
        streams: Streams,
        store: SubscriptionStore,
        webhooks: Webhooks,
        limits: SubscriptionLimits,
        clock: Callable[[], float] = time.time,
        random_bytes: Callable[[int], bytes] = secrets.token_bytes,
        lead_retry: float = 1.0,
    ) -> None:
        self.streams = streams
        self.commits = streams.registry.commits
        self.store = store
        self.webhooks = webhooks
        self.limits = limits
        self.clock = clock
        self.random_bytes = random_bytes
        self.lead_retry = lead_retry  # shared store: how often to try for the lead
        self.subs: dict[str, Subscription] = {}
        self.tails: dict[str, int] = {}  # of the linked streams, as last noted
        self.delivering = not store.shared  # deliver, post and run timers here
        self._ring: KeyRing | None = None
        self._locks: dict[str, trio.Lock] = {}
        self._events: dict[str, dict[str, int | None]] = {}  # commits to apply, by subscription
        self._recent: dict[str, int | None] = {}  # shared: commits no subscription took
        self._seen: dict[str, bytes] = {}  # shared: each record as last read
        self._held: dict[str, Held] = {}  # the store's holds in progress, by id
        self._names: dict[int, str] = {}  # shared: stream rows' names
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
                if self.store.shared:
                    nursery.start_soon(self._leading)
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
        self.commits.enabled = self.store.shared or bool(self.subs)
        await self._catch_up_links()

    async def _catch_up_links(self) -> None:
        """Streams first committed after the last save are linked by the next settle."""
        names = await self.streams.registry.storage.names() if self.subs else []
        for sub in self.subs.values():
            for name in names:
                if not is_reserved(name) and name not in sub.links and sub.config.matches(name):
                    self._events.setdefault(sub.id, {})[name] = 0
            if not self.store.shared:  # (shared: each hold asks for the tails it needs)
                for path in [*sub.links, *self._events.get(sub.id, {})]:
                    if path not in self.tails:
                        self.tails[path] = await self._tail(path)

    @property
    def ring(self) -> KeyRing:
        assert self._ring is not None, "run() loads the keys first"
        return self._ring

    async def _fresh_ring(self) -> KeyRing:
        """The key ring as stored: another process may have rotated it (shared store)."""
        if self.store.shared:
            raw = await self.store.load_keys()
            if raw is not None:
                self._ring = KeyRing.decode(raw)
        return self.ring

    async def _maybe_rotate(self) -> None:
        if self.ring.due(self.clock(), self.limits.key_max_age):
            await self.rotate(only_if_due=True)

    async def rotate(self, only_if_due: bool = False) -> None:
        """A new active signing key; the old one stays published (`key_publish`). The ring
        is changed as stored, under the store's lock: two processes rotate once."""
        now, seed, was = self.clock(), self.random_bytes(SEED_BYTES), self.ring.active.kid

        def rotated(raw: bytes | None) -> bytes:
            ring = self.ring if raw is None else KeyRing.decode(raw)
            if not only_if_due or ring.due(now, self.limits.key_max_age):
                ring.rotate(seed, now, self.limits.key_publish)
            return ring.encode()

        self._ring = KeyRing.decode(await self.store.update_keys(rotated))
        if self.ring.active.kid != was:
            logger.info("webhook signing key rotated: now %s", self.ring.active.kid)

    async def _tail(self, name: str) -> int:
        try:
            return await self._existing_tail(name) or 0
        except ProtocolError:
            return 0  # not readable now: as if it had nothing yet

    async def _existing_tail(self, name: str) -> int | None:
        """The stream's tail, or None if it does not exist (or is soft-deleted); another
        failure (its actor failed, a timeout) is raised, not taken for a deletion."""
        try:
            snapshot: m.Snapshot = await self.streams.registry.call(name, m.Describe())
        except ProtocolError as failure:
            if failure.status in (404, 410):
                return None
            raise
        return None if snapshot.soft_deleted else snapshot.tail

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

    @contextlib.asynccontextmanager
    async def _holding(self, id: str) -> AsyncIterator[Subscription | None]:
        """Subscription `id` (None: there is none) to read or change: locked here and in the
        store, read again from a shared store, the commits that concern it applied,
        (shared) its streams' tails asked, and a lease that ran out ended. What the block
        leaves in `self.subs[id]` is saved (or removed) as it ends; a block that raises
        saves nothing."""
        async with self._lock(id), self.store.hold(id) as held:
            self._held[id] = held
            try:
                sub, stored = await self._prepare(id, held.record)
                yield sub
                after = self.subs.get(id)
                if after is None:
                    if stored is not None:
                        await held.remove()
                elif (raw := _encoded(after)) != stored:
                    await held.save(raw)
                    if self.store.shared:
                        self._seen[id] = raw
            except BaseException:
                self._seen.pop(id, None)  # what is cached may differ from what is stored
                raise
            finally:
                del self._held[id]

    async def _prepare(
        self, id: str, record: bytes | None
    ) -> tuple[Subscription | None, bytes | None]:
        """`_holding`'s first half: the subscription made current, and its record as
        stored (to save it only if it changed)."""
        shared = self.store.shared
        if shared:
            self._adopt(id, record)
        self._absorb()
        sub = self.subs.get(id)
        stored = record if shared else (None if sub is None else _encoded(sub))
        if sub is not None:
            for name, tail in self._events.pop(id, {}).items():
                sub.committed(name, tail, self.limits.max_links)
            if shared:
                await self._look(sub)
            # A lease that ran out has ended, whether or not the timer (perhaps on another
            # process) has ended it yet.
            sub.tick(self.tails, self._time())
        return sub, stored

    def _absorb(self) -> None:
        """Note the commits since last time for the subscriptions they concern, and kick
        those (whoever calls this: a request handler that takes the notes takes them for
        all); each applies them under its hold."""
        touched: set[str] = set()
        for name, tail in self.commits.take().items():
            if is_reserved(name):
                continue
            concerned = [sub.id for sub in self.subs.values() if concerns(sub, name, tail)]
            for id in concerned:
                self._events.setdefault(id, {})[name] = tail
            touched.update(concerned)
            if tail is None or not concerned:
                self.tails.pop(name, None)
            else:
                self.tails[name] = tail
            if self.store.shared and not concerned:
                self._recent.pop(name, None)
                self._recent[name] = tail
                if len(self._recent) > RECENT:
                    del self._recent[next(iter(self._recent))]
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
        try:
            async with self._holding(id) as sub:
                self._kicked.discard(id)
                if sub is not None:
                    clock = self._time()
                    sub.tick(self.tails, clock)
                    sub.maybe_wake(self.tails, clock)
        except Exception as failure:  # the database, at worst: looked at again soon
            self._kicked.discard(id)
            if not self.store.shared:
                raise
            log_failure(failure, "subscription %r could not be looked at", id)
            await trio.sleep(self.lead_retry)
            self._kick(id)
            return
        if sub is not None:
            self._start_due(sub)

    def _deadline(self, sub: Subscription) -> float | None:
        if not self.delivering or sub.id in self._kicked:
            return None  # another process's, or looked at soon anyway (no spinning meanwhile)
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
        if not self.delivering or wake is None or due is None:
            return
        if (sub.id, wake.generation) in self._busy:
            return
        assert self._nursery is not None
        self._busy.add((sub.id, wake.generation))
        work = self._deliver if due == "deliver" else self._post
        self._nursery.start_soon(work, sub, wake.generation)

    async def _deliver(self, sub: Subscription, generation: int) -> None:
        try:
            await self._fresh_ring()
            await self._maybe_rotate()
            assert sub.config.webhook_url is not None
            body = json.dumps(views.payload(sub, self.tails)).encode()
            signature = self.ring.sign(body, self.clock())
            outcome = await self.webhooks.post(sub.config.webhook_url, body, signature)
            if not outcome.ok:
                logger.warning("webhook delivery of %r failed: %s", sub.id, outcome.detail)
            async with self._holding(sub.id) as current:
                if current is not sub:
                    return  # deleted meanwhile: its result changes nothing
                if outcome.ok:
                    sub.delivered(generation, outcome.done, self._time(), self.tails)
                else:
                    sub.failed(generation, self._time())
            self._busy.discard((sub.id, generation))
            self._start_due(sub)
        except Exception as failure:  # the database, at worst: the wake stays due, delivered again
            if not self.store.shared:
                raise
            log_failure(failure, "the delivery to %r could not be recorded", sub.id)
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
            async with self._holding(sub.id) as current:
                if current is sub:
                    sub.posted(generation)
        except Exception as failure:  # the database, at worst: the wake stays due, posted again
            if not self.store.shared:
                raise
            log_failure(failure, "the wake event of %r could not be recorded", sub.id)
        finally:
            self._busy.discard((sub.id, generation))


def _encoded(sub: Subscription) -> bytes:
    return json.dumps(sub.record()).encode()
