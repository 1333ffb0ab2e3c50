"""Where Yjs merges run: a small pool of worker processes (`spawn`), started with the Documents
task (`warm`: a worker takes a moment to start, and a restarted server should compact soon) and shut down with the Documents task. pycrdt holds the GIL for a whole call (tens of ms
on a large document, seconds on a huge one), so a merge in a thread of the server's
interpreter starves its event loop; in another process it cannot. A worker that dies
(`BrokenProcessPool`) fails that merge as `MergeCrashed`; the next merge gets a new pool."""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

import trio

from state.yjs import MergeError, merge, ready


class MergeCrashed(MergeError):
    """The worker process died during the merge (killed, out of memory, a crash in yrs)."""


class Merges:
    """`merge` in at most `workers` processes at once."""

    def __init__(self, workers: int = 1) -> None:
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = None

    def warm(self) -> ProcessPoolExecutor:
        """The pool, its workers started (importing pycrdt) if they were not."""
        if self._pool is None:
            context = multiprocessing.get_context("spawn")
            self._pool = ProcessPoolExecutor(self.workers, mp_context=context)
            self._pool.submit(ready)
        return self._pool

    async def merge(self, snapshot: bytes, updates: Iterable[bytes]) -> bytes:
        pool = self.warm()
        try:
            future = pool.submit(merge, snapshot, list(updates))
            result: bytes = await _wait(future)
        except BrokenProcessPool as error:
            if self._pool is pool:
                self._pool = None
                pool.shutdown(wait=False, cancel_futures=True)
            raise MergeCrashed(f"the merge's worker process died: {error}") from error
        return result

    def close(self) -> None:
        """Stop the workers (a running merge is let finish in its process, not awaited)."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)


async def _wait(future: Future[bytes]) -> bytes:
    """The future's result, waited for on trio's loop (no thread blocked on it)."""
    done = trio.Event()
    token = trio.lowlevel.current_trio_token()

    def wake(_: Future[bytes]) -> None:
        try:
            token.run_sync_soon(done.set)
        except trio.RunFinishedError:
            pass

    future.add_done_callback(wake)
    try:
        await done.wait()
    except trio.Cancelled:
        future.cancel()
        raise
    return future.result()
