"""The subscription supervisor's part for several processes on one store (postgres mode;
docs/subscriptions.md, "Several processes"): a subscription read again from the store under
its hold, the streams looked at as they are now, the lead (exactly one process delivers,
posts and runs the timers), and other processes' changes arriving as notifications.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING

import attrs
import trio

from actors.storage import Unavailable
from actors.storage.subscriptions import Held, SubscriptionStore
from streams.protocol.errors import ProtocolError
from streams.protocol.subscription_config import is_reserved
from streams.protocol.subscriptions import Subscription

if TYPE_CHECKING:
    from actors.subscriptions import SubscriptionLimits

logger = logging.getLogger(__name__)
NAMES = 65_536  # stream rows' names kept (forgotten all at once beyond)


class Sharing:
    """Mixed into `actors.subscriptions.Subscriptions`, whose state it shares."""

    store: SubscriptionStore
    limits: SubscriptionLimits
    subs: dict[str, Subscription]
    tails: dict[str, int]
    delivering: bool
    lead_retry: float
    _events: dict[str, dict[str, int | None]]
    _recent: dict[str, int | None]
    _seen: dict[str, bytes]
    _held: dict[str, Held]
    _names: dict[int, str]  # stream rows' names, as `moved` learned them
    _rearm: trio.Event
    _nursery: trio.Nursery | None

    if TYPE_CHECKING:

        def _lock(self, id: str) -> trio.Lock: ...

        def _kick(self, id: str) -> None: ...

        async def _existing_tail(self, name: str) -> int | None: ...

        async def _catch_up_links(self) -> None: ...

    async def _look(self, sub: Subscription) -> None:
        """Shared store: what the streams are now, whichever process committed to them. The
        linked streams' tails are asked (a stream gone is a deletion), and streams that
        match the pattern and are not linked yet are linked before their data: the process
        that created one may not have applied it yet."""
        for path in list(sub.links):
            tail = await self._existing_tail(path)
            sub.committed(path, tail, self.limits.max_links)
            if tail is None:
                self.tails.pop(path, None)
            else:
                self.tails[path] = tail
        pattern = sub.config.pattern
        if pattern is None:
            return
        literal = next((part for part in pattern.split("/") if part not in ("", "*", "**")), "")
        for name in await self._held[sub.id].names(literal):
            if name in sub.links or is_reserved(name) or not sub.config.matches(name):
                continue
            tail = await self._existing_tail(name)
            if tail is not None and sub.committed(name, tail, self.limits.max_links):
                self.tails[name] = tail

    def _adopt(self, id: str, raw: bytes | None) -> None:
        """The record of `id` as stored (shared store) becomes the cached one; the commits
        this process noted recently that concern it are applied to it (it may have been
        made, or linked, elsewhere just before they were noted)."""
        if raw is None:
            self.subs.pop(id, None)
            self._seen.pop(id, None)
            return
        if self._seen.get(id) == raw and id in self.subs:
            return
        self._seen[id] = raw
        new = Subscription.of_record(json.loads(raw))
        old = self.subs.get(id)
        if old is not None and old.incarnation == new.incarnation:
            for field in attrs.fields(Subscription):  # in place: deliveries hold it
                setattr(old, field.name, getattr(new, field.name))
            new = old
        self.subs[id] = new
        for name, tail in self._recent.items():
            if concerns(new, name, tail):
                self._events.setdefault(id, {})[name] = tail

    async def _leading(self) -> None:
        """Deliver while this process holds the store's lead; try for it every `lead_retry`
        seconds (so another process takes over within that of this one's end)."""
        while True:
            try:
                leads = await self.store.lead()
            except Exception as failure:
                log_failure(failure, "cannot ask whether this process delivers")
                leads = False
            if leads != self.delivering:
                self.delivering = leads
                self._rearm.set()
                logger.info(
                    "this process %s webhooks and wakes",
                    "delivers" if leads else "no longer delivers",
                )
                if leads:
                    await self.resync()
            await trio.sleep(self.lead_retry)

    async def resync(self) -> None:
        """Every subscription looked at again: on taking the lead, and after notifications
        may have been lost (the listening connection was lost)."""
        try:
            for raw in await self.store.load():
                id = Subscription.of_record(json.loads(raw)).id
                if id not in self.subs:
                    async with self._lock(id):
                        self._adopt(id, await self.store.load_one(id))
            await self._catch_up_links()
        except Exception as failure:  # the database, at worst: what is known is looked at
            log_failure(failure, "subscriptions could not be read again")
        for id in list(self.subs):
            self._kick(id)

    def changed(self, id: str) -> None:
        """Another process changed subscription `id` (notified; "": the key ring, which is
        read where it is used)."""
        if not id or self._nursery is None:
            return
        if self.delivering:
            self._kick(id)  # its hold reads it again
        else:
            self._nursery.start_soon(self._reload, id)

    async def _reload(self, id: str) -> None:
        try:
            async with self._lock(id):
                self._adopt(id, await self.store.load_one(id))
        except Exception as failure:  # the database, at worst: the next hold reads it
            log_failure(failure, "subscription %r could not be read again", id)
        if id in self._events:
            self._kick(id)

    def moved(self, stream: int) -> None:
        """A commit to stream row `stream`, on any process (notified on `ds_tail`): the
        delivering process looks at the subscriptions it concerns. The committing process
        applies its commits itself; this covers one that ended before it could."""
        if self.delivering and self.subs and self._nursery is not None:
            self._nursery.start_soon(self._moved, stream)

    async def _moved(self, stream: int) -> None:
        name = self._names.get(stream)
        if name is None:
            try:
                name = await self.store.stream_name(stream)
            except Exception as failure:  # the database, at worst: the committing process looks
                log_failure(failure, "stream row %d could not be named", stream)
                return
            if name is None:
                return
            if len(self._names) >= NAMES:
                self._names.clear()
            self._names[stream] = name
        for sub in list(self.subs.values()):
            if not is_reserved(name) and concerns(sub, name, 0):
                self._kick(sub.id)

    def resynced(self) -> None:
        """The listening connection is back: look at everything again."""
        if self._nursery is not None:
            self._nursery.start_soon(self.resync)


def log_failure(failure: BaseException, message: str, *args: object) -> None:
    """The database away (a restart, an outage) is expected and logged as a warning; any
    other failure is an error, with its traceback."""
    if isinstance(failure, Unavailable | ProtocolError):
        logger.warning(message + ": %s", *args, failure)
    else:
        logger.error(message, *args, exc_info=failure)


def concerns(sub: Subscription, name: str, tail: int | None) -> bool:
    """Whether a commit to `name` (tail None: deleted) may change `sub` or wake it."""
    return name in sub.links or (tail is not None and sub.config.matches(name))
