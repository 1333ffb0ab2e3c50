"""A Yjs document's compaction: a snapshot and the updates after it, merged into one update
with pycrdt (the bindings to yrs, the Rust port of Yjs). Pure: bytes in, bytes out; the
caller runs it in a worker thread (it takes ~1 s per few MB of updates)."""

from __future__ import annotations

from collections.abc import Iterable

import pycrdt


class MergeError(ValueError):
    """An update pycrdt cannot decode: the document is not compacted."""


def merge(snapshot: bytes, updates: Iterable[bytes]) -> bytes:
    """One update equal to `snapshot` followed by `updates`.

    Applied to a document and encoded from its state, deleted content is garbage collected,
    so the result is usually far smaller than its inputs. yrs leaves updates whose
    dependencies are missing pending and drops them from that encoding, so when the
    document's state vector is short of the merged updates' one, the lossless
    `merge_updates` of the inputs is the result instead.
    """
    parts = [snapshot, *updates] if snapshot else list(updates)
    doc: pycrdt.Doc[pycrdt.Text] = pycrdt.Doc()
    for number, update in enumerate(parts):
        try:
            doc.apply_update(update)
        except BaseException as error:  # ValueError; or pyo3's PanicException (a BaseException)
            if not _decoding(error):
                raise
            raise MergeError(f"update {number} of {len(parts)}: {error}") from error
    encoded: bytes = doc.get_update()
    if not parts:
        return encoded
    try:
        everything: bytes = pycrdt.merge_updates(*parts) if len(parts) > 1 else parts[0]
        if pycrdt.get_state(everything) != doc.get_state():
            return everything
    except BaseException as error:
        if not _decoding(error):
            raise
        raise MergeError(f"merging updates: {error}") from error
    return encoded


def _decoding(error: BaseException) -> bool:
    """A failure of pycrdt on the bytes it was given (not an interrupt, not memory)."""
    return isinstance(error, ValueError) or type(error).__name__ == "PanicException"
