"""Rows of the PostgreSQL storage (docs/scaling.md): how names become keys, the statements
every log and the storage share, and recovery's fold over a stream's record rows."""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from typing import Any

import cbor2
import psycopg

from actors.storage import Fold, framing
from streams.protocol import records
from streams.protocol.extents import Slice

Connection = psycopg.Connection[tuple[Any, ...]]
# NOTIFY channel of commits, compactions and deletes, payload "<stream row>:<tail>:<generation>"
# (a deleted stream's generation is `REMOVED`)
CHANNEL = "ds_tail"
REMOVED = -1
REPLAY_ROWS = 1000  # recovery fetches record metadata this many rows at a time


def key(name: str) -> bytes:
    """Rows are found by the SHA-256 of the name, as a data directory names its files:
    any name, of any length, makes an index entry of 32 bytes."""
    return hashlib.sha256(encoded(name)).digest()


def encoded(name: str) -> bytes:
    return name.encode("utf-8", "surrogatepass")


def decoded(raw: bytes) -> str:
    return bytes(raw).decode("utf-8", "surrogatepass")


def expiry(meta: bytes) -> tuple[int | None, float | None]:
    """The TTL and Expires-At a log's first record carries, for the start-up expiry scan."""
    doc = cbor2.loads(meta)
    if isinstance(doc, dict) and doc.get("k") in ("create", "base"):
        return doc.get("ttl"), doc.get("exp")
    return None, None


def first_access(meta: bytes) -> float | None:
    """When a log's first record says the stream was last accessed: its creation (or, for a
    compacted log's base record, the last access it carries)."""
    doc = cbor2.loads(meta)
    if isinstance(doc, dict):
        at = doc.get("last") if doc.get("k") == "base" else doc.get("t")
        return float(at) if isinstance(at, int | float) else None
    return None


def appended_at(meta: bytes) -> float | None:
    """When an append record was made (an append is an access, as a read is), else None."""
    doc = cbor2.loads(meta)
    if isinstance(doc, dict) and doc.get("k") == "append":
        at = doc.get("t")
        return float(at) if isinstance(at, int | float) else None
    return None


def notice(stream: int, tail: int, generation: int) -> str:
    """A notification's payload (actors/storage/pg_listen.py parses it)."""
    return f"{stream}:{tail}:{generation}"


def size(staged: list[tuple[bytes, bytes]]) -> int:
    return sum(framing.frame_size(meta, len(data)) for meta, data in staged)


@contextlib.contextmanager
def snapshot(connection: Connection) -> Iterator[None]:
    """Several statements that see one state of the database: a stream's row, checkpoint and
    records agree however other processes commit meanwhile."""
    connection.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
    try:
        yield
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")


def execute(connection: Connection, query: str, params: tuple[Any, ...]) -> None:
    connection.execute(query.encode(), params)


def fetch_one(connection: Connection, query: str, params: tuple[Any, ...]) -> Any:
    return connection.execute(query.encode(), params).fetchone()


def fetch_all(connection: Connection, query: str, params: tuple[Any, ...] = ()) -> list[Any]:
    return connection.execute(query.encode(), params).fetchall()


def replay(connection: Connection, stream: int, start: int, tail: int, fold: Fold) -> None:
    """The records between `start` and `tail`, metadata only, a batch of rows at a time (a
    server-side cursor), folded in log order; as `actors.storage.replay` does for frames.
    Bounded by the tail read before: each statement sees the commits made up to its start,
    so rows committed after the tail was read are left for the next look."""
    first = start == 0
    with connection.cursor(name="ds_replay") as cursor:
        cursor.itersize = REPLAY_ROWS
        cursor.execute(
            "SELECT at, meta, length(data) FROM ds_records"
            " WHERE stream = %s AND at > %s AND at <= %s ORDER BY at",
            (stream, start, tail),
        )
        for at, meta, length in cursor:
            record = records.decode(bytes(meta))
            if first and not isinstance(record, records.CreateRecord | records.BaseRecord):
                raise ValueError("log does not start with a create record")
            first = False
            fold(record, int(at), int(length))


def read(connection: Connection, stream: int, generation: int, slices: list[Slice]) -> list[bytes]:
    """One query: the slices' rows on the primary key, each cut in the database (the data
    is stored uncompressed, so a piece of a large record reads only that piece); none if
    the row is not at `generation` any more: another process's compaction moves rows, and
    one of the new generation may sit where a slice of the old one points."""
    with connection.cursor(binary=True) as cursor:
        cursor.execute(
            "SELECT substring(r.data FROM s.skip::integer + 1 FOR s.length::integer)"
            " FROM ds_streams d CROSS JOIN"
            " unnest(%s::bigint[], %s::bigint[], %s::bigint[]) WITH ORDINALITY"
            " AS s(at, skip, length, n)"
            " JOIN ds_records r ON r.stream = d.id AND r.at = s.at"
            " WHERE d.id = %s AND d.generation = %s ORDER BY s.n",
            (
                [s.locator for s in slices],
                [s.skip for s in slices],
                [s.length for s in slices],
                stream,
                generation,
            ),
        )
        return [bytes(row[0]) for row in cursor]


def if_generation(
    connection: Connection, stream: int, generation: int, statement: str, params: tuple[Any, ...]
) -> None:
    """`statement`, only while the stream row is at `generation`: another process may have
    compacted the stream (moving the rows a checkpoint's index points at) or deleted it
    since the caller looked. `FOR SHARE`: a compaction or delete waits for it, or it for them."""
    with connection.transaction():
        row = connection.execute(
            "SELECT generation FROM ds_streams WHERE id = %s FOR SHARE", (stream,)
        ).fetchone()
        if row is not None and row[0] == generation:
            connection.execute(statement.encode(), params)
