"""Several pycrdt documents edit one Yjs document concurrently: their updates are written in
random batches, they sync from the stream at random points, and the server compacts at
random points. Every reader ends with the same document as the writers merged: one that
reads from `-1`, one that starts from the snapshot discovery leads to, and ones that read
part of the stream earlier (before some compactions) and resume from where they stopped."""

from __future__ import annotations

from typing import Any

import pycrdt
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from streams.protocol.yjs import document, unframe
from tests.yjs_helpers import Served, Writer, serving, text_of

CLIENTS = 3
DOC = document(b"t/docs/doc", 1024)
WORDS = st.text(alphabet="abcxyz ", min_size=1, max_size=6)
STEP = st.one_of(
    st.tuples(st.just("insert"), st.integers(0, CLIENTS - 1), st.integers(0, 40), WORDS),
    st.tuples(
        st.just("delete"), st.integers(0, CLIENTS - 1), st.integers(0, 40), st.integers(1, 4)
    ),
    st.tuples(st.just("post"), st.integers(0, CLIENTS - 1)),
    st.tuples(st.just("sync"), st.integers(0, CLIENTS - 1)),
    st.tuples(st.just("compact")),
    st.tuples(st.just("mark")),
)


async def read_from(served: Served, offset: str) -> tuple[bytes, str]:
    """Catch-up reads from `offset` until up to date: the framed updates and the end."""
    data = b""
    while True:
        response = await served("GET", "doc", query=f"offset={offset}")
        assert response.status == 200, response.body
        data += response.body
        offset = response.headers["stream-next-offset"]
        if response.headers.get("stream-up-to-date") == "true":
            return data, offset


async def from_snapshot(served: Served) -> str:
    discovery = await served("GET", "doc", query="offset=snapshot")
    offset = discovery.headers["location"].rpartition("offset=")[2]
    snapshot = b""
    if offset.endswith("_snapshot"):
        response = await served("GET", "doc", query=f"offset={offset}")
        assert response.status == 200
        snapshot, offset = response.body, response.headers["stream-next-offset"]
    updates, _ = await read_from(served, offset)
    return text_of(snapshot, updates)


async def run(steps: list[tuple[Any, ...]]) -> None:
    async with serving(yjs_compaction_threshold=1 << 30) as served:
        assert (await served("PUT", "doc")).status == 201
        writers = [Writer(client_id=number + 1) for number in range(CLIENTS)]
        pending = [b""] * CLIENTS
        seen = ["-1"] * CLIENTS
        marks: list[tuple[bytes, str]] = []  # what a reader had read, and where it stopped

        async def post(client: int) -> None:
            if pending[client]:
                assert (await served("POST", "doc", pending[client])).status == 204
                pending[client] = b""

        for step in steps:
            kind, *args = step
            if kind == "insert":
                client, index, word = args
                pending[client] += writers[client].insert(index, word)
            elif kind == "delete":
                client, index, length = args
                pending[client] += writers[client].delete(index, length)
            elif kind == "post":
                await post(args[0])
            elif kind == "sync":
                data, seen[args[0]] = await read_from(served, seen[args[0]])
                writers[args[0]].apply(data)
            elif kind == "compact":
                await served.documents.compact(DOC)
            else:
                marks.append(await read_from(served, "-1"))
        for client in range(CLIENTS):
            await post(client)

        merged: pycrdt.Doc[Any] = pycrdt.Doc()
        for writer in writers:
            merged.apply_update(writer.doc.get_update())
        expected = str(merged.get("text", type=pycrdt.Text))

        everything, _ = await read_from(served, "-1")
        assert text_of(b"", everything) == expected
        assert await from_snapshot(served) == expected
        for data, stopped in marks:
            rest, _ = await read_from(served, stopped)
            assert text_of(b"", data + rest) == expected
            assert len(unframe(data + rest)) == len(unframe(everything))


@settings(max_examples=60, deadline=None)
@given(st.lists(STEP, max_size=40))
def test_readers_converge_whatever_the_batches_and_compactions(
    steps: list[tuple[Any, ...]],
) -> None:
    trio.run(run, steps)
