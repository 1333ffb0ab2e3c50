"""The database restarted, or down, under a running server (issue 16): the pool replaces the
connections a restart closed instead of failing requests on them, an outage is answered 503
with Retry-After (and reported by /readyz), and a commit whose answer was cut off is retried
exactly once by its producer's sequence. The SIGKILL test (tests/test_kill_postgres.py) runs
all of this under load."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import httpx
import psycopg
import pytest
import trio

from actors.service import Streams
from actors.storage import pg_rows
from actors.storage.postgres import PostgresLog, PostgresStorage
from streams.protocol.errors import ProtocolError
from streams.protocol.headers import Producer
from streams.protocol.machine import AppendRequest, CreateRequest, Reply
from streams.protocol.offsets import Sentinel
from streams.protocol.records import StreamConfig
from tests.on_disk import started
from tests.postgres import Cluster
from tests.server import running_process, wait_ready
from tests.test_postgres import postgres_env

T = TypeVar("T")
TEXT = "text/plain"
POOL_TIMEOUT = 1.0  # seconds a request waits for a connection while the database is down
BOUND = 20  # seconds: the most a test waits for the database to come back


@pytest.fixture
async def streams(postgres_url: str) -> AsyncIterator[Streams]:
    """A registry on the database (one server process), with stream `s` holding `a`."""
    storage = PostgresStorage.connect(postgres_url, max_size=4, timeout=POOL_TIMEOUT)
    try:
        async with trio.open_nursery() as nursery:
            service = Streams(await started(storage, nursery))
            await service.create("s", CreateRequest(StreamConfig(TEXT)))
            assert (await service.append("s", produced(b"a", 0))).status == 200
            yield service
            nursery.cancel_scope.cancel()
    finally:
        storage.close()


def produced(body: bytes, seq: int) -> AppendRequest:
    return AppendRequest(TEXT, body, producer=Producer("p", 0, seq))


async def stored(streams: Streams) -> bytes:
    return (await streams.read("s", Sentinel.START, 1 << 20)).data


async def unavailable(operation: Callable[[], Any]) -> ProtocolError:
    with pytest.raises(ProtocolError) as raised:
        await operation()
    error = raised.value
    assert (error.status, error.code) == (503, "STORAGE_UNAVAILABLE"), error
    assert "Retry-After" in error.headers
    return error


async def test_appends_go_on_when_the_database_restarts(
    streams: Streams, postgres_cluster: Cluster
) -> None:
    """A restart closes every pooled connection: the first request to find one closed is
    answered 503 (it may have been cut off mid-commit), and the pool replaces the others
    then, so that the retry is served."""
    for seq, body in enumerate((b"b", b"c"), start=1):
        await trio.to_thread.run_sync(postgres_cluster.restart)
        appended = await retried_once(partial(streams.append, "s", produced(body, seq)))
        assert appended.status == 200
    assert await stored(streams) == b"abc"


async def retried_once(operation: Callable[[], Awaitable[T]]) -> T:
    try:
        return await operation()
    except ProtocolError as error:
        assert (error.status, error.code) == (503, "STORAGE_UNAVAILABLE"), error
    return await operation()


async def test_an_append_while_the_database_is_down_is_answered_503_then_retried(
    streams: Streams, postgres_cluster: Cluster
) -> None:
    await trio.to_thread.run_sync(postgres_cluster.stop)
    try:
        await unavailable(lambda: streams.append("s", produced(b"b", 1)))
        await unavailable(lambda: stored(streams))
    finally:
        await trio.to_thread.run_sync(postgres_cluster.start)
    retried = await retry_until_answered(lambda: streams.append("s", produced(b"b", 1)))
    assert retried.status == 200
    assert await stored(streams) == b"ab"


async def retry_until_answered(operation: Callable[[], Any]) -> Reply:
    """As a client does with a 503: again, after a pause, until answered (bounded). The pool
    may still be connecting again when the database is back."""
    with trio.fail_after(BOUND):
        while True:
            try:
                reply: Reply = await operation()
                return reply
            except ProtocolError as error:
                assert error.status == 503, error
            await trio.sleep(0.05)  # the client's back-off


async def test_a_commit_whose_answer_was_cut_off_is_retried_exactly_once(
    streams: Streams, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The connection dies just after COMMIT: the append took effect, but the actor cannot
    know. It answers 503 and forgets what it cached; the producer's retry finds the append
    already there (204), and the next one goes after it."""
    real = PostgresLog._commit_held
    cut_off: list[bool] = []

    def commit(log: PostgresLog, connection: pg_rows.Connection, staged: Any) -> int:
        end = real(log, connection, staged)  # the append and its COMMIT
        if not cut_off:
            cut_off.append(True)
            connection.close()
            raise psycopg.OperationalError("server closed the connection unexpectedly")
        return end

    monkeypatch.setattr(PostgresLog, "_commit_held", commit)
    await unavailable(lambda: streams.append("s", produced(b"b", 1)))
    assert cut_off
    assert (await streams.append("s", produced(b"b", 1))).status == 204
    assert (await streams.append("s", produced(b"c", 2))).status == 200
    assert await stored(streams) == b"abc"


def test_readyz_reports_a_database_outage_and_its_end(
    tmp_path: Path, postgres_cluster: Cluster, postgres_url: str
) -> None:
    env = {
        **postgres_env(postgres_url),
        "DS_STORAGE__POSTGRES_CONNECT_TIMEOUT_SECS": str(POOL_TIMEOUT),
    }
    data = tmp_path / "data"
    with running_process(data, env) as (base_url, process):
        postgres_cluster.restart()
        assert httpx.get(f"{base_url}/readyz").status_code == 200  # not on a closed connection
        postgres_cluster.stop()
        try:
            response = httpx.get(f"{base_url}/readyz", timeout=BOUND)
            assert response.status_code == 503
            assert response.text.startswith("not ready: database unavailable")
        finally:
            postgres_cluster.start()
        port = base_url.rsplit(":", 1)[1]
        wait_ready(base_url, process, tmp_path / f"server-{port}.log")  # ready again


async def test_a_create_whose_answer_was_cut_off_is_kept(
    streams: Streams, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stream may be in use by another process already: it is not removed as a failed
    create is, and the retried PUT finds it."""
    real = PostgresLog._commit

    def commit(log: PostgresLog, connection: pg_rows.Connection, staged: Any) -> int:
        real(log, connection, staged)
        monkeypatch.setattr(PostgresLog, "_commit", real)
        connection.close()
        raise psycopg.OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(PostgresLog, "_commit", commit)
    request = CreateRequest(StreamConfig(TEXT))
    await unavailable(lambda: streams.create("t", request))
    assert (await streams.create("t", request)).status == 200  # it exists, as asked
