"""RSS of the server with readers that never read (issue 9, point 2). Standalone, stdlib only.

    .venv/bin/python benchmarks/stalled_readers.py [--readers 200] [--record-mib 8]
        [--mode sse|catch-up] [--content-type application/octet-stream] [--source DIR]

Starts the server under hypercorn (trio worker, so that `--source` may be an older checkout;
file-durable storage in a temp directory) on 127.0.0.1, writes one record of `--record-mib`
MiB to a stream (for JSON, one array of small messages), restarts the server and opens the
stream, notes the idle RSS, then opens `--readers` sockets that each send one read request and
never read. Their
receive buffers are set small, so the server cannot park the record in the kernel on their
behalf and must hold whatever it holds itself. RSS is sampled until it stops growing (bounded
by `--settle-secs`) and its peak is reported, with the increase per reader. The send timeout is
raised for the measurement (the point is what a stalled reader holds while it lasts) and then
the server's health is checked. `--source` runs the server from another checkout (e.g. the code
before the change); `--max-rss-mib` stops early if the server grows past it.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def request(url: str, method: str = "GET", body: bytes | None = None, ctype: str = "") -> int:
    headers = {"Content-Type": ctype} if ctype else {}
    req = urllib.request.Request(url, data=body, method=method, headers=headers)
    with urllib.request.urlopen(req, timeout=60) as response:
        response.read()
        return int(response.status)


def wait_ready(base: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("server exited")
        try:
            if request(f"{base}/readyz") == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError("server not ready")


def stalled_reader(port: int, path: str) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: small window
    sock.connect(("127.0.0.1", port))
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
    return sock


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--readers", type=int, default=200)
    parser.add_argument("--record-mib", type=float, default=8)
    parser.add_argument("--mode", choices=("sse", "catch-up"), default="sse")
    parser.add_argument("--content-type", default="application/octet-stream")
    parser.add_argument("--source", type=Path, default=ROOT, help="checkout to run the server from")
    parser.add_argument("--settle-secs", type=float, default=20)
    parser.add_argument("--max-rss-mib", type=int, default=12_000)
    args = parser.parse_args()

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    url = f"{base}/v1/stream/big"
    with tempfile.TemporaryDirectory() as data_dir:
        env = {
            **os.environ,
            "PYTHONPATH": str(args.source.resolve()),
            "DS_STORAGE__DATA_DIR": data_dir,
            "DS_SERVER__SEND_TIMEOUT_SECS": "3600",
            "DS_LIMITS__MAX_APPEND_BYTES": str(int(args.record_mib * 2**20) + 1024),
        }
        command = [
            sys.executable, "-m", "hypercorn", "streams.app:app", "--worker-class", "trio",
            "--workers", "0", "--bind", f"127.0.0.1:{port}",
        ]  # fmt: skip

        def start() -> subprocess.Popen[bytes]:
            process = subprocess.Popen(
                command,
                cwd=args.source,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            wait_ready(base, process)
            return process

        def stop(process: subprocess.Popen[bytes]) -> None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

        # Write the record, then restart: the idle RSS is not inflated by what the append
        # left behind (freed memory the readers would quietly reuse).
        process = start()
        try:
            request(url, "PUT", b"", args.content_type)
            unit = (
                b'"abcdefghijklmnopqrstuvwxyz0123456789"' if "json" in args.content_type else None
            )
            size = int(args.record_mib * 2**20)
            if unit is not None:  # one record of one JSON array of many small messages
                record = b"[" + b",".join([unit] * (size // (len(unit) + 1))) + b"]"
            else:
                record = bytes(range(256)) * (size // 256)
            request(url, "POST", record, args.content_type)
            del record
        finally:
            stop(process)

        process = start()
        readers: list[socket.socket] = []
        try:
            request(url, "HEAD")  # the stream's actor opens its log
            time.sleep(1)
            idle = rss_kib(process.pid)
            query = "offset=-1&live=sse" if args.mode == "sse" else "offset=-1"
            for _ in range(args.readers):
                readers.append(stalled_reader(port, f"/v1/stream/big?{query}"))
            peak, last_growth = idle, time.monotonic()
            deadline = time.monotonic() + args.settle_secs
            while time.monotonic() < deadline and time.monotonic() - last_growth < 5:
                now = rss_kib(process.pid)
                if now > peak + 1024:
                    last_growth = time.monotonic()
                peak = max(peak, now)
                if peak > args.max_rss_mib * 1024:
                    print(f"stopped early: RSS passed {args.max_rss_mib} MiB", file=sys.stderr)
                    break
                time.sleep(0.2)
            for sock in readers:
                sock.close()
            readers.clear()
            healthy = request(f"{base}/healthz") == 200 and request(f"{url}?offset=now") == 200
            result = {
                "source": str(args.source),
                "mode": args.mode,
                "content_type": args.content_type,
                "readers": args.readers,
                "record_mib": args.record_mib,
                "idle_rss_mib": round(idle / 1024, 1),
                "peak_rss_mib": round(peak / 1024, 1),
                "above_idle_mib": round((peak - idle) / 1024, 1),
                "per_reader_kib": round((peak - idle) / max(args.readers, 1)),
                "healthy_after": healthy,
            }
            print(json.dumps(result))
        finally:
            for sock in readers:
                sock.close()
            stop(process)


if __name__ == "__main__":
    main()
