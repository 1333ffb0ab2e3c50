"""The reference of tests/test_state_model.py: what a State Protocol stream should hold
after the messages appended to it, written from issue 11's rules and nothing else (no code
under test), and the strategies that draw those messages."""

from __future__ import annotations

import json
from typing import Any

import attrs
import hypothesis.strategies as st

from state.view import ENTITY_OVERHEAD, STAMP_OVERHEAD

TYPES = ("todo", "user")
IDENTITIES = st.tuples(st.sampled_from(TYPES), st.sampled_from(["a", "b", "c", "d"]))
VALUES = st.sampled_from([None, 0, 1, True, "", "x", "x" * 100, [1], {"a": None}, {"a": 1}])
OPERATIONS = ("insert", "update", "upsert", "delete")
CONTROL_NAMES = ("reset", "snapshot-start", "snapshot-end")
TIMESTAMP = "2024-05-01T12:00:00Z"


# ---- the reference ---------------------------------------------------------------------


def stored(batch: list[Any]) -> bytes:
    """A JSON stream's stored form: each message as compact JSON and a comma."""
    return b"".join(
        json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode() + b","
        for message in batch
    )


def canonical(value: Any) -> str:
    """Equal for equal JSON (True is not 1)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


@attrs.frozen
class Row:
    value: Any
    offset: int  # the end of the record that last wrote it
    txid: str | None
    timestamp: str | None

    def message(self, identity: tuple[str, str]) -> dict[str, Any]:
        """What a snapshot sends for it."""
        headers = {"operation": "insert"}
        headers |= {"txid": self.txid} if self.txid is not None else {}
        headers |= {"timestamp": self.timestamp} if self.timestamp is not None else {}
        return {"type": identity[0], "key": identity[1], "value": self.value, "headers": headers}


def change_of(message: Any) -> tuple[str, tuple[str, str]] | None:
    """(operation, identity) of a change message (delete, or with a value), else None."""
    if not (isinstance(message, dict) and isinstance(message.get("headers"), dict)):
        return None
    operation, type_, key = (
        message["headers"].get("operation"),
        message.get("type"),
        message.get("key"),
    )
    if operation not in OPERATIONS or not (isinstance(type_, str) and type_):
        return None
    if not (isinstance(key, str) and key) or (operation != "delete" and "value" not in message):
        return None
    return operation, (type_, key)


def is_reset(message: Any) -> bool:
    return isinstance(message, dict) and message.get("headers") == {"control": "reset"}


def skipped(message: Any) -> bool:
    """Neither a change nor a control message: the fold skips it, and counts it."""
    if change_of(message) is not None:
        return False
    headers = message.get("headers") if isinstance(message, dict) else None
    return not (isinstance(headers, dict) and headers.get("control") in CONTROL_NAMES)


def fold(rows: dict[tuple[str, str], Row], message: Any, end: int) -> None:
    """The issue's rules: a set replaces the value (and moves the entity last), a delete of
    a missing key changes nothing, a reset clears; anything else changes nothing."""
    change = change_of(message)
    if change is None:
        if is_reset(message):
            rows.clear()
        return
    operation, identity = change
    rows.pop(identity, None)
    if operation != "delete":
        stamps = [message["headers"].get(name) for name in ("txid", "timestamp")]
        rows[identity] = Row(message["value"], end, *stamps)


def valid(message: Any) -> bool:
    """Structurally a State Protocol message (as far as these strategies stray)."""
    if change_of(message) is not None:
        return True
    headers = message.get("headers") if isinstance(message, dict) else None
    return (
        isinstance(headers, dict)
        and headers.get("control") in CONTROL_NAMES
        and list(message) == ["headers"]
    )


def refusal(batch: list[Any], rows: dict[tuple[str, str], Row]) -> tuple[int, int] | None:
    """(status, index) of semantic validation's verdict on `batch`, or None to accept."""
    for index, message in enumerate(batch):
        if not valid(message):
            return 400, index
    trial = {identity: row.value for identity, row in rows.items()}
    for index, message in enumerate(batch):
        change = change_of(message)
        if change is None:
            if is_reset(message):
                trial.clear()
            continue
        operation, identity = change
        exists = identity in trial
        if (operation == "insert") == exists and operation != "upsert":
            return 409, index  # an insert of an existing key, an update or delete of a missing one
        old = message.get("old_value", trial.get(identity))
        if operation == "update" and canonical(old) != canonical(trial[identity]):
            return 409, index
        trial.pop(identity, None)
        if operation != "delete":
            trial[identity] = message["value"]
    return None


def view_bound(rows: dict[tuple[str, str], Row]) -> int:
    """More than the server charges the view holding `rows` (state.view.charge)."""
    return sum(
        len(canonical(row.message(identity))) + 20 + ENTITY_OVERHEAD + 2 * (STAMP_OVERHEAD + 40)
        for identity, row in rows.items()
    )


# ---- what is appended ----------------------------------------------------------------------

