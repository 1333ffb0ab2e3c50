"""SIGKILL the real server (file-durable) again and again while subscriptions have wakes in
flight: webhook deliveries answered `{"done": true}` by a loopback receiver, and two pull-wake
workers racing to claim, ack and release.

Nothing may be lost: once the writers stop, both subscriptions acknowledge every stream up
to its tail. Nothing may go to a fenced worker: a wake generation is one wake (one `wake_id`,
however often it is redelivered), at most one worker ever holds a generation's lease, and
acks that succeed come in increasing generations.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import attrs
import httpx
import trio

from tests.server import free_port
from tests.test_kill import Server, send

KILLS = 6
STREAMS = ("events/0", "events/1", "events/2")
WORKERS = ("w1", "w2")
DONE = b'{"done": true}'
RELEASES = random.Random(7)  # which claims a worker releases instead of acking


@attrs.define
class Seen:
    deliveries: list[tuple[int, str]] = attrs.field(factory=list)  # (generation, wake_id)
    claims: dict[int, set[str]] = attrs.field(factory=dict)  # generation -> workers given it
    acked: list[int] = attrs.field(factory=list)  # generations whose done-ack succeeded


async def receiver(listener: trio.SocketListener, seen: Seen) -> None:
    """A minimal HTTP/1.1 webhook receiver: every delivery is answered done."""

    async def handle(stream: trio.SocketStream) -> None:
        async with stream:
            raw = b""
            while b"\r\n\r\n" not in raw:
                chunk = await stream.receive_some()
                if not chunk:
                    return
                raw += chunk
            head, _, body = raw.partition(b"\r\n\r\n")
            length = next(
                int(line.split(b":")[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            while len(body) < length:
                chunk = await stream.receive_some()
                if not chunk:
                    return
                body += chunk
            wake = json.loads(body)
            seen.deliveries.append((wake["generation"], wake["wake_id"]))
            await stream.send_all(
                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {len(DONE)}\r\nConnection: close\r\n\r\n".encode()
                + DONE
            )

    await trio.serve_listeners(handle, [listener])


async def writer(server: Server, client: httpx.AsyncClient, path: str, stop: trio.Event) -> None:
    seq = 0
    while not stop.is_set():
        headers = {
            "Content-Type": "application/json",
            "Producer-Id": "p",
            "Producer-Epoch": "0",
            "Producer-Seq": str(seq),
        }
        response = await send(server, client, "POST", path, json={"seq": seq}, headers=headers)
        assert response.status_code in (200, 204), response.text
        seq += 1
        await trio.sleep(0.01)  # a steady trickle of appends, not a flood


async def worker(
    server: Server, client: httpx.AsyncClient, name: str, seen: Seen, stop: trio.Event
) -> None:
    sub = "__ds/subscriptions/pull/"
    while not stop.is_set():
        claim = await send(server, client, "POST", sub + "claim", json={"worker": name})
        if claim.status_code != 200:
            assert claim.status_code == 409, claim.text
            await trio.sleep(0.05)  # no work, or another holds it: ask again soon
            continue
        wake = claim.json()
        seen.claims.setdefault(wake["generation"], set()).add(name)
        acks = [{"stream": s["path"], "offset": s["tail_offset"]} for s in wake["streams"]]
        body = {"wake_id": wake["wake_id"], "generation": wake["generation"]}
        auth = {"Authorization": "Bearer " + wake["token"]}
        if RELEASES.random() < 0.2:
            response = await send(server, client, "POST", sub + "release", json=body, headers=auth)
            assert response.status_code in (204, 409), response.text
            continue
        done = {**body, "acks": acks, "done": True}
        response = await send(server, client, "POST", sub + "ack", json=done, headers=auth)
        if response.status_code == 200:
            seen.acked.append(wake["generation"])
        else:  # fenced: its lease ran out meanwhile, or a retry of an ack that was applied
            assert response.status_code in (409, 401), response.text


async def settled(server: Server, client: httpx.AsyncClient, id: str) -> bool:
    got = await send(server, client, "GET", f"__ds/subscriptions/{id}")
    acked = {s["path"]: s["acked_offset"] for s in got.json()["streams"]}
    for path in STREAMS:
        head = await send(server, client, "HEAD", path)
        if acked.get(path) != head.headers["Stream-Next-Offset"]:
            return False
    return True


async def test_wakes_survive_repeated_sigkill(tmp_path: Path) -> None:
    server = Server(tmp_path / "data", free_port())
    server.data_dir.mkdir()
    rng = random.Random(15)
    seen = Seen()
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]
    async with httpx.AsyncClient(timeout=30) as client, trio.open_nursery() as nursery:
        nursery.start_soon(receiver, listener, seen)
        await server.start(client)
        json_stream = {"Content-Type": "application/json"}
        for path in ("wake", *STREAMS):
            assert (await send(server, client, "PUT", path, headers=json_stream)).status_code == 201
        hooks = {
            "type": "webhook",
            "pattern": "events/*",
            "lease_ttl_ms": 1000,
            "webhook": {"url": f"http://127.0.0.1:{port}/hook"},
        }
        pull = {
            "type": "pull-wake",
            "pattern": "events/*",
            "wake_stream": "wake",
            "lease_ttl_ms": 1000,
        }
        for id, config in (("hooks", hooks), ("pull", pull)):
            response = await send(server, client, "PUT", f"__ds/subscriptions/{id}", json=config)
            assert response.status_code == 201, response.text
        stop = trio.Event()
        async with trio.open_nursery() as work:
            for path in STREAMS:
                work.start_soon(writer, server, client, path, stop)
            for name in WORKERS:
                work.start_soon(worker, server, client, name, seen, stop)
            for _ in range(KILLS):
                await trio.sleep(rng.uniform(0.3, 1.0))  # let wakes get under way, then kill
                await server.kill()
                await server.start(client)
            await trio.sleep(0.5)
            stop.set()
        finish = trio.Event()  # the writers stopped: one worker lets the pulls catch up
        async with trio.open_nursery() as tail:
            tail.start_soon(worker, server, client, "w1", seen, finish)
            with trio.fail_after(60):
                while not (
                    await settled(server, client, "hooks") and await settled(server, client, "pull")
                ):
                    await trio.sleep(0.1)  # deliveries and leases finish on the server's time
            finish.set()
        await server.kill()
        nursery.cancel_scope.cancel()
    generations = [g for g, _ in seen.deliveries]
    assert len(generations) >= KILLS  # wakes were delivered before, between and after kills
    wake_ids: dict[int, set[str]] = {}
    for generation, wake_id in seen.deliveries:
        wake_ids.setdefault(generation, set()).add(wake_id)
    assert all(len(ids) == 1 for ids in wake_ids.values())  # a generation is one wake
    assert len({i for ids in wake_ids.values() for i in ids}) == len(wake_ids)
    assert all(len(workers) == 1 for workers in seen.claims.values())  # exclusive leases
    assert seen.acked == sorted(seen.acked) and len(set(seen.acked)) == len(seen.acked)
    assert seen.acked  # the pull workers did finish wakes
