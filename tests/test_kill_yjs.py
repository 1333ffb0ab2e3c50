"""SIGKILL the real server (file-durable) again and again while a writer appends Yjs updates
to a document that compacts every few appends: after every restart discovery answers, the
snapshot it leads to is there, and snapshot + the updates after it, like the updates from
`-1`, are every acknowledged edit (plus at most the one in flight when the server died)."""

from __future__ import annotations

import random
from pathlib import Path

import attrs
import httpx
import pytest
import trio

from streams.protocol.yjs import unframe
from tests.server import free_port
from tests.test_kill import Server
from tests.yjs_helpers import Writer, text_of

KILLS = 12
PAD = "p" * 300  # ~7 appends per compaction at the threshold below


@attrs.define
class Editor:
    """One idempotent producer of edits, retrying each until answered; it waits at `gate`
    (closed around each kill and the checks after it)."""

    writer: Writer = attrs.field(factory=Writer)
    acked: str = ""  # the text once every acknowledged edit is in
    in_flight: str | None = None
    acks: int = 0
    gate: trio.Event = attrs.field(factory=trio.Event)
    progress: trio.Event = attrs.field(factory=trio.Event)

    async def run(self, client: httpx.AsyncClient, url: str, stop: trio.Event) -> None:
        seq = 0
        while not stop.is_set():
            update = self.writer.insert(len(self.writer.text), f"[{seq}{PAD}]")
            self.in_flight = str(self.writer.text)
            headers = {"Producer-Id": "e", "Producer-Epoch": "0", "Producer-Seq": str(seq)}
            while True:
                await self.gate.wait()
                try:
                    response = await client.post(url, content=update, headers=headers)
                    break
                except httpx.TransportError:
                    await trio.lowlevel.checkpoint()  # killed: the gate opens after the restart
            assert response.status_code in (200, 204), response.text
            self.acked, self.in_flight = self.in_flight, None
            self.acks += 1
            seq += 1
            self.progress.set()
            self.progress = trio.Event()

    async def until_acked(self, count: int) -> None:
        while self.acks < count:
            await self.progress.wait()


async def read_updates(client: httpx.AsyncClient, url: str, offset: str) -> bytes:
    data = b""
    while True:
        response = await client.get(url, params={"offset": offset})
        assert response.status_code == 200, response.text
        data += response.content
        offset = response.headers["Stream-Next-Offset"]
        if response.headers.get("Stream-Up-To-Date") == "true":
            return data


async def check(client: httpx.AsyncClient, url: str, editor: Editor) -> bool:
    """The document after a restart; True if discovery led to a snapshot."""
    expected = {editor.acked, editor.in_flight}
    discovery = await client.get(url, params={"offset": "snapshot"})
    assert discovery.status_code == 307, discovery.text
    offset = discovery.headers["Location"].rpartition("offset=")[2]
    snapshot = b""
    if offset.endswith("_snapshot"):
        response = await client.get(url, params={"offset": offset})
        assert response.status_code == 200, response.text  # the snapshot it leads to is there
        snapshot, offset = response.content, response.headers["Stream-Next-Offset"]
    loaded = text_of(snapshot, await read_updates(client, url, offset))
    assert loaded in expected, (len(loaded), editor.acks)
    everything = await read_updates(client, url, "-1")
    assert text_of(b"", everything) == loaded
    assert all(unframe(everything))
    return bool(snapshot)


async def test_yjs_compaction_survives_repeated_sigkill(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DS_YJS__COMPACTION_THRESHOLD_BYTES", "2048")
    monkeypatch.setenv("DS_YJS__SNAPSHOT_KEEP_SECS", "0.01")  # removals race the kills too
    server = Server(tmp_path / "data", free_port())
    server.data_dir.mkdir()
    rng = random.Random(13)
    editor = Editor()
    found = 0  # restarts whose discovery led to a snapshot
    async with httpx.AsyncClient(timeout=30) as client:
        await server.start(client)
        url = f"http://127.0.0.1:{server.port}/v1/yjs/kill/docs/doc"
        assert (await client.put(url)).status_code == 201
        editor.gate.set()
        stop = trio.Event()
        with trio.fail_after(120):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(editor.run, client, url, stop)
                for _ in range(KILLS):
                    # Some acknowledgements, then a kill 0-3 ms later: a compaction (a few ms
                    # here) may be merging or writing, and the next append is on its way.
                    await editor.until_acked(editor.acks + rng.randint(4, 20))
                    await trio.sleep(rng.uniform(0, 0.003))
                    editor.gate = trio.Event()
                    await server.kill()
                    await server.start(client)
                    found += await check(client, url, editor)
                    editor.gate.set()
                stop.set()
        assert editor.in_flight is None
        assert await check(client, url, editor)
        await server.kill()
    assert found >= KILLS // 2
