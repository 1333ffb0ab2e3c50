"""A long-lived Trio run, with one registry in it, that synchronous code drives step by step.

Hypothesis state machines are synchronous; to keep one registry (and its actors) alive
across their steps, the run lives in a background thread and each step is a coroutine sent
to it through the run's `TrioToken`. The caller waits for the outcome with a real-time
bound, so a deadlock fails the test instead of hanging it.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import trio
import trio.testing

from actors.registry import Registry

T = TypeVar("T")
STEP_SECONDS = 60.0  # real time a step may take before it counts as a deadlock


async def settle() -> None:
    """Return once every task is blocked and no worker thread runs (file I/O): nothing that
    a step started is still under way."""
    while True:
        await trio.testing.wait_all_tasks_blocked()
        if not trio.testing.active_thread_count():
            return
        await trio.testing.wait_all_threads_completed()


class TrioThread:
    """Runs `registry` under `clock` in a background thread until `close`."""

    def __init__(self, registry: Registry, clock: trio.abc.Clock) -> None:
        self.registry = registry
        self.clock = clock
        self._ready = threading.Event()
        self._pending: concurrent.futures.Future[Any] | None = None
        self._thread = threading.Thread(target=self._main, daemon=True)
        self._thread.start()
        if not self._ready.wait(STEP_SECONDS) or not self._thread.is_alive():
            raise RuntimeError("the Trio thread did not start")

    def _main(self) -> None:
        try:
            trio.run(self._serve, clock=self.clock)
        finally:
            self._ready.set()
            if self._pending is not None and not self._pending.done():
                self._pending.set_exception(RuntimeError("the Trio run ended during a step"))

    async def _serve(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await nursery.start(self.registry.run)
            await self.registry.deadlines_loaded.wait()
            await self.registry.collected.wait()
            self._ready.set()

    def step(self, operation: Callable[[], Awaitable[T]]) -> T:
        """Run `operation` in the Trio thread, let the run `settle` (the next step starts
        from a quiet loop), and return the result or raise the error."""
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._pending = future

        async def run() -> None:
            try:
                result = await operation()
                await settle()
            except Exception as error:
                future.set_exception(error)
            else:
                future.set_result(result)

        self._token.run_sync_soon(self._nursery.start_soon, run)
        try:
            return future.result(timeout=STEP_SECONDS)
        except concurrent.futures.TimeoutError:
            raise AssertionError("a step did not finish: deadlock?") from None

    def close(self) -> None:
        with contextlib.suppress(trio.RunFinishedError):
            self._token.run_sync_soon(self._nursery.cancel_scope.cancel)
        self._thread.join(STEP_SECONDS)
