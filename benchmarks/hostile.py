"""The hostile-client scenarios of issue 9, for this server only (the Node server and the raw
ASGI app have no such limits to measure): `/healthz` latency while a 16 MB JSON body of 8M
messages is appended, RSS with stalled SSE readers on a large record, and the cost of
reopening a log of 1M small records. Every loop is bounded in count and time; 127.0.0.1 only.
"""

from __future__ import annotations

import fcntl
import math
import socket
import termios
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import trio

from actors.registry import Registry
from actors.service import Streams
from actors.storage.files import FileStorage
from benchmarks import client
from benchmarks.scenarios import Plan
from benchmarks.servers import Server
from streams.protocol.machine import AppendRequest, CreateRequest
from streams.protocol.records import StreamConfig

MB = 1_000_000
OCTETS = "application/octet-stream"
T = TypeVar("T")


def _rank(ordered: list[float], q: float) -> float:
    """The q-quantile (nearest rank) of sorted seconds, in ms."""
    if not ordered:
        return math.nan
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)] * 1000


def latency_summary(seconds: list[float], interval: float) -> dict[str, Any]:
    """count, p50 / p99 / max in ms; and the p99 a probe sent every `interval` would have
    seen: one at a time, a probe stalled for 10 s is one sample where a fixed-rate checker
    would have had 10 s / interval of them (coordinated omission, corrected as HdrHistogram
    does: a sample L also counts L - interval, L - 2 interval, ... down to interval)."""
    ordered = sorted(seconds)
    corrected = list(seconds)
    for latency in seconds:
        steps = int(latency / interval + 1e-9)
        corrected.extend(latency - k * interval for k in range(1, steps))
    corrected.sort()
    return {
        "count": len(ordered),
        "p50_ms": _rank(ordered, 0.5),
        "p99_ms": _rank(ordered, 0.99),
        "max_ms": _rank(ordered, 1.0),
        "fixed_rate_p99_ms": _rank(corrected, 0.99),
        "fixed_rate_count": len(corrected),
    }


async def _probe(
    port: int, plan: Plan, stop: trio.Event, latencies: list[float], statuses: dict[str, int]
) -> None:
    """GET /healthz on its own keep-alive connection, one at a time, `probe_interval` apart,
    until `stop` (a probe in flight is waited for: a stalled one is the point)."""
    connection = await client.TrioConnection.open(port)
    try:
        while not stop.is_set() and len(latencies) < plan.probe_limit:
            began = time.perf_counter()
            response = await connection.request("GET", "/healthz")
            latencies.append(time.perf_counter() - began)
            statuses[str(response.status)] = statuses.get(str(response.status), 0) + 1
            with trio.move_on_after(plan.probe_interval):
                await stop.wait()
    finally:
        await connection.aclose()


async def _probed(port: int, plan: Plan, action: Callable[[], Awaitable[T]]) -> tuple[T, Any]:
    """Runs `action` while probing /healthz, and `probe_tail` seconds after it; returns its
    result and the probes' summary (with `bad`: answers other than 200)."""
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    stop = trio.Event()
    box: list[T] = []
    with trio.fail_after(plan.hostile_bound):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_probe, port, plan, stop, latencies, statuses)
            box.append(await action())
            await trio.sleep(plan.probe_tail)
            stop.set()
    summary = latency_summary(latencies, plan.probe_interval)
    summary.update(statuses=statuses, bad=sum(n for s, n in statuses.items() if s != "200"))
    return box[0], summary


def _create(server: Server, name: str, content_type: str) -> str:
    path = f"/v1/stream/{name}"
    response = client.request(server.port, "PUT", path, {"Content-Type": content_type})
    if response.status not in (200, 201):
        raise RuntimeError(f"PUT {path} answered {response.status}: {response.body[:200]!r}")
    return path


def _peak(server: Server, reset: bool) -> dict[str, Any]:
    return {"rss_peak": server.peak_rss(), "peak_since": "scenario" if reset else "start"}


# ---- 1. a 16 MB JSON body of 8M messages ---------------------------------------------------


