"""Fan-out latency: K live readers (SSE or long-poll) on one stream, one writer.

One thread drives every socket with one epoll set, so a delivery is stamped with the time the
kernel reported it (one clock read per epoll wake-up), not after K reader tasks took turns.
Each round: t0 is taken just before the POST is written; a reader's delivery time is when
the first bytes of the answer carrying that round's marker arrived. Long-poll readers poll
again at once; before the next POST the writer waits `gap` seconds (long-poll: at least 1.5x
the round's slowest delivery) so all are parked again.
"""

from __future__ import annotations

import contextlib
import select
import socket
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

from benchmarks.client import ResponseParser, encode_request, request

MARK = b"#R%06d#"


@dataclass
class Reader:
    sock: socket.socket
    offset: str
    parser: ResponseParser = field(default_factory=ResponseParser)
    first_byte: float | None = None
    tail: bytes = b""
    delivered: dict[int, float] = field(default_factory=dict)
    headers_seen: bool = False
    closed: bool = False


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


class FanOut:
    def __init__(self, port: int, path: str, live: str, k: int, writer_port: int = 0) -> None:
        self.port, self.path, self.live, self.k = port, path, live, k
        self.epoll = select.epoll()
        self.readers: dict[int, Reader] = {}
        self.errors: dict[str, int] = {}
        self.current_round = -1
        self.writer = socket.create_connection(("127.0.0.1", writer_port or port))
        self.writer.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.writer_parser = ResponseParser()

    def error(self, what: str) -> None:
        self.errors[what] = self.errors.get(what, 0) + 1

    def _get(self, reader: Reader) -> None:
        query = f"?offset={reader.offset}&live={self.live}"
        reader.sock.sendall(encode_request("GET", self.path + query))
        reader.first_byte = None

    def connect(self, offset: str, batch: int = 50) -> None:
        for index in range(self.k):
            sock = socket.create_connection(("127.0.0.1", self.port), timeout=30)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            reader = Reader(sock, offset)
            self._get(reader)
            sock.setblocking(False)
            self.readers[sock.fileno()] = reader
            self.epoll.register(sock.fileno(), select.EPOLLIN)
            if index % batch == batch - 1:
                self.pump(time.perf_counter() + 0.01)

    def pump(self, until: float) -> None:
        """Serve reader sockets until the deadline."""
        while True:
            left = until - time.perf_counter()
            if left <= 0:
                return
            for fd, _ in self.epoll.poll(left, 8192):
                now = time.perf_counter()
                self._readable(self.readers[fd], now)

    def _readable(self, reader: Reader, now: float) -> None:
        try:
            data = reader.sock.recv(1 << 20)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if not data:
            self._close(reader, "reader connection closed by server")
            return
        if reader.first_byte is None:
            reader.first_byte = now
        if self.live == "sse":
            if not reader.headers_seen:
                if data.startswith(b"HTTP/1.1 200") or data.startswith(b"HTTP/1.0 200"):
                    reader.headers_seen = True
                else:
                    self.error(f"sse answer {data[:12]!r}")
                    self._close(reader, "sse refused")
                    return
            window = reader.tail + data
            start = 0
            while True:
                at = window.find(b"#R", start)
                if at < 0 or at + 9 > len(window):
                    break
                token = window[at : at + 9]
                if token.endswith(b"#") and token[2:8].isdigit():
                    reader.delivered.setdefault(int(token[2:8]), now)
                start = at + 2
            reader.tail = window[-8:]
            return
        for response in reader.parser.feed(data):
            stamp = reader.first_byte or now
            reader.first_byte = None
            if response.status == 200:
                at = response.body.find(b"#R")
                while at >= 0:
                    token = response.body[at : at + 9]
                    if token.endswith(b"#") and token[2:8].isdigit():
                        reader.delivered.setdefault(int(token[2:8]), stamp)
                    at = response.body.find(b"#R", at + 2)
            elif response.status != 204:
                self.error(f"long-poll status {response.status}")
            reader.offset = response.headers.get("stream-next-offset", reader.offset)
            try:
                self._get(reader)
            except OSError:
                self._close(reader, "reader send failed")
                return
        if reader.parser.buffer:
            reader.first_byte = now

    def _close(self, reader: Reader, why: str) -> None:
        if reader.closed:
            return
        reader.closed = True
        self.error(why)
        with contextlib.suppress(OSError, KeyError, ValueError):
            self.epoll.unregister(reader.sock.fileno())
        with contextlib.suppress(OSError):
            reader.sock.close()

    def wait_sse_open(self, timeout: float) -> None:
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            if all(r.headers_seen or r.closed for r in self.readers.values()):
                return
            self.pump(min(deadline, time.perf_counter() + 0.02))
        self.error("sse reader not answered before the first round")

    def post(self, number: int, size: int) -> tuple[float, float, int]:
        """Writes round `number`'s POST; serves readers until every open reader has it (or
        10 s); returns (t0, time of the POST's answer, its status)."""
        mark = MARK % number
        body = mark + b"x" * max(0, size - len(mark))
        message = encode_request("POST", self.path, {"Content-Type": "text/plain"}, body)
        self.writer.setblocking(True)
        t0 = time.perf_counter()
        self.writer.sendall(message)
        self.writer.setblocking(False)
        answered, status = float("nan"), 0
        deadline = t0 + 10
        waiting = [r for r in self.readers.values() if not r.closed]
        writer_fd = self.writer.fileno()
        self.epoll.register(writer_fd, select.EPOLLIN)
        try:
            while time.perf_counter() < deadline:
                waiting = [r for r in waiting if number not in r.delivered and not r.closed]
                if not waiting and status:
                    break
                for fd, _ in self.epoll.poll(max(0.0, deadline - time.perf_counter()), 8192):
                    now = time.perf_counter()
                    if fd == writer_fd:
                        with contextlib.suppress(BlockingIOError):
                            data = self.writer.recv(1 << 16)
                            if not data:
                                raise ConnectionError("writer connection closed by server")
                            for response in self.writer_parser.feed(data):
                                answered, status = now, response.status
                    else:
                        self._readable(self.readers[fd], now)
        finally:
            self.epoll.unregister(writer_fd)
        if status not in (200, 204):
            self.error(f"POST status {status or 'none'}")
        return t0, answered, status

    def close(self) -> None:
        for reader in self.readers.values():
            with contextlib.suppress(OSError):
                reader.sock.close()
        self.writer.close()
        self.epoll.close()


