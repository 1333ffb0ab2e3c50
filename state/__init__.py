"""The State Protocol layer: server-side materialized state of `application/json` streams.

Pure (no trio, no I/O, no clock): the actor owns a View per JSON stream read as state and
applies every commit to it, so the view and the offset it reflects always agree; the HTTP
layer turns a pinned view into a snapshot body or an entity read.

- `changes`: what one message is (lenient `classify` for the fold, strict `structural_error`
  for validation) and the JSON codec the package shares.
- `view`: the materialized view, the fold of a stream's records, bounded in entities and bytes.
- `validation`: the opt-in append checks, `structural` (400) and `semantic` (409).
- `snapshot`: the snapshot body, in pieces, and its length before the first piece.
- `checkpoint`: a view as bytes (cbor2), bound to an incarnation of its stream.
"""
