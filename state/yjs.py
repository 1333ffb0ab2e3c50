"""A Yjs document's compaction: a snapshot and the updates after it, merged into one update
with pycrdt (the bindings to yrs, the Rust port of Yjs). Pure: bytes in, bytes out. pycrdt
holds the GIL for a whole call (tens of ms on a large document), so the caller runs it in a
worker process (actors/yjs_merges.py), never in the server's interpreter."""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

import pycrdt


class MergeError(ValueError):
    """An update pycrdt cannot decode: the document is not compacted."""


def merge(snapshot: bytes, updates: Iterable[bytes], kept: Kept | None = None) -> bytes:
    """One update equal to `snapshot` followed by `updates`.

    Applied to a document and encoded from its state, deleted content is garbage collected,
    so the result is usually far smaller than its inputs. yrs leaves updates whose
    dependencies are missing pending and drops them from that encoding, so when an input
    holds anything the document did not take in (`complete`), the lossless `merge_updates`
    of the inputs is the result instead. With `kept`, a document whose encoding is
    `snapshot` is taken from there (its snapshot is not decoded again) and the result's
    document is kept there.
    """
    updates = list(updates)
    parts = [snapshot, *updates] if snapshot else updates
    doc = kept.take(snapshot) if kept is not None and snapshot else None
    fresh = parts if doc is None else updates
    if doc is None:
        doc = pycrdt.Doc()
    for number, update in enumerate(fresh):
        try:
            doc.apply_update(update)
        except BaseException as error:  # ValueError; or pyo3's PanicException (a BaseException)
            if not _decoding(error):
                raise
            raise MergeError(f"update {number} of {len(fresh)}: {error}") from error
    encoded: bytes = doc.get_update()
    try:
        if complete(doc.get_state(), fresh):
            if kept is not None:
                kept.put(encoded, doc)
            return encoded
        return pycrdt.merge_updates(*parts) if len(parts) > 1 else parts[0]
    except BaseException as error:
        if not _decoding(error):
            raise
        raise MergeError(f"merging updates: {error}") from error


class Kept:
    """The last few merged documents, by a digest of their encoding: the next compaction of a
    document starts from its snapshot's document instead of decoding the snapshot (most of a
    merge's time on a large document), in a worker process that keeps them."""

    def __init__(self, size: int = 2) -> None:
        self.size = size
        self._docs: OrderedDict[bytes, pycrdt.Doc[Any]] = OrderedDict()

    def take(self, encoded: bytes) -> pycrdt.Doc[Any] | None:
        return self._docs.pop(_digest(encoded), None)

    def put(self, encoded: bytes, doc: pycrdt.Doc[Any]) -> None:
        self._docs[_digest(encoded)] = doc
        while len(self._docs) > self.size:
            self._docs.popitem(last=False)


_KEPT = Kept()  # a worker process's


def merge_kept(snapshot: bytes, updates: list[bytes]) -> bytes:
    """`merge` in a worker process, with the documents it keeps."""
    return merge(snapshot, updates, _KEPT)


def _digest(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=16).digest()


def complete(state: bytes, parts: Iterable[bytes]) -> bool:
    """Whether a document whose state vector is `state` holds all of `parts`: what each part
    has beyond that state (pycrdt's diff) is no struct, and deletes only of covered clocks.
    Cheaper than a `merge_updates` of every part (no encoding of the whole document)."""
    have = state_vector(state)
    for part in parts:
        diff = Reader(pycrdt.get_update(part, state))
        if diff.varuint():  # client blocks of structs the document does not hold
            return False
        for _ in range(diff.varuint()):  # the delete set: client, ranges of (clock, length)
            client = diff.varuint()
            for _ in range(diff.varuint()):
                clock, length = diff.varuint(), diff.varuint()
                if clock + length > have.get(client, 0):
                    return False  # a delete of something the document lacks: kept pending
    return True


def state_vector(encoded: bytes) -> dict[int, int]:
    """A lib0-encoded state vector: client -> the clock after its last struct."""
    reader = Reader(encoded)
    return {reader.varuint(): reader.varuint() for _ in range(reader.varuint())}


class Reader:
    """lib0's decoder, only as far as unsigned varints go."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.position = 0

    def varuint(self) -> int:
        value, shift = 0, 0
        while True:
            if self.position >= len(self.data):
                raise MergeError("truncated lib0 varuint")
            byte = self.data[self.position]
            self.position += 1
            value |= (byte & 0x7F) << shift
            if byte < 0x80:
                return value
            shift += 7


def ready() -> None:
    """Nothing: a worker process that ran it has imported this module (and pycrdt)."""


def _decoding(error: BaseException) -> bool:
    """A failure of pycrdt on the bytes it was given (not an interrupt, not memory)."""
    return isinstance(error, ValueError) or type(error).__name__ == "PanicException"