def run_fanout(
    port: int,
    name: str,
    live: str,
    k: int,
    rounds: int,
    warmup: int = 2,
    size: int = 100,
    writer_port: int = 0,
) -> dict[str, Any]:
    """Creates stream `name` (text/plain) and measures `rounds` rounds after `warmup`; the
    writer POSTs to `writer_port` if given (another server process), else to `port`."""
    path = f"/v1/stream/{name}"
    created = request(port, "PUT", path, {"Content-Type": "text/plain"})
    if created.status not in (200, 201):
        raise RuntimeError(f"PUT {path} answered {created.status}")
    tail = created.headers["stream-next-offset"]
    fan = FanOut(port, path, live, k, writer_port)
    gap = (0.3 if k <= 100 else 1.0) if live == "long-poll" else (0.05 if k <= 100 else 0.2)
    latencies: list[float] = []
    post_latencies: list[float] = []
    missed = 0
    began = time.perf_counter()
    try:
        fan.connect(tail)
        if live == "sse":
            fan.wait_sse_open(30)
        fan.pump(time.perf_counter() + max(gap, 0.5))
        for number in range(warmup + rounds):
            t0, answered, _ = fan.post(number, size)
            slowest = max(
                (r.delivered[number] - t0 for r in fan.readers.values() if number in r.delivered),
                default=0.0,
            )
            if number >= warmup:
                post_latencies.append((answered - t0) * 1000)
                for reader in fan.readers.values():
                    if number in reader.delivered:
                        latencies.append((reader.delivered[number] - t0) * 1000)
                    else:
                        missed += 1
            # long-poll: every reader polls again after its delivery; give the server at least
            # as long again as the round took to park them all before the next POST
            pause = max(gap, 1.5 * slowest) if live == "long-poll" else gap
            fan.pump(time.perf_counter() + pause)
    finally:
        fan.close()
    return {
        "k": k,
        "live": live,
        "rounds": rounds,
        "samples": len(latencies),
        "missed": missed,
        "p50_ms": percentile(latencies, 0.50),
        "p99_ms": percentile(latencies, 0.99),
        "max_ms": max(latencies) if latencies else float("nan"),
        "mean_ms": statistics.fmean(latencies) if latencies else float("nan"),
        # the writer's own latency (POST written -> its answer read) while the readers wait
        "post_p50_ms": percentile(post_latencies, 0.50),
        "post_p99_ms": percentile(post_latencies, 0.99),
        "post_max_ms": max(post_latencies) if post_latencies else float("nan"),
        "errors": fan.errors,
        "seconds": time.perf_counter() - began,
    }