CONTROLS = st.sampled_from(
    [
        {"headers": {"control": "reset"}},
        {"headers": {"control": "reset"}},
        {"headers": {"control": "snapshot-start"}},
        {"headers": {"control": "snapshot-end", "offset": "0"}},
    ]
)
NOT_STATE = st.sampled_from(
    [
        42,
        "x",
        None,
        [1],
        {"a": 1},
        {"type": "todo", "key": "a", "headers": {"operation": "insert"}},  # no value
        {"type": "todo", "key": "", "value": 1, "headers": {"operation": "upsert"}},
        {"headers": {"control": "rewind"}},
    ]
)


@st.composite
def changes(draw: st.DrawFn, rows: dict[tuple[str, str], Row] | None) -> dict[str, Any]:
    """A change message; given the entities it will meet (`rows`), mostly one semantic
    validation accepts (an insert of a missing key, an update with the right `old_value`).

    The draws are the same whatever `rows` holds: a validated stream's entities depend on
    the order the server chose for appends sent at once, and Hypothesis needs a test case's
    choices to be the same when it runs it again."""
    type_, key = identity = draw(IDENTITIES)
    guided, pick = draw(st.integers(0, 4)) > 0, draw(st.integers(0, 5))
    operation = OPERATIONS[pick % 4]
    if rows is not None and guided:
        legal = ("update", "upsert", "delete") if identity in rows else ("insert", "upsert")
        operation = legal[pick % len(legal)]
    headers: dict[str, Any] = {"operation": operation}
    if draw(st.booleans()):
        headers["txid"] = draw(st.sampled_from(["t1", "t2"]))
    if draw(st.integers(0, 3)) == 0:
        headers["timestamp"] = TIMESTAMP
    message: dict[str, Any] = {"type": type_, "key": key, "headers": headers}
    with_value, value = draw(st.booleans()), draw(VALUES)
    if operation != "delete" or with_value:
        message["value"] = value
    with_old, right, old = draw(st.booleans()), draw(st.integers(0, 3)) > 0, draw(VALUES)
    if operation == "update" and with_old:
        current = None if rows is None else rows.get(identity)
        message["old_value"] = current.value if right and current is not None else old
    return message


@st.composite
def batches(draw: st.DrawFn, rows: dict[tuple[str, str], Row] | None = None) -> list[Any]:
    """1-5 messages, sometimes between snapshot markers (a reset may fall inside). With
    `rows` (a validated stream's entities): mostly messages that validation accepts."""
    trial = None if rows is None else dict(rows)
    batch: list[Any] = []
    for _ in range(draw(st.integers(1, 5))):
        kind = draw(st.integers(0, 14))  # controls 2/15, not state 1/15 (3/15 unvalidated)
        not_state = kind == 1 or (rows is None and kind in (3, 4))
        message = draw(NOT_STATE if not_state else CONTROLS if kind in (0, 2) else changes(trial))
        if trial is not None:
            fold(trial, message, 0)
        batch.append(message)
    if draw(st.integers(0, 3)) == 0:
        batch = [{"headers": {"control": "snapshot-start"}}, *batch]
        batch.append({"headers": {"control": "snapshot-end"}})
    return batch


State = tuple[dict[tuple[str, str], Row], int]  # (rows, skipped) as of an offset


@attrs.define
class Model:
    validation: str | None
    compaction: int | None
    data: bytes = b""  # every stored byte appended, from offset 0
    ends: list[int] = attrs.field(factory=lambda: [0])  # record boundaries
    rows: dict[tuple[str, str], Row] = attrs.field(factory=dict)  # in order of last write
    producers: dict[str, tuple[int, int]] = attrs.field(factory=dict)  # id -> (epoch, seq)
    base: int = 0  # where the log starts: the last compaction, as the server reported it
    skipped: int = 0  # messages that were not State Protocol messages
    # (rows, skipped) as of each record boundary: what a fork there starts with.
    history: dict[int, State] = attrs.field(factory=lambda: {0: ({}, 0)})
    forks: set[str] = attrs.field(factory=set)  # a stream with forks is not compacted
    source: str | None = None  # a fork's
    inherited_floor: int = 0  # a fork's: its source's base (fixed while the fork lives)
    # (tail, bound on the view's size) after each step that appended, since the last base,
    # actor restart or fork: when the server must have prepared and then switched a base.
    due: list[tuple[int, int]] = attrs.field(factory=list)

    @property
    def tail(self) -> int:
        return len(self.data)

    def state(self) -> State:
        return dict(self.rows), self.skipped

    def append(self, batch: list[Any]) -> None:
        """One record holding `batch`, at the tail."""
        self.data += stored(batch)
        self.ends.append(self.tail)
        for message in batch:
            fold(self.rows, message, self.tail)
            self.skipped += skipped(message)
        self.history[self.tail] = self.state()

    @property
    def floor(self) -> int:
        """Reads below this are 410: compacted here, or in the source."""
        return max(self.base, self.inherited_floor)
