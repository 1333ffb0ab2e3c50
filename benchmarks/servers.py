"""Starts and stops the servers under test, each pinned to CPU 0, on 127.0.0.1 only."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "benchmarks"
SERVER_CPU = "0"


@dataclass(frozen=True)
class Spec:
    key: str
    label: str
    kind: str  # "trio" (this server), "node" (the reference server), "raw" (ASGI ceiling)
    mode: str = ""  # storage mode: file-durable / memory for trio, file / memory for node

    @property
    def on_disk(self) -> bool:
        return self.mode in ("file-durable", "file-fast", "file")


TRIO_DURABLE = Spec("trio-durable", "trio file-durable", "trio", "file-durable")
TRIO_MEMORY = Spec("trio-memory", "trio memory", "trio", "memory")
NODE_FILE = Spec("node-file", "Node file", "node", "file")
NODE_MEMORY = Spec("node-memory", "Node memory", "node", "memory")
RAW = Spec("raw", "raw ASGI (hypercorn trio)", "raw")
ALL = (TRIO_DURABLE, NODE_FILE, TRIO_MEMORY, NODE_MEMORY, RAW)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(OSError):
            found.extend(int(child) for child in task.read_text().split())
    return found


def process_tree(pid: int) -> list[int]:
    tree, queue = [], [pid]
    while queue:
        current = queue.pop()
        tree.append(current)
        queue.extend(_children(current))
    return tree


def rss_bytes(pid: int, field: str = "VmRSS") -> int:
    """A memory field of /proc/<pid>/status in bytes: VmRSS (now) or VmHWM (peak)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def http_status(url: str, method: str = "GET", timeout: float = 1.0) -> int | None:
    request = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)
    except (OSError, ValueError):
        return None


