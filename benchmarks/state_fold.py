"""The State Protocol benchmark's pure parts: the change messages it appends and the reference
fold its late joiners use. Independent of the server's own `state/` module on purpose: the
benchmark checks the server's snapshot against its own reading of the rules.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Iterator
from typing import Any

Entities = dict[tuple[str, str], Any]  # (type, key) -> value
WRITES = ("insert", "update", "upsert")
MARKERS = ("snapshot-start", "snapshot-end")
TYPE = "todo"


def fold(entities: Entities, messages: Iterable[Any]) -> int:
    """Applies messages in order as the TS `MaterializedState` does: insert, update and upsert
    replace the whole value (whether or not the key exists), delete of a missing key changes
    nothing, `null` is a value, `reset` clears everything, snapshot markers change nothing.
    Anything else is not a State Protocol message: skipped. Returns how many were skipped."""
    skipped = 0
    for message in messages:
        headers = message.get("headers") if isinstance(message, dict) else None
        if not isinstance(headers, dict):
            skipped += 1
            continue
        operation, control = headers.get("operation"), headers.get("control")
        entity = (message.get("type"), message.get("key"))
        named = all(isinstance(part, str) and part for part in entity)
        if operation in WRITES and named and "value" in message:
            entities[entity] = message["value"]
        elif operation == "delete" and named:
            entities.pop(entity, None)
        elif operation is None and control == "reset":
            entities.clear()
        elif not (operation is None and control in MARKERS):
            skipped += 1
    return skipped


def is_snapshot_start(message: Any) -> bool:
    """Whether a read began with a server snapshot (the State Protocol extension's marker)."""
    return (
        isinstance(message, dict)
        and isinstance(message.get("headers"), dict)
        and message["headers"].get("control") == "snapshot-start"
    )


def changes(total: int, keys: int, seed: int = 11) -> Iterator[dict[str, Any]]:
    """`total` change messages over `keys` keys of one type, deterministic for a seed: a
    key's first write is an insert, then updates and upserts (values of about 60 B) and now
    and then a delete (the next write to that key is an insert again)."""
    rng = random.Random(seed)
    live: set[int] = set()
    for i in range(total):
        k = rng.randrange(keys)
        if k not in live:
            operation = "insert"
            live.add(k)
        else:
            roll = rng.random()
            operation = "delete" if roll < 0.02 else "update" if roll < 0.5 else "upsert"
        message: dict[str, Any] = {"type": TYPE, "key": f"k{k}"}
        if operation == "delete":
            live.discard(k)
        else:
            message["value"] = {"text": f"todo {k} rev {i}", "done": i % 3 == 0, "rev": i}
        message["headers"] = {"operation": operation}
        yield message


def inserts(total: int) -> Iterator[dict[str, Any]]:
    """`total` inserts of distinct keys: a state of `total` live entities."""
    for i in range(total):
        value = {"text": f"todo {i}", "done": False, "rev": i}
        yield {"type": TYPE, "key": f"k{i}", "value": value, "headers": {"operation": "insert"}}


def batches(messages: Iterable[Any], size: int, entities: Entities) -> Iterator[bytes]:
    """JSON array bodies of up to `size` messages each (compact), folding every message into
    `entities` on the way: the state a reader must end with."""
    batch: list[Any] = []
    for message in messages:
        batch.append(message)
        if len(batch) == size:
            fold(entities, batch)
            yield json.dumps(batch, separators=(",", ":")).encode()
            batch = []
    if batch:
        fold(entities, batch)
        yield json.dumps(batch, separators=(",", ":")).encode()


def difference(expected: Entities, got: Entities) -> str:
    """'' if equal, else a short account of how they differ (for a loud failure)."""
    if expected == got:
        return ""
    missing = [e for e in expected if e not in got]
    extra = [e for e in got if e not in expected]
    changed = [e for e in expected if e in got and expected[e] != got[e]]
    parts = [f"{len(expected)} expected, {len(got)} folded"]
    for label, entities in (("missing", missing), ("extra", extra), ("different", changed)):
        if entities:
            parts.append(f"{len(entities)} {label} (e.g. {entities[0]})")
    if changed:
        first = changed[0]
        parts.append(f"{first}: expected {expected[first]!r}, got {got[first]!r}")
    return "; ".join(parts)
