"""Live readers' wake-ups, writers first.

A stream's live readers wait on its actor's current `Change`, which the actor publishes (with
the data it added) after each commit. Trio runs the tasks made runnable in one step in turn,
in an order it randomizes, so when the actor answered a writer and woke a thousand SSE readers
in the same step, the writer's 204 went out behind their sends half of the time (1000 parked
readers, memory mode: POST p50 36-98 ms, against 2.3-3.3 ms for the Node reference server;
1.5-2.0 ms with what follows).

So an append can carry a `Receipt`: when readers are waiting, the actor holds the commit's
wake-up on the receipts of the writers in it, and each writer releases its receipt once its
response is sent; the readers run after the last release. A writer whose send stalls (a client
that does not read) holds them `delay` seconds at most: `Wakeups.run` wakes them then.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import TYPE_CHECKING

import trio

if TYPE_CHECKING:
    from actors.messages import ReadResult


class Change:
    """What a stream's live readers wait on: set by the actor's next commit, and then, when
    that commit added data, holding it, so readers at the old tail need not ask again."""

    __slots__ = ("_due", "_event", "_held", "added", "watched")

    def __init__(self) -> None:
        self._event = trio.Event()
        self.added: ReadResult | None = None
        # Handed to a reader (in a `Snapshot`), which may park on it: another process's
        # commit must set it (postgres mode, `Registry.refresh`).
        self.watched = False
        self._held = 0  # receipts whose writers' responses are not out yet
        self._due: _Due | None = None

    async def wait(self) -> None:
        await self._event.wait()

    def is_set(self) -> bool:
        return self._event.is_set()

    @property
    def waiting(self) -> int:
        return self._event.statistics().tasks_waiting

    def publish(self, added: ReadResult | None, receipts: Iterable[Receipt | None] = ()) -> None:
        """Wake the readers, at once, or (when some wait) once the writers holding
        `receipts` of this commit have sent their responses."""
        self.added = added
        if self.waiting:
            for receipt in receipts:
                if receipt is not None and receipt.hold(self):
                    self._held += 1
                    if self._due is None:
                        self._due = receipt.wakeups.due(self)
            if self._held:
                return
        self._wake()

    def _release(self) -> None:
        self._held -= 1
        if not self._held:
            self._wake()

    def _wake(self) -> None:
        if self._due is not None:  # the fallback no longer needs this change (nor its data)
            self._due.change = None
            self._due = None
        self._event.set()


class Receipt:
    """One writer's claim that the readers of the commit holding its append wait until its
    response is out. Release it once the response is sent, whatever happened (idempotent)."""

    __slots__ = ("_change", "_released", "wakeups")

    def __init__(self, wakeups: Wakeups) -> None:
        self.wakeups = wakeups
        self._change: Change | None = None
        self._released = False

    def hold(self, change: Change) -> bool:
        """Called by the actor as it publishes the commit: False if released already."""
        if self._released or self._change is not None:
            return False
        self._change = change
        return True

    def release(self) -> None:
        if self._released:
            return
        self._released = True
        if self._change is not None:
            change, self._change = self._change, None
            change._release()


class _Due:
    __slots__ = ("change", "deadline")

    def __init__(self, change: Change, deadline: float) -> None:
        self.change: Change | None = change
        self.deadline = deadline


class Wakeups:
    """Hands out receipts while `run` runs (without it, appends hold nobody), and wakes the
    readers of a held change `delay` seconds after it was published, released or not."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.running = False
        self._due: deque[_Due] = deque()  # in deadline order: every hold waits `delay`
        self._arrived = trio.Event()

    def receipt(self) -> Receipt | None:
        return Receipt(self) if self.running else None

    def due(self, change: Change) -> _Due:
        due = _Due(change, trio.current_time() + self.delay)
        if not self._due:
            self._arrived.set()
        self._due.append(due)
        return due

    @property
    def held(self) -> int:
        """Changes whose fallback is pending (released ones included, until it passes)."""
        return len(self._due)

    async def run(self) -> None:
        self.running = True
        try:
            while True:
                if not self._due:
                    self._arrived = trio.Event()
                    await self._arrived.wait()
                await trio.sleep_until(self._due[0].deadline)
                now = trio.current_time()
                while self._due and self._due[0].deadline <= now:
                    change = self._due.popleft().change
                    if change is not None:
                        change._wake()
        finally:
            self.running = False
            while self._due:  # nobody would wake these any more
                change = self._due.popleft().change
                if change is not None:
                    change._wake()


class Commits:
    """Every stream's commits, for the subscription supervisor (actors/subscriptions.py):
    each actor notes its stream's new tail (None: deleted) in the step that publishes its
    `Change`, before its writers are answered, and the supervisor takes what was noted
    since it last looked. Noting is a dict store, so a commit never waits for subscriptions;
    a stream committing again before the supervisor looks is noted once (the last tail)."""

    def __init__(self) -> None:
        self.enabled = False  # no subscription: nothing is noted
        self._noted: dict[str, int | None] = {}
        self._arrived = trio.Event()

    def note(self, name: str, tail: int | None) -> None:
        if self.enabled:
            self._noted[name] = tail
            self._arrived.set()

    def take(self) -> dict[str, int | None]:
        """What was noted since the last `take`."""
        taken, self._noted = self._noted, {}
        if self._arrived.is_set():
            self._arrived = trio.Event()
        return taken

    async def wait(self) -> None:
        """Until something is noted that was not taken."""
        if not self._noted:
            await self._arrived.wait()
