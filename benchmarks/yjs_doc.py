"""The Yjs benchmark's pure parts: lib0 framing, the edits it writes (pycrdt updates), how a new
client follows the redirect of snapshot discovery, and how append latencies are split into
"while a compaction runs" and "while none runs". No I/O, no clock: tested in
tests/test_bench_yjs.py.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

from pycrdt import Doc, Text, TransactionEvent

from streams.protocol.yjs import frame, unframe  # lib0 framing, as the server reads it

TEXT = "text"  # the Y.Text every document of the benchmark edits


def typing(count: int, seed: int = 13) -> Iterator[tuple[int, str]]:
    """`count` single-character inserts as a person types: at the cursor, which moves to a
    random place now and then (deterministic for a seed)."""
    rng = random.Random(seed)
    cursor = 0
    for length in range(count):  # the text's length before this edit
        if rng.random() < 0.05:
            cursor = rng.randrange(length + 1)
        yield cursor, "abcdefghijklmnopqrstuvwxyz \n"[length % 28]
        cursor += 1


def prepending(count: int) -> Iterator[tuple[int, str]]:
    """`count` inserts at the start: cheap to make (no position walk) and never merged into
    one item, so the document's state has `count` items and costs real time to compact."""
    for i in range(count):
        yield 0, "abcdefghijklmnopqrstuvwxyz"[i % 26]


def replay(edits: Iterable[tuple[int, str]]) -> str:
    """The text the edits leave, without Yjs: what every loaded document must equal."""
    text: list[str] = []
    for position, char in edits:
        text.insert(position, char)
    return "".join(text)


class Writer:
    """One writing client: a pycrdt document whose every edit becomes one Yjs update."""

    def __init__(self, client_id: int = 7) -> None:
        self.doc: Doc[Any] = Doc(client_id=client_id)
        self.text = self.doc.get(TEXT, type=Text)
        self._updates: list[bytes] = []
        self._subscription = self.doc.observe(self._on_update)

    def _on_update(self, event: TransactionEvent) -> None:
        self._updates.append(event.update)

    def updates(self, edits: Iterable[tuple[int, str]]) -> Iterator[bytes]:
        """Applies each edit in its own transaction and yields that transaction's update."""
        for position, char in edits:
            self.text.insert(position, char)
            yield from self._updates
            self._updates.clear()

    def __str__(self) -> str:
        return str(self.text)


def batches(updates: Iterable[bytes], size: int) -> Iterator[bytes]:
    """POST bodies of `size` lib0-framed updates each (the last may hold fewer)."""
    batch: list[bytes] = []
    for update in updates:
        batch.append(frame(update))
        if len(batch) == size:
            yield b"".join(batch)
            batch = []
    if batch:
        yield b"".join(batch)


class Reader:
    """A new client's document: a snapshot (one plain Yjs update) and lib0-framed updates."""

    def __init__(self) -> None:
        self.doc: Doc[Any] = Doc()
        self.text = self.doc.get(TEXT, type=Text)
        self.frames = 0

    def apply_snapshot(self, body: bytes) -> None:
        if body:
            self.doc.apply_update(body)

    def apply_framed(self, body: bytes) -> None:
        for update in unframe(body):
            self.doc.apply_update(update)
            self.frames += 1

    def __str__(self) -> str:
        return str(self.text)


def follow(path: str, location: str) -> tuple[str, str]:
    """Where a `307` of `offset=snapshot` on `path` sends a client: (path with query, the
    offset it names). The Location may be absolute, a path, or a query alone."""
    target = urlsplit(urljoin("http://127.0.0.1" + path, location))
    offsets = parse_qs(target.query).get("offset", [])
    if len(offsets) != 1:
        raise ValueError(f"a redirect without one offset: {location!r}")
    return target.path + "?" + target.query, offsets[0]


def is_snapshot(offset: str) -> bool:
    return offset.endswith("_snapshot")


def snapshot_offset(offset: str) -> str:
    """The log offset a snapshot URL's `{offset}_snapshot` names."""
    return offset.removesuffix("_snapshot")


@dataclass(frozen=True)
class Append:
    """One timed append: sent and answered (seconds on one clock), its Stream-Next-Offset."""

    sent: float
    answered: float
    next_offset: str

    @property
    def latency(self) -> float:
        return self.answered - self.sent


Window = tuple[float, float]


def offset_bytes(offset: str) -> int | None:
    """The byte position of an offset `<read seq>_<bytes>` (ours and the Node server's
    format; a snapshot's covered offset too); None for any other."""
    head, _, tail = offset.rpartition("_")
    return int(tail) if head and tail.isdigit() else None


def windows(
    appends: list[Append],
    snapshots: list[tuple[float, str]],
    began: float,
    threshold: int,
    covered: str = "-1",
) -> list[Window]:
    """When compactions ran, from what the protocol shows. Both servers compact a document
    one compaction at a time, started by an append once the updates since its snapshot reach
    `threshold` bytes. So a snapshot first seen (through `offset=snapshot`) at t ran at most
    from the sending of the first append answered after the previous snapshot was seen (or
    `began`) whose Stream-Next-Offset is `threshold` bytes past the offset the previous
    snapshot covers (`covered` at first), to t. Where offsets do not say bytes, or no append
    qualifies: from the answer to the last append at or below the offset the snapshot covers
    (it merged the log up to there), which is later than the true start (the snapshot is
    read first), or from `began`. Offsets compare as strings (the protocol orders them so)."""
    found: list[Window] = []
    previous_seen, previous = began, offset_bytes(covered) or 0
    for seen, offset in snapshots:
        due = [
            a.sent
            for a in appends
            if previous_seen <= a.answered <= seen
            and (position := offset_bytes(a.next_offset)) is not None
            and position - previous >= threshold
        ]
        if due:
            start = due[0]
        else:
            merged = [a.answered for a in appends if a.next_offset <= offset and a.answered <= seen]
            start = max(merged, default=began)
        found.append((start, seen))
        previous_seen, previous = seen, offset_bytes(offset) or previous
    return found


def split(appends: Iterable[Append], ran: list[Window]) -> tuple[list[float], list[float]]:
    """Latencies (s) of the appends in flight while a compaction ran, and of the others."""
    during: list[float] = []
    outside: list[float] = []
    for append in appends:
        busy = any(append.sent < end and append.answered > start for start, end in ran)
        (during if busy else outside).append(append.latency)
    return during, outside


def percentile(values: Iterable[float], q: float) -> float:
    """The nearest-rank percentile (q in 0..1) of values, in ms; NaN if none."""
    ordered = sorted(values)
    if not ordered:
        return math.nan
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)] * 1000
