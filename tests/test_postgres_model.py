"""The single-process model test (tests/test_actor_model.py) against two registries on one
PostgreSQL database, as two server processes would run (docs/scaling.md): every operation goes
to registry A or B, drawn by hypothesis, and every answer must be the one process's answer.

Both registries stay up for the whole example, so each one's actors hold state (tails, closure,
producers, forks, deletion) that the other process changes under them. The state machine runs
in a worker thread and sends each operation into the Trio run that hosts the registries.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import attrs
import hypothesis.strategies as st
import pytest
import trio
from hypothesis import settings
from hypothesis.stateful import initialize, run_state_machine_as_test

from actors.registry import Registry
from actors.service import Streams
from actors.storage.postgres import PostgresStorage
from streams.protocol.errors import ProtocolError
from tests.on_disk import started
from tests.postgres import Cluster
from tests.test_actor_model import StreamMachine

T = TypeVar("T")
SETTINGS = settings(max_examples=20, stateful_step_count=20, deadline=None)


@attrs.define
class Pair:
    """Two services on one database, and how to stop them."""

    sides: tuple[Streams, Streams]
    storage: PostgresStorage
    scope: trio.CancelScope
    stopped: trio.Event


async def serve_pair(url: str, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    storages = [PostgresStorage.connect(url, max_size=4) for _ in range(2)]
    stopped = trio.Event()
    try:
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as nursery:
                registries: list[Registry] = [
                    await started(storage, nursery, idle_timeout=60, cache_bytes=8)
                    for storage in storages
                ]
                sides = (Streams(registries[0]), Streams(registries[1]))
                task_status.started(Pair(sides, storages[0], scope, stopped))
                await trio.sleep_forever()
    finally:
        for storage in storages:
            storage.close()
        stopped.set()


class TwoProcessMachine(StreamMachine):
    """Runs in a worker thread of the Trio run that owns `nursery`."""

    cluster: Cluster
    nursery: trio.Nursery

    @initialize(choices=st.randoms(use_true_random=False))
    def open_storage(self, choices: random.Random) -> None:
        self.choices = choices
        url = self.cluster.database()
        self.pair: Pair = trio.from_thread.run(self.nursery.start, serve_pair, url)
        self.storage = self.pair.storage  # only to tell the model's rules it is no FileStorage

    def teardown(self) -> None:
        pair: Pair | None = getattr(self, "pair", None)
        if pair is not None:
            trio.from_thread.run_sync(pair.scope.cancel)
            trio.from_thread.run(pair.stopped.wait)

    def _run(self, operation: Callable[[Streams], Awaitable[T]]) -> T:
        side = self.choices.choice(self.pair.sides)

        async def call() -> T:
            return await operation(side)

        return trio.from_thread.run(call)

    def _outcome(self, operation: Callable[[Streams], Awaitable[Any]]) -> Any:
        try:
            return self._run(operation)
        except ProtocolError as error:
            return error.status


# psycopg_pool's worker threads call random() (reconnection jitter) while hypothesis draws;
# that touches no draw, but hypothesis cannot tell and warns.
@pytest.mark.filterwarnings("ignore:Do not use the `random` module")
def test_two_registries_on_one_database_answer_as_one(postgres_cluster: Cluster) -> None:
    async def main() -> None:
        async with trio.open_nursery() as nursery:
            TwoProcessMachine.cluster = postgres_cluster
            TwoProcessMachine.nursery = nursery
            await trio.to_thread.run_sync(
                lambda: run_state_machine_as_test(TwoProcessMachine, settings=SETTINGS)
            )
            nursery.cancel_scope.cancel()

    trio.run(main)
