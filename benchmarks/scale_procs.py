"""Processes of the scale benchmark: the CPU each used (from /proc, as `ps` would), and the
HAProxy in front of several server processes (the config docs/deployment.md shows, on
loopback ports)."""

from __future__ import annotations

import contextlib
import os
import resource
import shutil
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from benchmarks.client import request
from benchmarks.servers import process_tree

TICK = os.sysconf("SC_CLK_TCK")
# Long-polls wait up to 20 s and SSE responses last up to 60 s (with a comment at least every
# 15 s): the balancer's idle timeouts are longer than both (docs/deployment.md).
TIMEOUTS = (
    "connect 5s",
    "client 120s",
    "server 120s",
    "http-request 10s",
    "http-keep-alive 60s",
    "queue 10s",
)


def stat_seconds(stat: str, tick: int = TICK) -> float:
    """CPU seconds in a /proc/<pid>/stat line: the process's user and system time and its
    children's that it waited for (a backend that exited, a worker replaced)."""
    fields = stat[stat.rindex(")") + 2 :].split()  # fields from the 3rd (state) on
    return sum(int(value) for value in fields[11:15]) / tick  # utime stime cutime cstime


def tree_seconds(pid: int) -> float:
    """CPU seconds of a process and every descendant (those alive, and those reaped)."""
    total = 0.0
    for member in process_tree(pid):
        with contextlib.suppress(OSError, ValueError):
            total += stat_seconds(Path(f"/proc/{member}/stat").read_text())
    return total


def own_seconds(pid: int, skip: Sequence[int]) -> float:
    """A process tree's CPU seconds without the subtrees rooted at `skip`."""
    return tree_seconds(pid) - sum(tree_seconds(child) for child in skip)


def sample(roles: Mapping[str, Sequence[int]]) -> dict[str, float]:
    """CPU seconds so far of each role's processes (each with its descendants; a hypercorn
    master's own excludes its workers, which are roles of their own)."""
    workers = [pid for name, pids in roles.items() if name.startswith("worker") for pid in pids]
    seconds = {}
    for name, pids in roles.items():
        if name == "hypercorn master":
            seconds[name] = sum(own_seconds(pid, workers) for pid in pids)
        else:
            seconds[name] = sum(tree_seconds(pid) for pid in pids)
    return seconds


def delta(before: Mapping[str, float], after: Mapping[str, float]) -> dict[str, float]:
    return {name: after[name] - before.get(name, 0.0) for name in after}


def children_seconds() -> float:
    """CPU seconds of this process's children that exited (wrk, pgbench) so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def workers_of(pid: int) -> list[int]:
    """A hypercorn master's worker processes (multiprocessing's `spawn_main` children; not
    its resource tracker)."""
    found = []
    for child in process_tree(pid)[1:]:
        with contextlib.suppress(OSError):
            command = Path(f"/proc/{child}/cmdline").read_bytes()
            parent = Path(f"/proc/{child}/stat").read_text().split(")")[-1].split()[1]
            if b"spawn_main" in command and int(parent) == pid:
                found.append(child)
    return sorted(found)


def haproxy_config(port: int, backends: Sequence[int], balance: str = "roundrobin") -> str:
    """docs/deployment.md's configuration on loopback: round-robin per request (or `uri`:
    each stream to one server, consistently), servers taken out while /readyz is not 200;
    `X-Backend` names the server that answered."""
    timeouts = "".join(f"    timeout {timeout}\n" for timeout in TIMEOUTS)
    servers = "".join(
        f"    server s{index} 127.0.0.1:{backend}\n" for index, backend in enumerate(backends)
    )
    return (
        "global\n    maxconn 4096\n"
        f"defaults\n    mode http\n{timeouts}"
        f"frontend streams\n    bind 127.0.0.1:{port}\n    default_backend servers\n"
        f"backend servers\n    balance {balance}\n"
        + ("    hash-type consistent\n" if balance == "uri" else "")
        + "    option httpchk\n    http-check send meth GET uri /readyz\n"
        "    http-check expect status 200\n"
        "    default-server check inter 2s fall 2 rise 2\n"
        "    http-response set-header X-Backend %s\n"
        f"{servers}"
    )


def haproxy_binary() -> str:
    found = shutil.which("haproxy", path=f"{os.environ.get('PATH', '')}:/usr/sbin")
    if found is None:
        raise RuntimeError("HAProxy is not installed (apt-get install haproxy)")
    return found


def wait_backends(port: int, count: int, process: subprocess.Popen[bytes]) -> None:
    """Until /readyz through the balancer has been answered by `count` different servers
    (at most 30 s): every server is up and in turn."""
    seen: set[str] = set()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"haproxy exited with status {process.returncode}")
        with contextlib.suppress(OSError):
            answer = request(port, "GET", "/readyz")
            if answer.status == 200:
                seen.add(answer.headers.get("x-backend", ""))
                if len(seen) >= count:
                    return
        time.sleep(0.05)  # polling a subprocess's port
    raise RuntimeError(f"haproxy: {len(seen)} of {count} servers answered /readyz")
