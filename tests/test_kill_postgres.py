"""SIGKILL in postgres mode (issue 16): two server processes on one database behind HAProxy
(round-robin per request), concurrent idempotent writers appending through it, one server
process killed at random moments and started again, and the database restarted with a fast
shutdown twice meanwhile.

Writers retry whatever gets no answer, or a 5xx, with the same producer sequence, so every
append is eventually acknowledged: each must then be in its stream exactly once, in order per
producer, ending at the offset its 200 named, with nothing else in the stream. A server that
answers at all during an outage must say it is temporary: 503 with `Retry-After`.
"""

from __future__ import annotations

import collections
import contextlib
import os
import random
import signal
import subprocess
from pathlib import Path

import attrs
import httpx
import trio

from tests.haproxy import running_haproxy
from tests.postgres import Cluster
from tests.server import free_port, running_process
from tests.test_kill import entry, parse
from tests.test_postgres import postgres_env

KILLS = 20
DATABASE_RESTARTS = 2
STREAMS = ("bin-0", "bin-1", "text-0")
WRITERS = [stream for stream in STREAMS for _ in range(2)]  # each writer's stream
PAUSE = (0.05, 0.4)  # seconds of writing between two kills: the test's input, drawn at random
RETRY_PAUSE = 0.02  # seconds a writer waits before retrying, as a client's back-off
APPEND_DEADLINE = 60  # seconds an append may take to be acknowledged, retries included
CONTENT_TYPES = {"bin": "application/octet-stream", "text": "text/plain"}


