"""The materialized view of a state stream: the fold of its messages, kept current.

Theory of operation. The actor owns one View per JSON stream read as state and applies every
committed record to it (`apply_record`), so `offset` (the end of the last record applied) and
`entities` always describe the same prefix of the log. A view that is not resident is rebuilt
by folding the log in chunks (`apply_records`), after a checkpoint when there is one.

The fold follows the official TypeScript `MaterializedState`: insert, update and upsert set
the whole value (an insert of an existing key and an update of a missing key both end with
the new value), delete removes (a delete of a missing key changes nothing), `null` is a
value; `reset` clears every entity, the snapshot markers change nothing, and any other JSON
is skipped and counted, never fatal.

Each live entity is held as the insert message a snapshot sends for it, already encoded, so
the fold pays one json.dumps per write and a snapshot only concatenates bytes. Entities are
immutable and the dict keeps them in order of last write (an overwrite moves the entity to
the end), the order a snapshot lists them in; `pin` copies the list of references, so a
snapshot streamed out over many sends shows one offset however many commits land meanwhile.

Memory is bounded: `bytes` charges each entity about the memory it holds (`charge`: its
message, type and key, ENTITY_OVERHEAD, its txid and timestamp); a view that passes
`max_entities` or `max_bytes` raises ViewTooLarge and is dropped by its owner, never
truncated.
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from typing import Any

import attrs

from state.changes import OPERATIONS, decode_json, encode_json, parse_stored

# What an entity costs in memory besides the bytes of its message, type and key: the Entity
# object, its (type, key) tuple and the headers of the two str objects in it, the bytes
# object's header, and its slot in the dict (the slot's share varies with the dict's fill).
# Measured with tracemalloc on CPython 3.11, 64-bit: 296 to 311 bytes; test_state_view.py
# checks the estimate stays within 20% of the truth.
ENTITY_OVERHEAD = 320
# A txid or timestamp is kept as a str object of its own too (its text is also in the message).
STAMP_OVERHEAD = 56

_MARKERS = ("snapshot-start", "snapshot-end")


@attrs.frozen(slots=True)
class Entity:
    """One live entity: the insert message a snapshot sends for it (compact JSON, fields
    `type`, `key`, `value`, `headers` in that order; headers `operation`, then `txid` and
    `timestamp` of its last write when it had them) and the end of the record that wrote it."""

    message: bytes
    offset: int
    txid: str | None = None
    timestamp: str | None = None

    def value(self) -> Any:
        return decode_json(self.message.decode())["value"]

    def value_json(self) -> bytes:
        """The value alone, compact JSON."""
        return encode_json(self.value()).encode()


def insert_message(
    type_: str, key: str, value: Any, txid: str | None, timestamp: str | None
) -> bytes:
    """An entity's `Entity.message`. Raises ValueError, TypeError or RecursionError for a
    value that is not JSON (NaN, infinities, other objects, too deep)."""
    stamp = {"operation": "insert"}
    if txid is not None:
        stamp["txid"] = txid
    if timestamp is not None:
        stamp["timestamp"] = timestamp
    message = {"type": type_, "key": key, "value": value, "headers": stamp}
    return encode_json(message).encode()


def charge(type_: str, key: str, entity: Entity) -> int:
    """What an entity counts against a view's `max_bytes`: about the memory it holds."""
    size = len(entity.message) + len(type_) + len(key) + ENTITY_OVERHEAD
    if entity.txid is not None:
        size += len(entity.txid) + STAMP_OVERHEAD
    if entity.timestamp is not None:
        size += len(entity.timestamp) + STAMP_OVERHEAD
    return size


class ViewTooLarge(Exception):
    """The view passed its entity or byte bound."""