def json_flood(server: Server, plan: Plan) -> dict[str, Any]:
    """One POST of `[1,1,...]` (2 B per message) to an application/json stream, while another
    connection probes /healthz; the POST's time and status, RSS before and at peak."""
    path = _create(server, "bench-hostile-json", "application/json")
    body = b"[" + b"1," * (plan.flood_messages - 1) + b"1]"
    time.sleep(0.5)
    rss_before = server.rss()
    reset = server.reset_peak()

    async def post() -> tuple[int, float]:
        connection = await client.TrioConnection.open(server.port)
        try:
            began = time.perf_counter()
            response = await connection.request(
                "POST", path, {"Content-Type": "application/json"}, body
            )
            return response.status, time.perf_counter() - began
        finally:
            await connection.aclose()

    (status, seconds), healthz = trio.run(_probed, server.port, plan, post)
    return {
        "json-flood": {
            "messages": plan.flood_messages,
            "body_bytes": len(body),
            "post_status": status,
            "post_seconds": seconds,
            "healthz": healthz,
            "bad": healthz["bad"],
            "rss_before": rss_before,
            **_peak(server, reset),
            "rss_after": server.rss(),
        }
    }


# ---- 2. stalled SSE readers on one large record --------------------------------------------


def _settle(server: Server, bound: float, cap: int) -> tuple[list[int], bool]:
    """RSS samples 1 s apart until two differ by less than 1 MB (True), or `bound` seconds
    have passed or RSS is over `cap` (False): this VM is shared and has no swap."""
    samples = [server.rss()]
    deadline = time.perf_counter() + bound
    while time.perf_counter() < deadline and samples[-1] <= cap:
        time.sleep(1.0)
        samples.append(server.rss())
        if len(samples) >= 3 and abs(samples[-1] - samples[-2]) < MB:
            return samples, True
    return samples, False


def _queued(sock: socket.socket) -> tuple[bool, int]:
    """Whether any answer reached this socket, and how many bytes wait unread in it."""
    buffer = bytearray(4)
    fcntl.ioctl(sock.fileno(), termios.FIONREAD, buffer)
    waiting = int.from_bytes(buffer, "little")
    return waiting > 0, waiting


