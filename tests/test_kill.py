"""SIGKILL the real server (file-durable) again and again under concurrent idempotent writers.

Every acknowledged append must be present exactly once, in order, byte-exact; retries of
requests cut off by a kill must be deduplicated; closure and forks must survive.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
from pathlib import Path
from typing import Any

import attrs
import httpx
import trio

from tests.server import free_port, hypercorn_command

KILLS = 20
WRITERS_PER_STREAM = 2
STREAMS = {
    "bin-0": "application/octet-stream",
    "bin-1": "application/octet-stream",
    "json-0": "application/json",
    "json-1": "application/json",
}
CLOSER = "closing"  # one producer appends to it, then closes it with its last append
CLOSE_AFTER = 30
DEDUPLICATED: list[int] = []
INTERRUPTED: list[str] = []


@attrs.define
class Server:
    data_dir: Path
    port: int
    process: subprocess.Popen[bytes] | None = None
    up: trio.Event = attrs.field(factory=trio.Event)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/stream/"

    async def start(self, client: httpx.AsyncClient) -> None:
        env = {
            **os.environ,
            "DS_STORAGE__DATA_DIR": str(self.data_dir),
            "DS_STORAGE__MODE": "file-durable",
        }
        log = open(self.data_dir.parent / "server.log", "ab")  # noqa: SIM115
        self.process = subprocess.Popen(
            hypercorn_command(self.port),
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # hypercorn forks a worker: kill the whole group
        )
        log.close()
        with trio.fail_after(30):
            while True:
                try:
                    response = await client.get(f"http://127.0.0.1:{self.port}/readyz")
                    if response.status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert self.process.poll() is None, "server died on start"
                await trio.sleep(0.02)  # polling another process's port
        self.up.set()

    async def kill(self) -> None:
        assert self.process is not None
        self.up = trio.Event()
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        with trio.fail_after(10):  # the worker too must be gone before the next start
            while True:
                try:
                    os.killpg(self.process.pid, 0)
                except ProcessLookupError:
                    break
                await trio.sleep(0.01)  # polling another process's exit


async def send(
    server: Server, client: httpx.AsyncClient, method: str, path: str, **kwargs: Any
) -> httpx.Response:
    """One request, retried as is across server kills until it gets an answer."""
    while True:
        await server.up.wait()
        try:
            return await client.request(method, server.url + path, **kwargs)
        except httpx.TransportError:
            INTERRUPTED.append(path)
            await trio.sleep(0)  # the kill is in progress: wait for the next `up`


def entry(stream: str, writer: int, seq: int) -> bytes:
    if STREAMS.get(stream) == "application/json":
        return json.dumps({"w": writer, "s": seq}).encode()
    return f"{writer}:{seq};".encode()


async def writer(
    server: Server,
    client: httpx.AsyncClient,
    stream: str,
    writer_id: int,
    acked: list[int],
    stop: trio.Event,
) -> None:
    content_type = STREAMS.get(stream, "text/plain")
    seq = 0
    while not stop.is_set():
        headers = {
            "Content-Type": content_type,
            "Producer-Id": f"w{writer_id}",
            "Producer-Epoch": "0",
            "Producer-Seq": str(seq),
        }
        closing = stream == CLOSER and seq == CLOSE_AFTER
        if closing:
            headers["Stream-Closed"] = "true"
        response = await send(
            server, client, "POST", stream, content=entry(stream, writer_id, seq), headers=headers
        )
        assert response.status_code in (200, 204), (response.status_code, response.text)
        if response.status_code == 204 and not closing:
            DEDUPLICATED.append(seq)  # committed before a kill, answered only on retry
        acked.append(seq)
        seq += 1
        if closing:
            return


async def read_all(client: httpx.AsyncClient, url: str) -> tuple[bytes | list[Any], int]:
    offset, body, items = "-1", b"", []
    while True:
        response = await client.get(url, params={"offset": offset})
        assert response.status_code == 200, response.text
        if response.headers["content-type"] == "application/json":
            items.extend(response.json())
        else:
            body += response.content
        offset = response.headers["Stream-Next-Offset"]
        if "Stream-Up-To-Date" in response.headers:
            return (
                items if response.headers["content-type"] == "application/json" else body,
                int(offset.split("_")[1]),
            )


def parse(content: bytes | list[Any]) -> list[tuple[int, int]]:
    if isinstance(content, list):
        return [(item["w"], item["s"]) for item in content]
    return [
        (int(w), int(s))
        for w, s in (part.split(":") for part in content.decode().split(";") if part)
    ]


async def test_acknowledged_writes_survive_repeated_sigkill(tmp_path: Path) -> None:
    server = Server(tmp_path / "data", free_port())
    server.data_dir.mkdir()
    rng = random.Random(2026)
    acked: dict[tuple[str, int], list[int]] = {}
    async with httpx.AsyncClient(timeout=30) as client:
        await server.start(client)
        for stream, content_type in [*STREAMS.items(), (CLOSER, "text/plain")]:
            response = await send(
                server, client, "PUT", stream, headers={"Content-Type": content_type}
            )
            assert response.status_code == 201
        stop = trio.Event()
        fork_at: int | None = None
        async with trio.open_nursery() as nursery:
            writer_id = 0
            for stream in [*STREAMS, CLOSER]:
                for _ in range(1 if stream == CLOSER else WRITERS_PER_STREAM):
                    acked[(stream, writer_id)] = []
                    nursery.start_soon(
                        writer, server, client, stream, writer_id, acked[(stream, writer_id)], stop
                    )
                    writer_id += 1
            for round_number in range(KILLS):
                await trio.sleep(rng.uniform(0.05, 0.6))  # let writes land, kill at random
                if round_number == KILLS // 2:
                    head = await send(server, client, "HEAD", "bin-0")
                    fork_at = int(head.headers["Stream-Next-Offset"].split("_")[1])
                    response = await send(
                        server,
                        client,
                        "PUT",
                        "bin-0-fork",
                        headers={
                            "Stream-Forked-From": "/v1/stream/bin-0",
                            "Stream-Fork-Offset": head.headers["Stream-Next-Offset"],
                        },
                    )
                    assert response.status_code in (200, 201)
                await server.kill()
                await server.start(client)
            stop.set()  # writers finish their in-flight request, retried if need be

        assert fork_at is not None
        for (stream, writer_id), seqs in acked.items():
            content, _ = await read_all(client, server.url + stream)
            mine = [seq for w, seq in parse(content) if w == writer_id]
            # Every write was retried until answered: each present exactly once, in order.
            assert mine == seqs == list(range(len(seqs)))
        closer = await client.head(server.url + CLOSER)
        assert closer.headers.get("Stream-Closed") == "true"
        assert len(acked[(CLOSER, max(w for s, w in acked if s == CLOSER))]) == CLOSE_AFTER + 1
        source, _ = await read_all(client, server.url + "bin-0")
        fork, tail = await read_all(client, server.url + "bin-0-fork")
        assert tail == fork_at
        assert isinstance(source, bytes) and fork == source[:fork_at]
        total = sum(len(seqs) for seqs in acked.values())
        print(
            f"{total} acknowledged appends, {len(INTERRUPTED)} requests cut off by kills, "
            f"{len(DEDUPLICATED)} retries deduplicated, {KILLS} kills"
        )
        assert total > 100  # the test did real work
        await server.kill()