@attrs.define
class View:
    max_entities: int
    max_bytes: int
    offset: int = 0  # the end of the last record applied
    skipped: int = 0  # messages that were not State Protocol messages
    bytes: int = 0  # the sum of `charge` over the entities: about their memory
    entities: dict[tuple[str, str], Entity] = attrs.field(factory=dict)  # in order of last write

    def apply_record(self, data: builtins.bytes | memoryview, end: int) -> None:
        """One record's stored data (`message,` items), every message written at `end`.
        Raises ViewTooLarge (the view is then unusable), ValueError if `data` is not stored
        JSON messages (a damaged log)."""
        apply = self.apply
        for message in parse_stored(data):
            apply(message, end)
        self.offset = end

    def apply_records(self, data: builtins.bytes, ends: Sequence[int], start: int) -> None:
        """Consecutive records' data joined, `data[0]` at stream position `start`: record i
        spans [ends[i - 1], ends[i]), the first starting at `start`."""
        if (ends[-1] if ends else start) - start != len(data):
            raise ValueError(f"records ending at {ends} do not span {len(data)} bytes")
        chunk = memoryview(data)
        position = start
        for end in ends:
            self.apply_record(chunk[position - start : end - start], end)
            position = end

    def apply(self, message: Any, end: int) -> None:
        """One parsed message, written by the record that ends at `end`. Reads it by
        `changes.classify`'s rules, inline: this runs for every message of every commit."""
        if isinstance(message, dict):
            headers = message.get("headers")
            if isinstance(headers, dict):
                operation = headers.get("operation")
                if isinstance(operation, str) and operation in OPERATIONS:
                    type_, key = message.get("type"), message.get("key")
                    if isinstance(type_, str) and type_ and isinstance(key, str) and key:
                        if operation == "delete":
                            self._delete((type_, key))
                            return
                        if "value" in message:
                            self._set(type_, key, message["value"], headers, end)
                            return
                control = headers.get("control")
                if isinstance(control, str):
                    if control == "reset":
                        self.entities.clear()
                        self.bytes = 0
                        return
                    if control in _MARKERS:
                        return
        self.skipped += 1

    def _set(self, type_: str, key: str, value: Any, headers: dict[Any, Any], end: int) -> None:
        txid, timestamp = headers.get("txid"), headers.get("timestamp")
        txid = txid if isinstance(txid, str) else None
        timestamp = timestamp if isinstance(timestamp, str) else None
        try:
            encoded = insert_message(type_, key, value, txid, timestamp)
        except (ValueError, TypeError, RecursionError):  # not JSON: never in a stored record
            self.skipped += 1
            return
        self.put(type_, key, Entity(encoded, end, txid, timestamp))

    def put(self, type_: str, key: str, entity: Entity) -> None:
        """`entity` as the last write of (type_, key): the fold's, or an imported view's."""
        entities = self.entities
        old = entities.pop((type_, key), None)
        entities[type_, key] = entity
        self.bytes += charge(type_, key, entity) - (0 if old is None else charge(type_, key, old))
        if len(entities) > self.max_entities:
            raise ViewTooLarge(f"the view holds more than {self.max_entities} entities")
        if self.bytes > self.max_bytes:
            raise ViewTooLarge(f"the view holds more than {self.max_bytes} bytes")

    def _delete(self, identity: tuple[str, str]) -> None:
        old = self.entities.pop(identity, None)
        if old is not None:
            self.bytes -= charge(*identity, old)

    def get(self, type: str, key: str) -> Entity | None:
        return self.entities.get((type, key))

    def pin(self, types: frozenset[str] | None = None) -> list[Entity]:
        """The live entities (of `types` when given) in order of last write: a picture at
        `self.offset` that later applies cannot change (the entities are immutable)."""
        if types is None:
            return list(self.entities.values())
        return [entity for (type_, _), entity in self.entities.items() if type_ in types]

    def __len__(self) -> int:
        return len(self.entities)

    def __bool__(self) -> bool:
        """A view is there even when it is empty: `if view:` asks whether there is one."""
        return True
