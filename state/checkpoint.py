"""A view as bytes, so a view that left memory comes back without folding the whole log.

A checkpoint is an optimisation, never trusted blindly: one that is damaged, of another
version, or of another incarnation of the stream (deleted and created again under the same
name) decodes to None and the caller folds the log instead. The map is followed by its
CRC-32, so damage is caught before any of it is believed. The caller binds a checkpoint to
the log position `offset` names and folds only the records after it.
"""

from __future__ import annotations

import zlib
from typing import Any

import cbor2

from state.view import Entity, View, ViewTooLarge, charge

VERSION = 1
_CRC = 4  # bytes of the trailing CRC-32, big-endian


def encode(view: View, incarnation: str) -> bytes:
    """`{"v", "incarnation", "offset", "skipped", "entities"}` then its CRC-32; an entity is
    `[type, key, message, offset, txid, timestamp]`, in the view's order of last write."""
    rows = [
        [type_, key, entity.message, entity.offset, entity.txid, entity.timestamp]
        for (type_, key), entity in view.entities.items()
    ]
    document = {
        "v": VERSION,
        "incarnation": incarnation,
        "offset": view.offset,
        "skipped": view.skipped,
        "entities": rows,
    }
    body = bytes(cbor2.dumps(document))
    return body + zlib.crc32(body).to_bytes(_CRC, "big")


def decode(blob: bytes, incarnation: str, max_entities: int, max_bytes: int) -> View | None:
    """The view in `blob`, or None if it is damaged, of another version, or of another
    incarnation; never raises for what `blob` holds. Raises ViewTooLarge if the view is past
    bounds lowered since it was written (the caller treats it like any view too large)."""
    if len(blob) < _CRC:
        return None
    body = blob[:-_CRC]
    if zlib.crc32(body) != int.from_bytes(blob[-_CRC:], "big"):
        return None
    try:
        document: Any = cbor2.loads(body)
        view = _view(document, incarnation, max_entities, max_bytes)
    except (
        ValueError,
        LookupError,
        TypeError,
        AttributeError,
        ArithmeticError,
        RecursionError,
        cbor2.CBORDecodeError,
    ):
        return None
    if view is not None and len(view) > max_entities:
        raise ViewTooLarge(f"the view holds more than {max_entities} entities")
    if view is not None and view.bytes > max_bytes:
        raise ViewTooLarge(f"the view holds more than {max_bytes} bytes")
    return view


def _view(document: Any, incarnation: str, max_entities: int, max_bytes: int) -> View | None:
    if not isinstance(document, dict):
        return None
    if document.get("v") != VERSION or document.get("incarnation") != incarnation:
        return None
    offset, skipped, rows = document["offset"], document["skipped"], document["entities"]
    if not (_count(offset) and _count(skipped) and isinstance(rows, list)):
        return None
    entities: dict[tuple[str, str], Entity] = {}
    size = 0
    for row in rows:
        if not _row(row, offset):
            return None
        type_, key, message, at, txid, timestamp = row
        entity = entities[type_, key] = Entity(message, at, txid, timestamp)
        size += charge(type_, key, entity)
    if len(entities) != len(rows):  # an identity twice
        return None
    return View(max_entities, max_bytes, offset, skipped, size, entities)


def _count(value: Any) -> bool:
    return type(value) is int and value >= 0


def _row(row: Any, offset: int) -> bool:
    if not (isinstance(row, list) and len(row) == 6):
        return False
    type_, key, message, at, txid, timestamp = row
    return (
        isinstance(type_, str)
        and isinstance(key, str)
        and bool(type_ and key)
        and isinstance(message, bytes)
        and _count(at)
        and at <= offset
        and (txid is None or isinstance(txid, str))
        and (timestamp is None or isinstance(timestamp, str))
    )
