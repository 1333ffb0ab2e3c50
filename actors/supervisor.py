"""What a stream actor is given by whoever runs it (the registry): all it may ask of it.

An actor imports nothing of the registry; the registry satisfies this protocol.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from actors import messages as m
from actors.faults import Throttle
from actors.metrics import ActorMetrics
from actors.view_budget import ViewBudget, ViewLimits
from streams.protocol.errors import ProtocolError

if TYPE_CHECKING:
    from actors.actor import StreamActor


class Supervisor(Protocol):
    """What an actor is given by whoever runs it (the registry), and all it may ask of it."""

    exhaustion: Throttle  # out of file descriptors: logged once per interval, by anyone
    unavailable: Throttle  # the database failing (postgres mode): likewise
    view_limits: ViewLimits
    views: ViewBudget  # the resident State Protocol views of the process
    metrics: ActorMetrics  # commits timed, appends counted (exposed at /metrics)

    def drop_view(self, name: str) -> None:
        """Ask `name`'s actor, if it runs, to let its view go (memory is short)."""

    async def read_inherited(
        self, source: str, start: int, bound: int, max_bytes: int
    ) -> m.ReadResult:
        """A fork's inherited data, read from its source (and its sources) by message,
        with record ends; bounded by a timeout."""

    async def inherited_base(self, source: str) -> tuple[str, bytes]:
        """(incarnation, view) of the base of the compacted stream down `source`'s fork
        chain; bounded by a timeout."""

    def committed(self, name: str, tail: int | None) -> None:
        """The stream's tail is now `tail` (None: it was deleted): for subscriptions
        (`actors.wakeups.Commits`). Called before the commit's writers are answered."""

    def forget(self, actor: StreamActor) -> None:
        """Called as the actor stops: no message may reach it any more."""

    def refuse(self, name: str, error: ProtocolError) -> None:
        """Answer `error` for this stream without an actor for a while (a damaged log)."""

    def note_deadline(self, name: str, deadline: float | None) -> None:
        """The stream's expiry deadline changed (None: it cannot expire)."""

    def last_access(self, name: str, ttl: int | None, now: float) -> float:
        """When the stream was last accessed, as far as this process knows."""

    async def call_source(self, source: str, message: m.Ask[m.R]) -> m.R:
        """Ask the fork source `source`; bounded by a timeout."""
