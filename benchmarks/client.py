"""A tiny HTTP/1.1 client for loopback: an incremental response parser, blocking one-off
requests, and Trio connections for seeding streams concurrently.

No Accept-Encoding is sent, so no server compresses; keep-alive is the default.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field

import trio


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes = b""


@dataclass
class ResponseParser:
    """Feed bytes, get whole responses. Handles Content-Length, chunked and bodiless answers.

    `head_only` marks responses to HEAD (no body whatever the headers say).
    """

    buffer: bytearray = field(default_factory=bytearray)
    head_only: bool = False
    _head: Response | None = None
    _chunks: list[bytes] = field(default_factory=list)

    def feed(self, data: bytes) -> list[Response]:
        self.buffer += data
        done: list[Response] = []
        while True:
            response = self._step()
            if response is None:
                return done
            done.append(response)

    def _step(self) -> Response | None:
        if self._head is None:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return None
            lines = bytes(self.buffer[:end]).decode("latin-1").split("\r\n")
            del self.buffer[: end + 4]
            status = int(lines[0].split(" ", 2)[1])
            headers: dict[str, str] = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            self._head = Response(status, headers)
            self._chunks = []
            if status in (204, 304) or 100 <= status < 200 or self.head_only:
                return self._finish()
        head = self._head
        if head.headers.get("transfer-encoding", "").lower() == "chunked":
            while True:
                line_end = self.buffer.find(b"\r\n")
                if line_end < 0:
                    return None
                size = int(bytes(self.buffer[:line_end]).split(b";")[0], 16)
                if len(self.buffer) < line_end + 2 + size + 2:
                    return None
                if size == 0:
                    del self.buffer[: line_end + 4]
                    return self._finish()
                start = line_end + 2
                self._chunks.append(bytes(self.buffer[start : start + size]))
                del self.buffer[: start + size + 2]
        length = int(head.headers.get("content-length", "0"))
        if len(self.buffer) < length:
            return None
        self._chunks = [bytes(self.buffer[:length])]
        del self.buffer[:length]
        return self._finish()

    def _finish(self) -> Response:
        assert self._head is not None
        response, self._head = self._head, None
        response.body = b"".join(self._chunks)
        self._chunks = []
        return response


def encode_request(
    method: str, path: str, headers: dict[str, str] | None = None, body: bytes = b""
) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    if body or method in ("POST", "PUT"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def request(
    port: int,
    method: str,
    path: str,
    headers: dict[str, str] | None = None,
    body: bytes = b"",
    timeout: float = 30.0,
) -> Response:
    """One request on a fresh blocking connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(encode_request(method, path, headers, body))
        parser = ResponseParser(head_only=method == "HEAD")
        while True:
            data = sock.recv(1 << 20)
            if not data:
                raise ConnectionError(f"{method} {path}: connection closed before the answer")
            done = parser.feed(data)
            if done:
                return done[0]


def read_all(port: int, path: str) -> tuple[bytes, int]:
    """Reads a stream from the start until Stream-Up-To-Date; returns (bytes, responses)."""
    offset, chunks, count = "-1", [], 0
    while True:
        response = request(port, "GET", f"{path}?offset={offset}")
        count += 1
        if response.status != 200:
            raise RuntimeError(f"GET {path} answered {response.status}")
        chunks.append(response.body)
        if response.headers.get("stream-up-to-date") == "true":
            return b"".join(chunks), count
        offset = response.headers["stream-next-offset"]


class Connection:
    """A blocking keep-alive connection for sequential requests; counts the bytes it
    received (headers included), for scenarios that report bytes on the wire."""

    def __init__(self, port: int, timeout: float = 60.0) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.parser = ResponseParser()
        self.received = 0

    def request(
        self, method: str, path: str, headers: dict[str, str] | None = None, body: bytes = b""
    ) -> Response:
        self.parser.head_only = method == "HEAD"
        self.sock.sendall(encode_request(method, path, headers, body))
        while True:
            data = self.sock.recv(1 << 20)
            if not data:
                raise ConnectionError(f"{method} {path}: connection closed before the answer")
            self.received += len(data)
            done = self.parser.feed(data)
            if done:
                return done[0]

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class TrioConnection:
    """A keep-alive connection for sequential requests inside Trio."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.parser = ResponseParser()

    @classmethod
    async def open(cls, port: int) -> TrioConnection:
        return cls(await trio.open_tcp_stream("127.0.0.1", port))

    async def request(
        self, method: str, path: str, headers: dict[str, str] | None = None, body: bytes = b""
    ) -> Response:
        self.parser.head_only = method == "HEAD"
        await self.stream.send_all(encode_request(method, path, headers, body))
        while True:
            data = await self.stream.receive_some(1 << 20)
            if not data:
                raise ConnectionError(f"{method} {path}: connection closed before the answer")
            done = self.parser.feed(data)
            if done:
                return done[0]

    async def aclose(self) -> None:
        await self.stream.aclose()


async def _append_many(
    port: int, path: str, bodies: list[bytes], content_type: str, connections: int
) -> dict[str, int]:
    statuses: dict[str, int] = {}
    queue = iter(bodies)

    async def worker() -> None:
        connection = await TrioConnection.open(port)
        try:
            for body in queue:
                response = await connection.request(
                    "POST", path, {"Content-Type": content_type}, body
                )
                key = str(response.status)
                statuses[key] = statuses.get(key, 0) + 1
        finally:
            await connection.aclose()

    async with trio.open_nursery() as nursery:
        for _ in range(connections):
            nursery.start_soon(worker)
    return statuses


def append_many(
    port: int, path: str, bodies: list[bytes], content_type: str, connections: int = 16
) -> dict[str, int]:
    """POSTs every body (order across connections not kept); returns counts by status."""
    return trio.run(_append_many, port, path, bodies, content_type, connections)
