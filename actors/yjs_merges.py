"""Where Yjs merges run: a small pool of worker processes (`spawn`), started before the
Documents task is (`start`: a worker takes a moment to start, and a restarted server should
compact at once) and shut down with it. pycrdt holds the GIL for a whole call (tens of ms
on a large document, seconds on a huge one), so a merge in a thread of the server's
interpreter starves its event loop; in another process it cannot. Workers run at the lowest
CPU priority (nice 19): on a core shared with the event loop a merge yields to it at once,
and still makes progress when the server is busy. A worker that dies
(`BrokenProcessPool`) fails that merge as `MergeCrashed`; the next merge gets a new pool."""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import TypeVar

import trio

from state.yjs import MergeError, merge_kept, ready

T = TypeVar("T")
logger = logging.getLogger(__name__)


class MergeCrashed(MergeError):
    """The worker process died during the merge (killed, out of memory, a crash in yrs)."""


class Merges:
    """`merge` in at most `workers` processes at once."""

    def __init__(self, workers: int = 1) -> None:
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = None

    def _started(self) -> ProcessPoolExecutor:
        if self._pool is None:
            _allow_children()
            context = multiprocessing.get_context("spawn")
            self._pool = ProcessPoolExecutor(
                self.workers, mp_context=context, initializer=_background
            )
        return self._pool

    async def start(self) -> None:
        """Start the workers and wait until one has imported pycrdt (a failure is logged:
        the next merge tries again)."""
        try:
            await self._run(ready)
        except MergeCrashed as error:
            logger.warning("%s", error)

    async def merge(self, snapshot: bytes, updates: Iterable[bytes]) -> bytes:
        result: bytes = await self._run(merge_kept, snapshot, list(updates))
        return result

    async def _run(self, function: Callable[..., T], *args: object) -> T:
        pool = self._started()
        try:
            return await _wait(pool.submit(function, *args))
        except BrokenProcessPool as error:
            if self._pool is pool:
                self._pool = None
                pool.shutdown(wait=False, cancel_futures=True)
            raise MergeCrashed(f"a merge worker process died: {error}") from error

    def close(self) -> None:
        """Stop the workers now: a merge still running is abandoned (nobody waits for it).
        Not left to the pool's own note to stop: a server process of `hypercorn --workers N`
        exits right after this, and multiprocessing then joins its children before the
        pool has sent that note, waiting forever (and hypercorn with it)."""
        pool, self._pool = self._pool, None
        if pool is not None:
            workers = list(pool._processes.values())  # no public way to reach them
            pool.shutdown(wait=False, cancel_futures=True)
            for worker in workers:
                worker.terminate()


def _allow_children() -> None:
    """`hypercorn --workers N` runs each server process as a daemonic multiprocessing child,
    and multiprocessing refuses children to those (they would be orphaned if it were ended
    without cleanup). The pool is shut down with the Documents task, as in a server of one
    process, so the worker is made an ordinary process (its parent still ends it)."""
    process = multiprocessing.current_process()
    if process.daemon:
        process.daemon = False


def _background() -> None:
    """In each worker, first: the lowest CPU priority (merges are background work), and an
    end with the server's process. A server killed, or ended without shutting its pool down
    (hypercorn with `workers = 0` exits at SIGTERM at once), would leave its workers
    waiting for work forever."""
    with contextlib.suppress(OSError):
        os.nice(19)
    parent = multiprocessing.parent_process()
    if parent is not None:
        threading.Thread(target=_exit_with, args=(parent,), daemon=True).start()


def _exit_with(parent: multiprocessing.process.BaseProcess) -> None:
    parent.join()  # returns once the parent process has ended
    os._exit(0)


async def _wait(future: Future[T]) -> T:
    """The future's result, waited for on trio's loop (no thread blocked on it)."""
    done = trio.Event()
    token = trio.lowlevel.current_trio_token()

    def wake(_: Future[T]) -> None:
        with contextlib.suppress(trio.RunFinishedError):  # the run ended: nobody waits
            token.run_sync_soon(done.set)

    future.add_done_callback(wake)
    try:
        await done.wait()
    except trio.Cancelled:
        future.cancel()
        raise
    return future.result()
