"""The registry supervises stream actors: it spawns them on demand inside its nursery,
lets idle ones stop, contains their failures, and expires streams nobody touches."""

from __future__ import annotations

import contextlib
import heapq
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Protocol

import trio

from actors import messages as m
from actors.actor import StreamActor
from actors.faults import Throttle
from actors.messages import Pending, R
from actors.metrics import ActorMetrics
from actors.storage import Storage, Unavailable
from actors.view_budget import ViewBudget, ViewLimits
from actors.wakeups import Commits
from streams.protocol.errors import ProtocolError

logger = logging.getLogger(__name__)

EXPIRY_RETRY_SECS = 5.0  # after an expiry failed for want of descriptors or disk


class Sources(Protocol):
    """Reads across a fork chain, which the service layer stitches (`Streams`)."""

    async def inherited(
        self, source: str, start: int, bound: int, max_bytes: int
    ) -> m.ReadResult: ...

    async def inherited_base(self, source: str) -> tuple[str, bytes]: ...


class Registry:
    """The actors' supervisor: at most one actor per stream, started on demand in its
    nursery, stopped when idle or least recently used, its failures contained (a damaged log
    is refused for a back-off); it also expires streams nobody touches and, at start-up,
    finishes what a crash interrupted. `call` is how everything else talks to a stream."""

    def __init__(
        self,
        storage: Storage,
        *,
        idle_timeout: float = 10.0,
        max_resident: int = 1000,
        sweep_interval: float = 0.5,
        rescan_interval: float | None = None,
        link_grace: float = 0.0,
        inbox_size: int = 1024,
        cache_bytes: int = 1 << 20,
        piece_bytes: int = 64 * 1024,
        clock: Callable[[], float] = time.time,
        refusal_backoff: float = 30.0,
        peer_timeout: float = 30.0,
        view_limits: ViewLimits | None = None,
        metrics: ActorMetrics | None = None,
    ) -> None:
        self.storage = storage
        self.idle_timeout = idle_timeout
        self.max_resident = max_resident
        self.sweep_interval = sweep_interval
        self.rescan_interval = rescan_interval
        self.link_grace = link_grace  # shared storage: before a link to no fork is dropped
        self.inbox_size = inbox_size
        self.cache_bytes = cache_bytes
        self.piece_bytes = piece_bytes
        self.clock = clock
        self._actors: OrderedDict[str, StreamActor] = OrderedDict()  # least recently used first
        self._deadlines: dict[str, float] = {}  # the current deadline of each stream
        # Heap of times to look at a stream, never later than its deadline. Entries of streams
        # deleted or looked at sooner stay behind until popped: rebuilt when they are most.
        self._due: list[tuple[float, str]] = []
        self.exhaustion = Throttle()  # out of file descriptors: logged once per interval
        self.unavailable = Throttle()  # the database failing: likewise
        # Streams whose log failed recovery: answered without an actor until the back-off
        # passes (trio time), so a damaged log is not reopened and rescanned per request.
        self.refusal_backoff = refusal_backoff
        self.peer_timeout = peer_timeout
        self._refused: dict[str, tuple[float, ProtocolError]] = {}
        self._nursery: trio.Nursery | None = None
        self._none_alive = trio.lowlevel.ParkingLot()
        self.deadlines_loaded = trio.Event()
        self.collected = trio.Event()
        self.view_limits = view_limits or ViewLimits()
        self.views = ViewBudget(self.view_limits.max_resident_bytes)
        self.metrics = metrics or ActorMetrics()
        # Set by the service layer (`actors.service.Streams`): reads that stitch forks.
        self.sources: Sources | None = None
        self.commits = Commits()  # every commit's new tail, for subscriptions

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._sweep)
            nursery.start_soon(self._load_deadlines)
            if self.rescan_interval is not None:
                nursery.start_soon(self._rescanning, self.rescan_interval)
            nursery.start_soon(self._collect_interrupted_deletes)
            task_status.started()
            await trio.sleep_forever()

    @property
    def active(self) -> int:
        return len(self._actors)

    async def call(self, name: str, message: m.Ask[R]) -> R:
        """Send a message to the stream's actor and wait for its reply."""
        refused = self._refused.get(name)
        if refused is not None:
            if trio.current_time() < refused[0]:
                raise refused[1]
            del self._refused[name]  # look again: it may have been repaired
        pending: Pending[R] = Pending()
        envelope: m.Envelope = (message, pending)
        while True:
            # No checkpoint between looking the actor up and queueing: an actor only stops
            # while its inbox is empty, and it leaves the registry before closing the inbox.
            actor = self._actor(name)
            self._actors.move_to_end(name)
            try:
                actor.send.send_nowait(envelope)
            except trio.WouldBlock:
                try:
                    await actor.send.send(envelope)
                except trio.ClosedResourceError:
                    continue  # it failed while we waited for room: its successor takes it
            return await pending.wait()

    async def call_source(self, source: str, message: m.Ask[R]) -> R:
        """What an actor uses to ask its fork source (to link, or to release it). Actors wait
        for each other only this way, up a fork chain, never down it; chains are acyclic, so
        no two actors can wait for each other. The timeout bounds the wait all the same."""
        return await self._within_peer_timeout(source, self.call(source, message))

    def drop_view(self, name: str) -> None:
        actor = self._actors.get(name)
        if actor is None:
            self.views.forget(name)
            return
        with contextlib.suppress(trio.WouldBlock, trio.ClosedResourceError):
            # Nobody waits for the answer; a busy actor is asked again at the next commit.
            actor.send.send_nowait((m.DropView(), Pending[None]()))

    def refresh(self, name: str, watched_only: bool = False) -> None:
        """Another process committed to `name`: a resident actor looks at its tail and wakes
        its live readers (postgres mode). A full inbox needs nothing: every message it holds
        looks at the tail first. `watched_only`: only an actor whose current change a reader
        holds (and may be parked on); any other looks before its next request anyway, so a
        commit elsewhere costs it nothing until then."""
        actor = self._actors.get(name)
        if actor is not None and (actor.changed.watched or not watched_only):
            with contextlib.suppress(trio.WouldBlock, trio.ClosedResourceError):
                actor.send.send_nowait((m.Refresh(), Pending[None]()))

    def refresh_all(self) -> None:
        """Every resident actor looks at its tail: notifications may have been lost."""
        for name in list(self._actors):
            self.refresh(name)

    async def read_inherited(
        self, source: str, start: int, bound: int, max_bytes: int
    ) -> m.ReadResult:
        reading = self._sources().inherited(source, start, bound, max_bytes)
        return await self._within_peer_timeout(source, reading)

    async def inherited_base(self, source: str) -> tuple[str, bytes]:
        return await self._within_peer_timeout(source, self._sources().inherited_base(source))

    def _sources(self) -> Sources:
        if self.sources is None:
            raise RuntimeError("no service layer for the registry")
        return self.sources

    async def _within_peer_timeout(self, source: str, asking: Awaitable[R]) -> R:
        """What `source` (down a fork chain) answers, or 503 after the peer timeout."""
        with trio.move_on_after(self.peer_timeout):
            return await asking
        raise ProtocolError(
            503,
            "Service Unavailable",
            f"the fork source {source!r} did not answer in {self.peer_timeout:g} s",
            {"Retry-After": "5"},
            code="SOURCE_TIMEOUT",
        )

    def _actor(self, name: str) -> StreamActor:
        actor = self._actors.get(name)
        if actor is None:
            if self._nursery is None:
                raise RuntimeError("registry is not running")
            actor = StreamActor(
                name,
                self,
                self.storage,
                self.clock,
                self.inbox_size,
                self.cache_bytes,
                self.piece_bytes,
            )
            self._actors[name] = actor
            self._nursery.start_soon(actor.run, self.idle_timeout)
        return actor

    def refuse(self, name: str, error: ProtocolError) -> None:
        """Answer `error` for `name` without an actor for the next `refusal_backoff` s."""
        self._refused[name] = (trio.current_time() + self.refusal_backoff, error)

    def committed(self, name: str, tail: int | None) -> None:
        self.commits.note(name, tail)

    def forget(self, actor: StreamActor) -> None:
        if self._actors.get(actor.name) is actor:
            del self._actors[actor.name]
            if not self._actors:
                self._none_alive.unpark_all()

    async def all_stopped(self) -> None:
        """Returns once no actor is alive (every stream idle and stopped)."""
        while self._actors:
            await self._none_alive.park()

    @property
    def scheduled_expiries(self) -> int:
        """Entries in the expiry heap: at most about twice the streams that can expire."""
        return len(self._due)

    def note_deadline(self, name: str, deadline: float | None) -> None:
        if deadline is None:
            self._deadlines.pop(name, None)
        else:
            earlier = self._deadlines.get(name)
            self._deadlines[name] = deadline
            if earlier is None or deadline < earlier:  # a later deadline is found when we look
                heapq.heappush(self._due, (deadline, name))
        if len(self._due) > 2 * len(self._deadlines) + 16:
            # More stale entries than live ones: rebuild from the live deadlines. Each rebuild
            # costs what the pushes and removals since the last one did: amortized O(1).
            self._due = [(when, stream) for stream, when in self._deadlines.items()]
            heapq.heapify(self._due)

    async def _load_deadlines(self) -> None:
        """Streams on disk can expire before anyone asks for them; a restart restarts TTLs."""
        now = self.clock()
        for name, ttl, expires_at in await self.storage.expiring():
            if name not in self._deadlines and name not in self._actors:
                self.note_deadline(name, expires_at if expires_at is not None else now + (ttl or 0))
        self.deadlines_loaded.set()

    async def rescan(self, interval: float) -> None:
        """Shared storage (postgres mode): the streams due before the next scan that other
        processes created or used are expired here too, whether or not those still run."""
        for name, deadline in await self.storage.due(self.clock() + interval):
            if name not in self._deadlines and name not in self._actors:
                self.note_deadline(name, deadline)

    async def _rescanning(self, interval: float) -> None:
        while True:
            await trio.sleep(interval)
            try:
                await self.rescan(interval)
            except Unavailable as error:  # the next scan looks again
                logger.warning("looking for streams due to expire failed: %s", error)
            except Exception:
                logger.exception("looking for streams due to expire failed")

    async def _collect_interrupted_deletes(self) -> None:
        """A crash between two steps of a fork's create or delete leaves a link to a fork
        that is gone (or never was), and maybe a soft-deleted source nobody references.
        Each stream is asked by message, from here, not from an actor: actors never wait
        for each other in both directions."""
        stale = await self.stale_links()
        if self.link_grace and any(stale.values()):
            # Shared storage: another process may be creating one of those forks right now
            # (its link is written first). One that is still not there after the grace is not.
            await trio.sleep(self.link_grace)
            stale = await self.stale_links(stale)
        await self.collect(stale)
        self.collected.set()

    async def stale_links(self, among: dict[str, list[str]] | None = None) -> dict[str, list[str]]:
        """Each fork source's links to forks that are gone, or another stream by the name;
        with `among` (an earlier answer), those of its links that still are."""
        if among is None:
            return {name: await self._stale(name) for name in await self.storage.fork_sources()}
        return {name: await self._stale(name, forks) for name, forks in among.items()}

    async def collect(self, stale: dict[str, list[str]]) -> None:
        """The `stale` links are dropped; a source soft-deleted that nothing links to any
        more goes."""
        for name, forks in stale.items():
            try:
                for fork in forks:
                    await self.call(name, m.Unlink(fork))
                await self.call(name, m.Unlink(None))
            except Exception:
                logger.exception("collecting %r failed", name)

    async def _stale(self, source: str, among: list[str] | None = None) -> list[str]:
        stale = []
        try:
            links: dict[str, str] = await self.call(source, m.Links())
            for fork, incarnation in links.items():
                wanted = among is None or fork in among
                if wanted and await self._incarnation(fork) != incarnation:
                    stale.append(fork)
        except Exception:
            logger.exception("collecting %r failed", source)
        return stale

    async def _incarnation(self, name: str) -> str | None:
        try:
            snapshot: m.Snapshot = await self.call(name, m.Describe())
        except ProtocolError as error:
            if error.status == 404:
                return None
            raise
        return snapshot.incarnation

    async def _sweep(self) -> None:
        while True:
            await trio.sleep(self.sweep_interval)
            await self.expire_due()
            if self._refused:  # streams whose back-off passed are looked at again when asked
                now = trio.current_time()
                self._refused = {k: v for k, v in self._refused.items() if v[0] > now}
            self.retire_least_used()

    def retire_least_used(self) -> None:
        """Beyond `max_resident` live actors, stop the least recently used idle ones: a burst
        of new streams otherwise keeps an actor (~8 KB) per stream alive for the idle timeout,
        and the memory of that peak is not given back to the system.
        (100k creates, memory mode: RSS at rest 167 MB without this limit, 99 MB with it.)"""
        excess = len(self._actors) - self.max_resident
        for actor in self._actors.values():
            if excess <= 0:
                break
            if actor.retire():
                excess -= 1

    async def expire_due(self) -> None:
        """Expire streams whose deadline passed, even if no request touches them."""
        now = self.clock()
        while self._due and self._due[0][0] <= now:
            _, name = heapq.heappop(self._due)
            deadline = self._deadlines.get(name)
            if deadline is None:
                continue  # deleted, or no longer expiring
            if deadline > now:  # slid forward since: look again then
                heapq.heappush(self._due, (deadline, name))
                continue
            # The deadline stays known during the call: an actor that reopens the stream
            # takes its last access from it (`last_access`), so it does expire.
            retry = False
            try:
                await self.call(name, m.Expire())
            except ProtocolError as error:
                retry = error.status == 503  # out of descriptors or disk; the actor logged it
                if not retry:
                    logger.exception("expiring %r failed", name)
            except Exception:
                logger.exception("expiring %r failed", name)
            later = self._deadlines.get(name)
            if later is None:
                continue  # expired
            if retry:
                heapq.heappush(self._due, (now + EXPIRY_RETRY_SECS, name))
            elif later > now:  # touched meanwhile
                heapq.heappush(self._due, (later, name))
            else:  # failed: left alone until a request touches it again
                del self._deadlines[name]

    def last_access(self, name: str, ttl: int | None, now: float) -> float:
        """When a stream an actor reopens was last read or written: known from its deadline
        while this process runs; else now (a restart counts as an access)."""
        deadline = self._deadlines.get(name)
        return now if ttl is None or deadline is None else min(now, deadline - ttl)