@attrs.define
class Backend:
    """One server process on a fixed port (HAProxy's backend), started again after a kill."""

    root: Path
    env: dict[str, str]
    port: int = attrs.field(factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0
    _running: contextlib.ExitStack = attrs.field(factory=contextlib.ExitStack)

    async def start(self) -> None:
        """Started with `running_process` (in a worker thread: it waits for /readyz), each
        time with a log of its own."""
        self.starts += 1
        data = self.root / f"server-{self.port}-{self.starts}" / "data"
        data.parent.mkdir(parents=True)
        running = running_process(data, self.env, self.port)
        _, self.process = await trio.to_thread.run_sync(self._running.enter_context, running)

    async def kill(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        await trio.to_thread.run_sync(self.process.wait)
        await self.stop()

    async def stop(self) -> None:
        await trio.to_thread.run_sync(self._running.close)


@attrs.define
class Outcomes:
    """What the writers saw, for the report and the checks."""

    acked: dict[tuple[str, int], list[int]] = attrs.field(factory=dict)  # seqs, in ack order
    offsets: dict[tuple[str, int], list[int]] = attrs.field(factory=dict)  # of each 200
    retried: collections.Counter[str] = attrs.field(factory=collections.Counter)
    duplicates: int = 0


def retryable(response: httpx.Response) -> bool:
    """HAProxy's own 502/503 (a backend down or cut off), or a server's 503 with Retry-After.
    Anything else that is not a 2xx fails the test."""
    if "X-Backend" not in response.headers:
        return response.status_code in (502, 503)
    return response.status_code == 503 and "Retry-After" in response.headers


async def append(
    client: httpx.AsyncClient, url: str, stream: str, writer: int, seq: int, seen: Outcomes
) -> httpx.Response:
    """One append, retried as is until acknowledged (bounded by `APPEND_DEADLINE`)."""
    kind = stream.split("-")[0]
    headers = {
        "Content-Type": CONTENT_TYPES[kind],
        "Producer-Id": f"w{writer}",
        "Producer-Epoch": "0",
        "Producer-Seq": str(seq),
    }
    with trio.fail_after(APPEND_DEADLINE):
        while True:
            try:
                response = await client.post(
                    url + stream, content=entry(stream, writer, seq), headers=headers
                )
            except httpx.TransportError as error:
                seen.retried[type(error).__name__] += 1
            else:
                if response.status_code in (200, 204):
                    return response
                assert retryable(response), (response.status_code, response.headers, response.text)
                backend = response.headers.get("X-Backend", "haproxy")
                seen.retried[f"{response.status_code} from {backend}"] += 1
            await trio.sleep(RETRY_PAUSE)


async def writer(
    client: httpx.AsyncClient, url: str, stream: str, index: int, seen: Outcomes, stop: trio.Event
) -> None:
    acked, offsets = seen.acked[(stream, index)], seen.offsets[(stream, index)]
    seq = 0
    while not stop.is_set():
        response = await append(client, url, stream, index, seq, seen)
        if response.status_code == 200:
            offsets.append(int(response.headers["Stream-Next-Offset"].split("_")[1]))
        else:  # committed before a kill or a restart cut its answer off: retried, not added
            seen.duplicates += 1
            offsets.append(-1)
        acked.append(seq)
        seq += 1


async def read_all(client: httpx.AsyncClient, url: str) -> tuple[bytes, int]:
    """The stream's bytes and tail, each read retried as an append is (a database restart
    late in the run may still cost a read its connection)."""
    offset, content = "-1", b""
    with trio.fail_after(APPEND_DEADLINE):
        while True:
            response = await client.get(url, params={"offset": offset})
            if response.status_code != 200:
                assert retryable(response), (response.status_code, response.text)
                await trio.sleep(RETRY_PAUSE)
                continue
            content += response.content
            offset = response.headers["Stream-Next-Offset"]
            if "Stream-Up-To-Date" in response.headers:
                return content, int(offset.split("_")[1])


async def check_stream(client: httpx.AsyncClient, url: str, stream: str, seen: Outcomes) -> int:
    """Exactly the acknowledged appends, each once, in order per producer, ending where its
    200 said, and nothing else: no gap, no duplicate. The number of appends checked."""
    content, tail = await read_all(client, url + stream)
    assert tail == len(content)
    mine = {w: seqs for (s, w), seqs in seen.acked.items() if s == stream}
    stored = parse(content)
    assert sorted(stored) == sorted((w, seq) for w, seqs in mine.items() for seq in seqs)
    for w, seqs in mine.items():
        assert [seq for who, seq in stored if who == w] == seqs == list(range(len(seqs)))
        ends = []
        for seq, offset in zip(seqs, seen.offsets[(stream, w)], strict=True):
            written = entry(stream, w, seq)
            end = content.index(written) + len(written)
            assert offset in (-1, end), (stream, w, seq, offset, end)
            ends.append(end)
        assert ends == sorted(ends) and len(set(ends)) == len(ends)  # strictly increasing
    return len(stored)


async def test_acknowledged_appends_survive_sigkill_and_database_restarts(
    tmp_path: Path, postgres_cluster: Cluster, postgres_url: str
) -> None:
    seed = int(os.environ.get("DS_TEST_SEED", random.randrange(1 << 32)))
    print(f"seed {seed} (DS_TEST_SEED={seed} repeats this run's kills)")
    rng = random.Random(seed)
    restarts = set(rng.sample(range(1, KILLS), DATABASE_RESTARTS))
    env = postgres_env(postgres_url)
    backends = [Backend(tmp_path, env), Backend(tmp_path, env)]
    seen = Outcomes()
    try:
        for backend in backends:
            await backend.start()
        with running_haproxy([b.port for b in backends]) as balancer:
            url = f"{balancer}/v1/stream/"
            async with httpx.AsyncClient(timeout=30) as client:
                for stream in STREAMS:
                    kind = stream.split("-")[0]
                    created = await client.put(
                        url + stream, headers={"Content-Type": CONTENT_TYPES[kind]}
                    )
                    assert created.status_code == 201, created.text
                stop = trio.Event()
                async with trio.open_nursery() as nursery:
                    for index, stream in enumerate(WRITERS):
                        seen.acked[(stream, index)], seen.offsets[(stream, index)] = [], []
                        nursery.start_soon(writer, client, url, stream, index, seen, stop)
                    for round_number in range(KILLS):
                        await trio.sleep(rng.uniform(*PAUSE))  # writes land; a kill at random
                        if round_number in restarts:
                            await trio.to_thread.run_sync(postgres_cluster.restart)
                        victim = rng.choice(backends)
                        await victim.kill()
                        await victim.start()
                    stop.set()  # each writer gets its in-flight append acknowledged
                checked = 0
                for stream in STREAMS:
                    checked += await check_stream(client, url, stream, seen)
    finally:
        for backend in backends:
            await backend.stop()
    print(
        f"{checked} acknowledged appends checked, {seen.duplicates} retries deduplicated,"
        f" {KILLS} kills, {DATABASE_RESTARTS} database restarts; retried: {dict(seen.retried)}"
    )
    assert all(seqs for seqs in seen.acked.values())  # every writer got appends through
    for log in tmp_path.glob("server-*/server-*.log"):  # no failure the servers did not expect
        assert "Traceback" not in log.read_text(errors="replace"), log
