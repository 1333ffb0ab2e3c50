"""Opt-in validation of an append to a state stream (`Stream-State-Validation`).

`structural` refuses (400) any append holding a message that is not a valid State Protocol
message. `semantic` also refuses (409) what the fold would forgive: an insert of an existing
key, an update or delete of a missing key, an update whose `old_value` is not the current
value. An append is accepted or refused whole, so its messages are checked against the view
as the batch's own earlier messages leave it: an overlay of the keys the batch touched, read
before the view and never written to it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import attrs

from state.changes import ABSENT, Change, classify, structural_error
from state.view import View

MODES = ("structural", "semantic")


@attrs.frozen
class Rejection:
    status: int  # 400 structural, 409 semantic
    index: int  # of the offending message within the append's messages
    reason: str


def check(messages: Sequence[Any], mode: str, view: View | None) -> Rejection | None:
    """Why the append of `messages` is refused, or None. `view` (semantic mode only) is the
    stream's view as of the append; it is not changed."""
    if mode not in MODES:
        raise ValueError(f"unknown validation mode {mode!r}")
    for index, message in enumerate(messages):
        reason = structural_error(message)
        if reason is not None:
            return Rejection(400, index, reason)
    if mode == "structural":
        return None
    if view is None:
        raise ValueError("semantic validation needs the stream's view")
    return _semantic(messages, view)


def _semantic(messages: Sequence[Any], view: View) -> Rejection | None:
    overlay: dict[tuple[str, str], Any] = {}  # identity -> value the batch set, or ABSENT
    cleared = False  # a reset earlier in the batch: the view no longer counts
    for index, message in enumerate(messages):
        change = classify(message)
        if not isinstance(change, Change):  # structurally valid: a control message
            if change is not None and change.control == "reset":
                overlay.clear()
                cleared = True
            continue
        identity = change.type, change.key
        if identity in overlay:
            exists = overlay[identity] is not ABSENT
        else:
            exists = not cleared and view.get(*identity) is not None
        operation = change.operation
        if operation == "insert" and exists:
            return Rejection(409, index, f"insert of existing key {_name(identity)}")
        if operation in ("update", "delete") and not exists:
            return Rejection(409, index, f"{operation} of missing key {_name(identity)}")
        if (
            operation == "update"
            and change.old_value is not ABSENT
            and _canonical(change.old_value) != _canonical(_current(identity, overlay, view))
        ):
            return Rejection(409, index, "old_value does not match the current value")
        overlay[identity] = ABSENT if operation == "delete" else change.value
    return None


def _current(identity: tuple[str, str], overlay: dict[tuple[str, str], Any], view: View) -> Any:
    """The value of an entity known to exist (in the overlay, else in the view)."""
    if identity in overlay:
        return overlay[identity]
    entity = view.get(*identity)
    assert entity is not None
    return entity.value()


def _canonical(value: Any) -> str:
    """Equal for equal JSON values, whatever their object key order; numbers by value (1.0
    is 1: a JavaScript client reads it so, and cannot write 1.0 back); True is not 1. The
    integral floats are found by the C parser, which takes any depth the encoder does."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    whole = json.loads(text, parse_float=_number)
    return json.dumps(whole, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _number(text: str) -> int | float:
    number = float(text)
    return int(number) if number.is_integer() else number


def _name(identity: tuple[str, str]) -> str:
    return "(" + ", ".join(json.dumps(part, ensure_ascii=False) for part in identity) + ")"
