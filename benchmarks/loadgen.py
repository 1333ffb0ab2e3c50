"""Runs wrk (Debian's, with our Lua scripts) and reads back the one JSON line they print."""

from __future__ import annotations

import json
import signal
import subprocess
import tempfile
from pathlib import Path
from typing import Any

LUA = Path(__file__).resolve().parent / "lua"
LOADGEN_CPU = "1"


def wrk_version() -> str:
    done = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
    return (done.stdout or done.stderr).splitlines()[0].split(" Copyright")[0].strip()


def run_wrk(
    url: str,
    script: str,
    args: list[str] | None = None,
    *,
    connections: int = 1,
    threads: int = 1,
    duration: float = 5.0,
    timeout_s: float = 10.0,
    cpus: str | None = LOADGEN_CPU,
) -> dict[str, Any]:
    """One wrk run, bounded by `duration` (and ended early when the script prints WRKSTOP).

    `cpus`: the CPUs wrk may run on (taskset), None: any.
    Returns wrk's summary: requests, duration_us, latency percentiles in microseconds, error
    counts (status_errors counts answers >= 400), the script's counters, and `rps`.
    """
    source = (LUA / f"{script}.lua").read_text() + "\n" + (LUA / "report.lua").read_text()
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as handle:
        handle.write(source)
        script_path = handle.name
    command = [
        *(["taskset", "-c", cpus] if cpus else []),
        "wrk",
        "-t",
        str(threads),
        "-c",
        str(connections),
        "-d",
        f"{max(1, round(duration))}s",
        "--timeout",
        f"{round(timeout_s)}s",
        "-s",
        script_path,
        url,
        "--",
        *(args or []),
    ]
    lines: list[str] = []
    try:
        with subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        ) as process:
            assert process.stdout is not None
            for line in process.stdout:
                lines.append(line.rstrip("\n"))
                if line.startswith("WRKSTOP"):
                    process.send_signal(signal.SIGINT)
            process.wait(timeout=duration + 60)
    finally:
        Path(script_path).unlink(missing_ok=True)
    for line in lines:
        if line.startswith("WRKJSON "):
            result: dict[str, Any] = json.loads(line[len("WRKJSON ") :])
            seconds = result["duration_us"] / 1e6 or 1e-9
            result["rps"] = result["requests"] / seconds
            result["errors"] = (
                sum(
                    result[key]
                    for key in ("connect_errors", "read_errors", "write_errors", "status_errors")
                )
                + result["timeouts"]
            )
            result["output"] = "\n".join(line for line in lines if not line.startswith("WRK"))
            return result
    raise RuntimeError("wrk printed no summary:\n" + "\n".join(lines[-30:]))
