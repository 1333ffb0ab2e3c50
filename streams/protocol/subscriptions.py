"""The subscription delivery state machine (PROTOCOL.md section 7). Pure: no trio, no I/O;
the time, wake ids, jitter and stream tails are passed in.

Theory of operation. A subscription links streams (by `pattern`, or explicitly), each with
the offset its workers acknowledged. It has pending work when a linked stream's tail is
beyond that offset. Pending work with no wake in flight issues a wake: the generation goes
up by one and a new `wake_id` is minted, with a snapshot of the linked streams' tails. A
webhook wake is then delivered (POSTed, signed) until a receiver answers 2xx: its lease runs
from that answer; `{"done": true}` acknowledges the snapshot at once. A pull-wake wake is a
wake event written to the wake stream; a worker claims it (the lease runs from the claim).
Callbacks and acks (also heartbeats) name the wake and generation with a token minted for
them, so anything for an older wake is fenced (409 FENCED). Finishing (`done`), releasing
or a lease running out ends the wake; pending work then issues the next one.

The supervisor (actors/subscriptions.py) looks at `due` and `deadline` after every change
and does what they say: deliver a webhook, post a wake event, or wait until a time. All of
this state is persisted, so after a restart the same look resumes the same work.

    state         wake fields                     on                      next
    ------------  ------------------------------  ----------------------  ---------------
    idle          wake is None                    pending work; claim     delivering /
                                                  (pull-wake)             posting / claimed
    delivering    webhook, attempt_at <= now      2xx                     leased (done: idle)
                                                  failure                 retrying
    retrying      webhook, attempt_at > now       attempt_at passes       delivering
    leased        webhook, lease_until            callback done; lease    idle (next wake if
                                                  ends; callback: extend  pending)
    posting       pull-wake, not posted           wake event written      posted
    posted        pull-wake, posted, no holder    claim                   claimed
    claimed       pull-wake, holder, lease_until  ack done, release,      idle (next wake if
                                                  lease ends; ack: extend pending)

A webhook's lease starts with the receiver's answer rather than with the first attempt, so
that a delivery retried for minutes does not see its wake expire and re-issued under it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Literal

import attrs

from streams.protocol import offsets, wake_tokens
from streams.protocol.subscription_config import Config, error, invalid
from streams.protocol.wake_tokens import Claims

BEFORE_FIRST = -1  # a link made for a stream's first data: nothing of it processed yet
RETRY_BASE = 1.0  # webhook retries: 1 s doubling to 60 s, +-20%
RETRY_MAX = 60.0
RETRY_JITTER = 0.2
Due = Literal["deliver", "post"]


@attrs.define
class Link:
    kinds: set[str]  # "glob", "explicit"
    acked: int  # last processed, inclusive; BEFORE_FIRST for none

    @property
    def kind(self) -> str:
        return "explicit" if "explicit" in self.kinds else "glob"


@attrs.define
class Wake:
    id: str
    generation: int
    snapshot: dict[str, int]  # the linked streams' tails when it was issued
    token: str | None = None  # webhook: minted at issue; pull-wake: at claim
    holder: str | None = None  # pull-wake: the worker that claimed it
    lease_until: float | None = None
    attempt_at: float | None = None  # webhook: the next delivery attempt
    attempts: int = 0  # webhook: failed attempts so far
    posted: bool = False  # pull-wake: its wake event is written


@attrs.frozen
class Clock:
    """What a change may need from outside: the time, fresh ids, the token key and life."""

    now: float
    new_id: Callable[[], str]
    token_key: bytes
    token_ttl: float
    jitter: float = 0.0  # in [-1, 1]


@attrs.define
class Subscription:
    id: str
    incarnation: str  # a re-created subscription refuses its predecessor's tokens
    config: Config
    created_at: float
    base_url: str  # the stream root's URL, for callback_url
    links: dict[str, Link] = attrs.field(factory=dict)
    generation: int = 0
    wake: Wake | None = None

    # ---- links --------------------------------------------------------------------------

    def link(self, path: str, kind: str, acked: int, max_links: int) -> bool:
        """Link `path` (or add a kind to its link); False if the limit refuses it."""
        existing = self.links.get(path)
        if existing is not None:
            existing.kinds.add(kind)
            return True
        if path == self.config.wake_stream or len(self.links) >= max_links:
            return False
        self.links[path] = Link({kind}, acked)
        return True

    def unlink_explicit(self, path: str) -> None:
        link = self.links.get(path)
        if link is not None:
            link.kinds.discard("explicit")
            if not link.kinds:
                del self.links[path]

    def committed(self, path: str, tail: int | None, max_links: int) -> bool:
        """A stream's tail changed (None: it was deleted). True if that concerns us. A
        stream first seen matching the pattern is linked before its data."""
        if tail is None:
            link = self.links.get(path)
            if link is None:
                return False
            link.kinds.discard("glob")
            if link.kinds:
                link.acked = BEFORE_FIRST  # a stream created again is new data
            else:
                del self.links[path]
            return True
        if self.config.matches(path):
            return self.link(path, "glob", BEFORE_FIRST, max_links)
        return path in self.links

    # ---- what is pending, what is due ----------------------------------------------------

    def pending(self, tails: Mapping[str, int]) -> list[str]:
        return [p for p, link in self.links.items() if tails.get(p, 0) > max(link.acked, 0)]

    def due(self, now: float) -> Due | None:
        wake = self.wake
        if wake is None:
            return None
        if self.config.kind == "webhook":
            return "deliver" if wake.attempt_at is not None and wake.attempt_at <= now else None
        return None if wake.posted else "post"

    def deadline(self) -> float | None:
        """When `tick` has something to do (a lease ends, a retry is due)."""
        wake = self.wake
        if wake is None:
            return None
        times = [t for t in (wake.lease_until, wake.attempt_at) if t is not None]
        return min(times, default=None)

    @property
    def status(self) -> str:
        return "failed" if self.wake is not None and self.wake.attempts else "active"

    # ---- changes ------------------------------------------------------------------------

    def maybe_wake(self, tails: Mapping[str, int], clock: Clock) -> bool:
        """Issue a wake if work is pending and none is in flight."""
        if self.wake is not None or not self.pending(tails):
            return False
        self.generation += 1
        wake = Wake(clock.new_id(), self.generation, {p: tails.get(p, 0) for p in self.links})
        if self.config.kind == "webhook":
            wake.token = self._token(clock)
            wake.attempt_at = clock.now
        self.wake = wake
        return True

    def tick(self, tails: Mapping[str, int], clock: Clock) -> None:
        """A lease that ran out ends its wake (the next one is issued if work is pending)."""
        wake = self.wake
        if wake is not None and wake.lease_until is not None and wake.lease_until <= clock.now:
            self.wake = None
            self.maybe_wake(tails, clock)

    def delivered(
        self, generation: int, done: bool, clock: Clock, tails: Mapping[str, int]
    ) -> None:
        """A receiver answered 2xx to the delivery of wake `generation`."""
        wake = self.wake
        if wake is None or wake.generation != generation:
            return  # fenced meanwhile (deleted, or ended by a callback)
        if done:
            for path, tail in wake.snapshot.items():
                link = self.links.get(path)
                if link is not None and tail > link.acked:
                    link.acked = tail
            self.wake = None
            self.maybe_wake(tails, clock)
            return
        wake.attempt_at, wake.attempts = None, 0
        wake.lease_until = clock.now + self.config.lease_ttl_ms / 1000

    def failed(self, generation: int, clock: Clock) -> None:
        """The delivery of wake `generation` failed: retry with backoff and jitter."""
        wake = self.wake
        if wake is None or wake.generation != generation:
            return
        wake.attempts += 1
        delay = min(RETRY_BASE * 2 ** (wake.attempts - 1), RETRY_MAX)
        wake.attempt_at = clock.now + delay * (1 + RETRY_JITTER * clock.jitter)

    def posted(self, generation: int) -> None:
        if self.wake is not None and self.wake.generation == generation:
            self.wake.posted = True

    def claim(self, worker: str, tails: Mapping[str, int], clock: Clock) -> dict[str, Any]:
        """A pull-wake worker takes the lease: the wake in flight, or one issued now."""
        if self.config.kind != "pull-wake":
            raise invalid("the subscription is not pull-wake")
        wake = self.wake
        if wake is not None and wake.holder is not None:
            raise error(
                409,
                "ALREADY_CLAIMED",
                "another worker holds the lease",
                current_holder=wake.holder,
                generation=wake.generation,
            )
        if wake is None:
            if not self.maybe_wake(tails, clock):
                raise error(409, "NO_PENDING_WORK", "the subscription has no pending work")
            assert self.wake is not None
            wake = self.wake
            wake.posted = True  # the claimer needs no wake event
        wake.holder = worker
        wake.token = self._token(clock)
        wake.lease_until = clock.now + self.config.lease_ttl_ms / 1000
        return {
            "wake_id": wake.id,
            "generation": wake.generation,
            "token": wake.token,
            "streams": self.stream_infos(tails),
            "lease_ttl_ms": self.config.lease_ttl_ms,
        }

    def ack(
        self, claims: Claims, body: Mapping[str, Any], tails: Mapping[str, int], clock: Clock
    ) -> dict[str, Any]:
        """A callback (webhook) or ack (pull-wake): acknowledgements, and with `done` the
        end of the wake; without, a heartbeat that extends the lease."""
        wake = self._fence(claims, body)
        acks = self._acks(body.get("acks", []), tails)
        done = body.get("done") is True
        for path, offset in acks:
            self.links[path].acked = offset
        if not done:
            wake.lease_until = clock.now + self.config.lease_ttl_ms / 1000
            return {"ok": True, "next_wake": False}
        self.wake = None
        return {"ok": True, "next_wake": self.maybe_wake(tails, clock)}

    def release(
        self, claims: Claims, body: Mapping[str, Any], tails: Mapping[str, int], clock: Clock
    ) -> None:
        if self.config.kind != "pull-wake":
            raise invalid("the subscription is not pull-wake")
        self._fence(claims, body)
        self.wake = None
        self.maybe_wake(tails, clock)

    # ---- checks -------------------------------------------------------------------------

    def _token(self, clock: Clock) -> str:
        claims = Claims(self.id, self.incarnation, self.generation, clock.now + clock.token_ttl)
        return wake_tokens.mint(clock.token_key, claims)

    def _fence(self, claims: Claims, body: Mapping[str, Any]) -> Wake:
        if claims.subscription != self.id or claims.incarnation != self.incarnation:
            raise error(401, "TOKEN_INVALID", "the token is for another subscription")
        wake = self.wake
        if (
            wake is None
            or claims.generation != wake.generation
            or body.get("generation") != wake.generation
            or body.get("wake_id") != wake.id
            or (self.config.kind == "pull-wake" and wake.holder is None)
        ):
            raise error(409, "FENCED", "the wake generation is stale")
        return wake

    def _acks(self, raw: object, tails: Mapping[str, int]) -> list[tuple[str, int]]:
        if not isinstance(raw, list):
            raise invalid("acks must be an array")
        found = []
        for item in raw:
            if not isinstance(item, dict):
                raise invalid("each ack is an object {stream, offset}")
            path, token = item.get("stream", item.get("path")), item.get("offset")
            link = self.links.get(path) if isinstance(path, str) else None
            if link is None or not isinstance(path, str) or not isinstance(token, str):
                raise error(409, "INVALID_OFFSET", "an ack names a stream not linked")
            try:
                offset = offsets.decode(token)
            except Exception:
                raise error(409, "INVALID_OFFSET", "an ack's offset is malformed") from None
            if offset < link.acked:
                raise error(409, "INVALID_OFFSET", "an ack's offset goes back")
            if offset > tails.get(path, 0):
                raise error(409, "INVALID_OFFSET", "an ack's offset is beyond the tail")
            found.append((path, offset))
        return found

    # ---- what it says -------------------------------------------------------------------

    def stream_infos(self, tails: Mapping[str, int]) -> list[dict[str, Any]]:
        infos = []
        for path, link in sorted(self.links.items()):
            tail = tails.get(path, 0)
            infos.append(
                {
                    "path": path,
                    "link_type": link.kind,
                    "acked_offset": encode(link.acked),
                    "tail_offset": offsets.encode(tail),
                    "has_pending": tail > max(link.acked, 0),
                }
            )
        return infos

    # ---- persistence --------------------------------------------------------------------

    def record(self) -> dict[str, Any]:
        links = {p: [sorted(link.kinds), link.acked] for p, link in self.links.items()}
        return {
            "id": self.id,
            "incarnation": self.incarnation,
            "config": self.config.record(),
            "created_at": self.created_at,
            "base_url": self.base_url,
            "links": links,
            "generation": self.generation,
            "wake": None if self.wake is None else attrs.asdict(self.wake),
        }

    @classmethod
    def of_record(cls, doc: Mapping[str, Any]) -> Subscription:
        links = {p: Link(set(kinds), acked) for p, (kinds, acked) in doc["links"].items()}
        wake = None if doc["wake"] is None else Wake(**doc["wake"])
        return cls(
            doc["id"],
            doc["incarnation"],
            Config.of_record(doc["config"]),
            doc["created_at"],
            doc["base_url"],
            links,
            doc["generation"],
            wake,
        )


def encode(position: int) -> str:
    return "-1" if position < 0 else offsets.encode(position)
