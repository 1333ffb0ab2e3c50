"""The body of a snapshot read: a JSON array of the view's entities between two markers.

`[{"headers":{"control":"snapshot-start","offset":T}}, insert..., {..."snapshot-end"...}]`:
what the official clients read as a catch-up of insert messages, so a StreamDB loads it
unchanged. Never a leading `reset`: StreamDB 0.3.1 mishandles one. Each entity already holds
its insert message encoded, so the body is a concatenation; it goes out in pieces of about
`piece_bytes`, never whole, and its length is known before the first piece.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from state.changes import encode_json
from state.view import Entity


def marker(control: str, offset: str) -> bytes:
    """A snapshot-start or snapshot-end control message at `offset`."""
    return encode_json({"headers": {"control": control, "offset": offset}}).encode()


def pieces(entities: Sequence[Entity], offset: str, piece_bytes: int) -> Iterator[bytes]:
    """The body in pieces of about `piece_bytes` (at least one entity in each, so a piece can
    pass `piece_bytes` by one entity and the markers). Joined, they are the JSON array."""
    parts = [b"[", marker("snapshot-start", offset)]
    size = len(parts[1]) + 1
    held = 0  # entities in `parts`
    for entity in entities:
        if held and size >= piece_bytes:
            yield b"".join(parts)
            parts.clear()
            size = held = 0
        parts.append(b",")
        parts.append(entity.message)
        size += len(entity.message) + 1
        held += 1
    parts.append(b",")
    parts.append(marker("snapshot-end", offset))
    parts.append(b"]")
    yield b"".join(parts)


def body_length(entities: Sequence[Entity], offset: str) -> int:
    """len(b"".join(pieces(entities, offset, ...))), without building it."""
    markers = len(marker("snapshot-start", offset)) + len(marker("snapshot-end", offset))
    return markers + 3 + sum(len(entity.message) + 1 for entity in entities)
