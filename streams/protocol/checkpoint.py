"""A stream's state as bytes, so reopening a long log need not replay it from the start.

The actor writes a checkpoint when it stops after enough new records; storage binds it to
the log position it covers and hands it back on open, and only the records after that
position are replayed. A checkpoint is an optimisation: whatever is wrong with one (another
version, damage, a log that no longer holds what it covered) makes recovery replay the whole
log, never trust it.
"""

from __future__ import annotations

import sys
from array import array
from typing import Any

import cbor2

from streams.protocol import records
from streams.protocol.extents import Extents
from streams.protocol.headers import Producer
from streams.protocol.machine import StreamState

VERSION = 1
ORDER = sys.byteorder  # the index arrays are stored in the machine's own byte order


def encode(state: StreamState) -> bytes:
    create = records.CreateRecord(state.name, state.config, state.incarnation, state.created_at)
    starts, locators = state.extents.starts, state.extents.locators
    by = state.closed_by
    return bytes(
        cbor2.dumps(
            {
                "v": VERSION,
                "order": ORDER,
                "create": records.encode(create)[0],
                "last": state.last_access,
                "tail": state.tail,
                "closed": state.closed,
                "by": None if by is None else [by.id, by.epoch, by.seq],
                "soft": state.soft_deleted,
                "seq": state.stream_seq,
                "producers": {key: list(value) for key, value in state.producers.items()},
                "base": state.base,
                "bv": None if state.base_view is None else list(state.base_view),
                "starts": starts.tobytes(),
                "locators": locators.tobytes(),
            }
        )
    )


def decode(blob: bytes) -> StreamState | None:
    """The state in a checkpoint, or None if this version cannot use it."""
    try:
        doc: Any = cbor2.loads(blob)
        if not isinstance(doc, dict) or (doc.get("v"), doc.get("order")) != (VERSION, ORDER):
            return None
        create = records.decode(doc["create"])
        if not isinstance(create, records.CreateRecord):
            return None
        starts, locators = array("q"), array("q")
        starts.frombytes(doc["starts"])
        locators.frombytes(doc["locators"])
        by = doc["by"]
        view = doc.get("bv")
        state = StreamState(
            name=create.name,
            config=create.config,
            incarnation=create.incarnation,
            created_at=create.at,
            last_access=doc["last"],
            tail=doc["tail"],
            closed=doc["closed"],
            closed_by=None if by is None else Producer(by[0], by[1], by[2]),
            soft_deleted=doc["soft"],
            stream_seq=doc["seq"],
            producers={key: (value[0], value[1]) for key, value in doc["producers"].items()},
            base=doc.get("base", 0),
            base_view=None if view is None else (view[0], view[1]),
            extents=Extents(starts, locators),
        )
    except (ValueError, KeyError, TypeError, IndexError, AttributeError, cbor2.CBORDecodeError):
        return None
    return state if len(starts) == len(locators) else None
