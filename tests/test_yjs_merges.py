"""Compactions' merges run in worker processes (actors/yjs_merges.py): pycrdt holds the GIL
for a whole call, so a merge in the server's interpreter starves its event loop."""

from __future__ import annotations

import multiprocessing
import os
import select
from multiprocessing.connection import Connection
from typing import Any

import pycrdt
import pytest
import trio

from actors.yjs_merges import MergeCrashed, Merges
from streams.protocol import yjs
from tests.yjs_helpers import Writer, serving, text_of

LARGE = 20_000  # edits, each its own item: a merge of real cost


def crash(*_: object) -> None:
    """Run in a worker: it dies as an out-of-memory kill or a crash in yrs would."""
    os._exit(3)


def trap(*_: Any) -> None:
    raise AssertionError("a Yjs update was applied in the server's interpreter")


async def test_the_event_loop_runs_while_a_large_merge_does(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    writer = Writer(client_id=5)
    updates = [writer.insert(0, "abcdefghij"[n % 10]) for n in range(LARGE)]
    async with serving(yjs_compaction_threshold=1 << 30) as served:
        await served("PUT", "doc")
        for start in range(0, LARGE, 1000):
            response = await served("POST", "doc", b"".join(updates[start : start + 1000]))
            assert response.status == 204
        # Nothing of pycrdt may run here during the compaction: each call would hold this
        # interpreter's GIL (and its event loop) for its whole length.
        monkeypatch.setattr(pycrdt.Doc, "apply_update", trap)
        monkeypatch.setattr(pycrdt, "merge_updates", trap)
        ticks = 0
        done = trio.Event()

        async def compact() -> None:
            await served.documents.compact(yjs.document(b"t/docs/doc", 1024))
            done.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(compact)
            while not done.is_set():
                await trio.lowlevel.checkpoint()
                ticks += 1
        monkeypatch.undo()
        assert ticks > 0
        assert served.documents.metrics.compactions == 1
        assert served.documents.metrics.compaction_failures == 0
        discovery = await served("GET", "doc", query="offset=snapshot")
        key = discovery.headers["location"].rpartition("offset=")[2]
        snapshot = await served("GET", "doc", query=f"offset={key}")
        assert text_of(snapshot.body, b"") == str(writer.text)


async def test_a_crashed_worker_fails_the_merge_and_the_next_gets_a_new_one() -> None:
    merges = Merges(1)
    await merges.start()
    try:
        with pytest.raises(MergeCrashed):
            await merges._run(crash)
        update: pycrdt.Doc[Any] = pycrdt.Doc()
        text = update.get("t", type=pycrdt.Text)
        text += "ok"
        merged = await merges.merge(b"", [update.get_update()])
        doc: pycrdt.Doc[Any] = pycrdt.Doc()
        doc.apply_update(merged)
        assert str(doc.get("t", type=pycrdt.Text)) == "ok"
    finally:
        merges.close()


async def test_merge_workers_run_at_the_lowest_cpu_priority() -> None:
    """A merge on a core the event loop shares yields to it (nice 19), in every new worker."""
    merges = Merges(1)
    await merges.start()
    try:
        assert await merges._run(os.nice, 0) == 19
        with pytest.raises(MergeCrashed):
            await merges._run(crash)
        assert await merges._run(os.nice, 0) == 19
    finally:
        merges.close()


def merge_in_this_process() -> None:
    """Run as a daemonic process, as `hypercorn --workers N` runs each server process."""

    async def main() -> None:
        merges = Merges(1)
        try:
            await merges.start()
            assert await merges._run(os.getpid) != os.getpid()
        finally:
            merges.close()

    trio.run(main)


def test_merge_workers_start_under_a_daemonic_server_process() -> None:
    """multiprocessing refuses children to a daemonic process unless it is made an ordinary
    one: under `hypercorn --workers 2` the server did not start."""
    process = multiprocessing.get_context("spawn").Process(
        target=merge_in_this_process, daemon=True
    )
    process.start()
    process.join(60)
    assert process.exitcode == 0


def serve_merges(reply: Connection) -> None:
    """A server's process, its merge worker's pid sent through `reply`, until it is killed."""

    async def main() -> None:
        merges = Merges(1)
        await merges.start()
        reply.send(await merges._run(os.getpid))
        await trio.sleep_forever()

    trio.run(main)


def test_merge_workers_end_with_a_killed_server() -> None:
    """A server killed (or ended by SIGTERM under hypercorn's `workers = 0`) does not shut
    its pool down: its workers end all the same, not left waiting for work."""
    context = multiprocessing.get_context("spawn")
    receiving, sending = context.Pipe(duplex=False)
    server = context.Process(target=serve_merges, args=(sending,))
    server.start()
    try:
        assert receiving.poll(60)
        worker = os.pidfd_open(receiving.recv())
        server.kill()
        ended, _, _ = select.select([worker], [], [], 60)  # readable once the worker ended
        assert ended == [worker]
        os.close(worker)
    finally:
        server.kill()
        server.join()


async def test_a_crashed_merge_is_a_failed_compaction(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("actors.yjs_merges.merge_kept", crash)
    async with serving(yjs_compaction_threshold=200) as served:
        await served("PUT", "doc")
        writer = Writer()
        for number in range(4):
            response = await served("POST", "doc", writer.insert(0, f"{number}" * 80))
            assert response.status == 204
        await served.documents.settled()
        assert served.documents.metrics.compaction_failures == 1
        assert served.documents.metrics.compactions == 0
        monkeypatch.undo()
        for number in range(4):
            await served("POST", "doc", writer.insert(0, f"{number}" * 80))
        await served.documents.settled()
        assert served.documents.metrics.compactions == 1  # a new worker