@dataclass
class Server:
    """One server process (tree); `start()` returns the seconds from spawn to ready."""

    spec: Spec
    data_dir: Path
    log_path: Path
    hypercorn_config: Path | None = None
    env: dict[str, str] = field(default_factory=dict)
    script: str = "server.mjs"  # the Node kind's script in benchmarks/node/ ...
    args: list[str] = field(default_factory=list)  # ... and its further arguments
    checkout: Path | None = None  # ours from another checkout (its .venv); None: this one
    port: int = 0
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        pin = ["taskset", "-c", SERVER_CPU]
        bind = f"127.0.0.1:{self.port}"
        if self.spec.kind == "node":
            command = [*pin, "node", str(BENCH / "node" / self.script), "--port", str(self.port)]
            if self.spec.mode == "file":
                command += ["--data-dir", str(self.data_dir)]
            return command + self.args
        if self.spec.kind == "trio":  # as the README starts it (bound from DS_SERVER__*)
            python = sys.executable if self.checkout is None else self.python()
            return [*pin, python, "-m", "streams", "serve"]
        hypercorn = str(Path(sys.executable).parent / "hypercorn")
        app = "benchmarks.rawapp:app"
        command = [*pin, hypercorn, app, "--worker-class", "trio", "--workers", "0", "--bind", bind]
        if self.hypercorn_config is not None:
            command += ["--config", str(self.hypercorn_config)]
        return command

    def python(self) -> str:
        """The other checkout's interpreter: its .venv, where `streams` is installed."""
        assert self.checkout is not None
        return str(self.checkout / ".venv" / "bin" / "python")

    def environment(self) -> dict[str, str]:
        environment = {**os.environ, **self.env}
        if self.spec.kind == "trio":
            environment["DS_SERVER__HOST"] = "127.0.0.1"
            environment["DS_SERVER__PORT"] = str(self.port)
            environment["DS_STORAGE__MODE"] = self.spec.mode
            environment["DS_STORAGE__DATA_DIR"] = str(self.data_dir)
        return environment

    def start(self, ready_path: str | None = None, timeout: float = 60.0) -> float:
        """Spawn and wait until ready: /readyz for ours, any answer for Node; and then, if
        given, until `ready_path` (a stream) answers HEAD with 200."""
        if self.port == 0:
            self.port = free_port()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        log = open(self.log_path, "ab")  # noqa: SIM115 (kept open for the child's lifetime)
        log.write(f"\n===== start #{self.starts}: {' '.join(self.command())}\n".encode())
        log.flush()
        began = time.perf_counter()
        self.process = subprocess.Popen(
            self.command(),
            cwd=self.checkout or ROOT,
            env=self.environment(),
            stdout=log,
            stderr=log,
        )
        log.close()
        deadline = began + timeout
        probe = f"{self.base}/readyz"  # Node has none: any answer (404) means it listens
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.spec.key} exited while starting; see {self.log_path}")
            if time.perf_counter() > deadline:
                raise RuntimeError(f"{self.spec.key} not ready after {timeout} s")
            status = http_status(probe, timeout=0.5)
            ready = status == 200 if self.spec.kind != "node" else status is not None
            if ready and ready_path is not None:
                ready = http_status(self.base + ready_path, "HEAD", timeout=0.5) == 200
            if ready:
                return time.perf_counter() - began
            time.sleep(0.002)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def rss(self) -> int:
        """VmRSS summed over the server's process tree (hypercorn: master, worker, tracker)."""
        if not self.alive():
            return 0
        assert self.process is not None
        return sum(rss_bytes(pid) for pid in process_tree(self.process.pid))

    def peak_rss(self) -> int:
        """VmHWM summed over the process tree: the peak since start or `reset_peak`."""
        if not self.alive():
            return 0
        assert self.process is not None
        return sum(rss_bytes(pid, "VmHWM") for pid in process_tree(self.process.pid))

    def reset_peak(self) -> bool:
        """Start VmHWM afresh (writing 5 to clear_refs, Linux >= 4.0); False if refused, and
        then `peak_rss` is the peak since the server started."""
        if not self.alive():
            return False
        assert self.process is not None
        try:
            for pid in process_tree(self.process.pid):
                Path(f"/proc/{pid}/clear_refs").write_text("5")
        except OSError:
            return False
        return True

    def healthy(self) -> bool:
        """Alive and answering: /readyz 200 for ours and the raw app, any answer for Node."""
        if not self.alive():
            return False
        status = http_status(f"{self.base}/readyz", timeout=2.0)
        return status == 200 if self.spec.kind != "node" else status is not None

    def snapshot(self) -> str:
        """What the process tree looks like now (for the report when something broke)."""
        if self.process is None:
            return "no process"
        if self.process.poll() is not None:
            return f"master exited with {self.process.returncode}"
        states = []
        for pid in process_tree(self.process.pid):
            try:
                stat = Path(f"/proc/{pid}/stat").read_text()
                states.append(f"{pid}:{stat[stat.rindex(')') + 2]}")
            except (OSError, ValueError):
                states.append(f"{pid}:gone")
        return "tree " + " ".join(states) + f", /readyz {http_status(self.base + '/readyz')}"

    def stop(self) -> tuple[int | None, float, bool]:
        """SIGTERM the master; then wait for the whole tree (hypercorn's worker and tracker
        too), SIGKILL whatever is left after 20 s. Returns (exit status, seconds taken,
        whether it had already exited before we stopped it)."""
        if self.process is None:
            return None, 0.0, False
        process, self.process = self.process, None
        if process.poll() is not None:
            return process.returncode, 0.0, True
        tree = process_tree(process.pid)
        began = time.perf_counter()
        process.send_signal(signal.SIGTERM)
        try:
            code: int | None = process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            code = None
        deadline = began + 20
        while time.perf_counter() < deadline and any(_alive(pid) for pid in tree[1:]):
            time.sleep(0.02)
        for pid in tree:
            if _alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        if code is None:
            code = process.wait()
        return code, time.perf_counter() - began, False


def _alive(pid: int) -> bool:
    """True while `pid` runs (a zombie counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


NOISE = re.compile(
    r"Traceback|Error|Exception|exception|CRITICAL|FATAL|Segmentation|Killed|EMFILE",
)


def log_problems(path: Path, limit: int = 40) -> list[str]:
    """Lines of a server log that look like errors (tracebacks, exceptions)."""
    if not path.exists():
        return []
    lines = path.read_text(errors="replace").splitlines()
    return [line for line in lines if NOISE.search(line)][:limit]
