"""SIGKILL the real server (file-durable) again and again while a producer appends to a
State Protocol stream that compacts every few appends (docs/state.md): after every restart
the stream's log is there (the old one or the new one, never neither), reads from the
start work, and its snapshot is the fold of every acknowledged change, plus at most the one
in flight when the server died.
"""

from __future__ import annotations

import hashlib
import random
from pathlib import Path
from typing import Any

import attrs
import httpx
import trio

from tests.server import free_port
from tests.state_fold import RESET, Fold, change
from tests.test_kill import Server

KILLS = 16
KEYS = 2  # a small view: the log passes it, and so compacts, every few appends
NAME = "compacting"
PAD = "p" * 50_000


@attrs.define
class Writer:
    """One idempotent producer, retrying each append until it is answered; it waits at
    `gate` (closed around each kill and the checks after it)."""

    acked: list[list[Any]] = attrs.field(factory=list)
    in_flight: list[Any] | None = None
    gate: trio.Event = attrs.field(factory=trio.Event)
    progress: trio.Event = attrs.field(factory=trio.Event)
    retried: int = 0

    async def run(self, client: httpx.AsyncClient, url: str, stop: trio.Event) -> None:
        seq = 0
        while not stop.is_set():
            messages = batch(seq)
            headers = {"Producer-Id": "w", "Producer-Epoch": "0", "Producer-Seq": str(seq)}
            self.in_flight = messages
            while True:
                await self.gate.wait()
                try:
                    response = await client.post(url, json=messages, headers=headers)
                    break
                except httpx.TransportError:
                    self.retried += 1  # killed mid-request: the gate opens after the restart
                    await trio.lowlevel.checkpoint()
            assert response.status_code in (200, 204), response.text
            self.acked.append(messages)
            self.in_flight = None
            seq += 1
            self.progress.set()
            self.progress = trio.Event()

    async def until_acked(self, count: int) -> None:
        while len(self.acked) < count:
            await self.progress.wait()


def batch(seq: int) -> list[Any]:
    """Upserts mostly, some deletes and resets, a few batches of several changes."""
    key = f"k{seq % KEYS}"
    messages: list[Any] = [change(key, [seq, PAD], txid=str(seq))]
    if seq % 7 == 3:
        messages.append(change(f"k{(seq + 1) % KEYS}", operation="delete"))
    if seq % 23 == 22:
        messages.append(RESET)
    if seq % 5 == 1:
        messages.append(change(f"extra{seq % 3}", seq, kind="other"))
    return messages


def log_path(data_dir: Path) -> Path:
    digest = hashlib.sha256(NAME.encode()).hexdigest()
    return data_dir / "streams" / digest[:2] / f"{digest}.log"


def folded(batches: list[list[Any]]) -> list[Any]:
    return list(Fold(message for messages in batches for message in messages).rows.values())


async def check(client: httpx.AsyncClient, url: str, writer: Writer) -> bool:
    """The state after a restart; True if the stream had compacted."""
    snapshot = await client.get(url, params={"state": "snapshot"})
    assert snapshot.status_code == 200, snapshot.text
    rows = snapshot.json()[1:-1]
    expected = [folded(writer.acked)]
    if writer.in_flight is not None:  # committed before the kill, or not
        expected.append(folded([*writer.acked, writer.in_flight]))
    assert rows in expected, (len(writer.acked), rows, expected)
    plain = await client.get(url, params={"offset": "-1"})
    assert plain.status_code == 200, plain.text
    assert plain.headers["Stream-Next-Offset"] == snapshot.headers["Stream-Next-Offset"]
    if "Stream-State-Base" in plain.headers:
        assert plain.content == snapshot.content
        return True
    assert list(Fold(plain.json()).rows.values()) == rows  # the whole log, folded
    return False


async def test_compaction_survives_repeated_sigkill(tmp_path: Path) -> None:
    server = Server(tmp_path / "data", free_port())
    server.data_dir.mkdir()
    rng = random.Random(11)
    writer = Writer()
    compacted = midway = 0  # restarts that found it compacted; kills with a next log begun
    async with httpx.AsyncClient(timeout=30) as client:
        await server.start(client)
        url = server.url + NAME
        headers = {"Content-Type": "application/json", "Stream-State-Compaction": "256"}
        assert (await client.put(url, headers=headers)).status_code == 201
        writer.gate.set()
        stop = trio.Event()
        with trio.fail_after(120):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(writer.run, client, url, stop)
                for _ in range(KILLS):
                    # A few acknowledgements, then a kill a random 0-3 ms later: a step of
                    # compaction (about 1 ms here) may be running, and the next append is
                    # on its way.
                    await writer.until_acked(len(writer.acked) + rng.randint(3, 25))
                    await trio.sleep(rng.uniform(0, 0.003))
                    writer.gate = trio.Event()
                    await server.kill()
                    assert log_path(server.data_dir).exists()  # never neither
                    midway += Path(f"{log_path(server.data_dir)}.compact").exists()
                    await server.start(client)
                    compacted += await check(client, url, writer)
                    writer.gate.set()
                stop.set()  # the writer finishes its request in flight
        assert writer.in_flight is None
        assert await check(client, url, writer)
        await server.kill()
    assert compacted >= KILLS // 2  # the kills met a compacting stream
    log = (tmp_path / "server.log").read_text()
    print(
        f"{len(writer.acked)} acknowledged appends, {log.count('compacted at offset')} "
        f"compactions logged, {writer.retried} requests cut off by kills, {KILLS} kills, "
        f"{midway} of them between a compaction's two steps or inside one (a next log beside)"
    )