def stalled_sse(server: Server, plan: Plan) -> dict[str, Any]:
    """N raw sockets each send an SSE GET from offset -1 of a stream holding one 8 MiB record,
    then never read. RSS at rest before, once settled with the readers, and the peak."""
    path = _create(server, "bench-hostile-sse", OCTETS)
    record = bytes(range(256)) * (plan.stalled_record_mib * (1 << 20) // 256)
    appended = client.request(server.port, "POST", path, {"Content-Type": OCTETS}, record)
    idle_samples, _ = _settle(server, plan.settle_bound, plan.rss_cap)
    rss_idle = idle_samples[-1]
    reset = server.reset_peak()
    request = client.encode_request("GET", f"{path}?offset=-1&live=sse")
    readers: list[socket.socket] = []
    try:
        began = time.perf_counter()
        for _ in range(plan.stalled_readers):
            sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
            readers.append(sock)
            sock.sendall(request)
        opened = time.perf_counter() - began
        samples, settled = _settle(server, plan.settle_bound, plan.rss_cap)
        rss_readers = samples[-1]
        settle_seconds = time.perf_counter() - began
        began = time.perf_counter()
        healthz = client.request(server.port, "GET", "/healthz", timeout=60)
        healthz_ms = (time.perf_counter() - began) * 1000
        queued = [_queued(sock) for sock in readers]
    finally:
        for sock in readers:
            sock.close()
    time.sleep(2.0)
    peak = _peak(server, reset)  # work for readers already gone counts too
    return {
        "stalled-sse": {
            "readers": len(readers),
            "record_bytes": len(record),
            "append_status": appended.status,
            "rss_idle": rss_idle,
            "rss_readers": rss_readers,
            "rss_above_idle": rss_readers - rss_idle,
            **peak,
            "rss_after_close": server.rss(),
            "idle_samples": idle_samples,
            "samples": samples,
            "open_seconds": opened,
            "settle_seconds": settle_seconds,
            "settled": settled,
            "rss_cap": plan.rss_cap,
            "answered": sum(answered for answered, _ in queued),
            "queued_bytes": sum(waiting for _, waiting in queued),
            "healthz_status": healthz.status,
            "healthz_ms": healthz_ms,
        }
    }


# ---- 3. reopening a log of 1M one-byte records ---------------------------------------------

REOPEN_STREAM = "bench-hostile-reopen"


async def _build(root: Path, count: int, workers: int = 512) -> None:
    """Appends through the actor in-process (group commits of up to 256 records), so the log
    is exactly what the server writes, whatever its format: over HTTP this takes minutes."""
    storage = FileStorage(root, durable=False)
    try:
        registry = Registry(storage, idle_timeout=3600.0)
        streams = Streams(registry)
        async with trio.open_nursery() as nursery:
            await nursery.start(registry.run)
            await streams.create(REOPEN_STREAM, CreateRequest(StreamConfig(OCTETS)))
            left = count
            request = AppendRequest(OCTETS, b"x")

            async def worker() -> None:
                nonlocal left
                while left > 0:
                    left -= 1
                    reply = await streams.append(REOPEN_STREAM, request)
                    if reply.status != 204:
                        raise RuntimeError(f"building the log: append answered {reply.status}")

            async with trio.open_nursery() as load:
                for _ in range(min(workers, count)):
                    load.start_soon(worker)
            nursery.cancel_scope.cancel()
    finally:
        storage.close()


def build_log(server: Server, plan: Plan) -> dict[str, Any]:
    """Before the server starts: its data dir gets one stream of N one-byte appends."""
    began = time.perf_counter()
    trio.run(_build, server.data_dir, plan.reopen_records)
    seconds = time.perf_counter() - began
    size = sum(p.stat().st_size for p in (server.data_dir / "streams").glob("*/*"))
    return {"records": plan.reopen_records, "build_seconds": seconds, "log_bytes": size}


IDLE_WAIT = 12.0  # past the server's default idle timeout (10 s)


def reopen(server: Server, plan: Plan, built: dict[str, Any]) -> dict[str, Any]:
    """The first request after start (HEAD) makes the actor open and replay the log: its time,
    /healthz meanwhile on another connection, RSS before and at peak; then a read at the tail
    checks that every record came back, a second HEAD shows the cost once resident, and a
    third, once the actor has stopped idle, the reopen from its checkpoint."""
    path = f"/v1/stream/{REOPEN_STREAM}"
    time.sleep(0.5)
    rss_before = server.rss()
    reset = server.reset_peak()

    async def head() -> tuple[client.Response, float]:
        connection = await client.TrioConnection.open(server.port)
        try:
            began = time.perf_counter()
            response = await connection.request("HEAD", path)
            return response, time.perf_counter() - began
        finally:
            await connection.aclose()

    (response, seconds), healthz = trio.run(_probed, server.port, plan, head)
    peak = _peak(server, reset)
    tail = response.headers.get("stream-next-offset", "")
    position = int(tail.rpartition("_")[2]) if tail else None
    began = time.perf_counter()
    again = client.request(server.port, "HEAD", path)
    warm_ms = (time.perf_counter() - began) * 1000
    at_tail = client.request(server.port, "GET", f"{path}?offset={tail}") if tail else None
    time.sleep(IDLE_WAIT)  # the actor stops idle, checkpointing its state as it goes
    began = time.perf_counter()
    from_checkpoint = client.request(server.port, "HEAD", path)
    checkpoint_ms = (time.perf_counter() - began) * 1000
    return {
        "reopen": {
            **built,
            "head_status": response.status,
            "head_seconds": seconds,
            "tail_position": position,
            "missed": plan.reopen_records - (position or 0),
            "healthz": healthz,
            "bad": healthz["bad"],
            "rss_before": rss_before,
            **peak,
            "rss_after": server.rss(),
            "warm_head_ms": warm_ms,
            "warm_head_status": again.status,
            "checkpoint_head_ms": checkpoint_ms,
            "checkpoint_head_status": from_checkpoint.status,
            "tail_read_status": at_tail.status if at_tail else None,
            "tail_read_up_to_date": at_tail.headers.get("stream-up-to-date") if at_tail else None,
        }
    }
