"""The benchmark: `bash benchmarks/run.sh [--quick]` (or `.venv/bin/python -m benchmarks`).

Starts each server in turn on 127.0.0.1, pinned to CPU 0, runs the scenarios from CPU 1,
prints one table and writes it, with the machine and the command, to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks import (
    hostile,
    report,
    report_hostile,
    report_scale,
    report_state,
    report_yjs,
    scale,
    scenarios,
    state,
    yjs,
)
from benchmarks.servers import ALL, ROOT, SERVER_CPU, Server, Spec, log_problems

LOAD = ("json", "catchup", "fanout")
HOSTILE = ("json-flood", "stalled-sse", "reopen")  # ours only; "hostile" selects all three
STATE = ("late-joiner", "snapshot-latency", "view-append", "compaction")  # "state": all four
YJS = ("yjs-load", "yjs-append")  # "yjs": both
GROUPS = ("appends", *LOAD, "creates", "restart", "hostile", "state", "yjs", "scale")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="short runs, K=100 only, 10k creates")
    parser.add_argument(
        "--servers",
        default=",".join(s.key for s in ALL),
        help="comma-separated subset of: " + ", ".join(s.key for s in ALL),
    )
    parser.add_argument(
        "--scenarios",
        default=",".join(GROUPS),
        help="comma-separated subset of: " + ", ".join((*GROUPS, *HOSTILE, *STATE, *YJS)),
    )
    parser.add_argument("--duration", type=float, help="seconds per wrk measurement")
    parser.add_argument("--fanout-k", help="comma-separated reader counts, e.g. 100,1000")
    parser.add_argument("--streams", type=int, help="streams to create (default 100k; quick 10k)")
    parser.add_argument("--restart-streams", type=int, help="streams on disk for the restart")
    parser.add_argument(
        "--reopen-records", type=int, help="one-byte records in the reopened log (1M; quick 200k)"
    )
    parser.add_argument(
        "--state-changes", type=int, help="changes in the late joiner's stream (1M; quick 100k)"
    )
    parser.add_argument("--yjs-edits", type=int, help="edits of the Yjs document loaded (20k)")
    parser.add_argument(
        "--trio-checkout",
        help="run our server from this checkout (its .venv), e.g. a branch's worktree",
    )
    parser.add_argument(
        "--hypercorn-config",
        default=str(ROOT / "hypercorn.toml"),
        help='hypercorn TOML for the raw app ("none": defaults); ours runs as `streams serve`',
    )
    parser.add_argument(
        "--output",
        default=str(ROOT / "docs" / "benchmarks.md"),
        help='markdown report to write ("none": do not write)',
    )
    parser.add_argument("--work-dir", help="where data dirs and logs go (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the work dir afterwards")
    return parser.parse_args(argv)


def make_plan(args: argparse.Namespace) -> scenarios.Plan:
    plan = scenarios.QUICK if args.quick else scenarios.FULL
    changes: dict[str, Any] = {}
    if args.duration:
        changes["duration"] = args.duration
    if args.fanout_k:
        changes["fanout_ks"] = tuple(int(k) for k in args.fanout_k.split(","))
    if args.streams:
        changes["create_streams"] = args.streams
    if args.restart_streams:
        changes["restart_streams"] = args.restart_streams
    if args.reopen_records:
        changes["reopen_records"] = args.reopen_records
    if args.state_changes:
        changes["state_changes"] = args.state_changes
    if args.yjs_edits:
        changes["yjs_edits"] = args.yjs_edits
    return dataclasses.replace(plan, **changes)


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class Bench:
    def __init__(self, args: argparse.Namespace, plan: scenarios.Plan, work: Path) -> None:
        self.args, self.plan, self.work = args, plan, work
        self.results: dict[str, dict[str, Any]] = {}
        self.problems: list[str] = []
        config = args.hypercorn_config
        self.hypercorn_config = None if config == "none" else Path(config).resolve()

    def server(self, spec: Spec, group: str) -> Server:
        env = {}
        if spec.kind == "trio" and group == "creates" and self.plan.idle_timeout is not None:
            env["DS_ACTORS__IDLE_TIMEOUT_SECS"] = str(self.plan.idle_timeout)
        checkout = self.args.trio_checkout
        server = Server(
            spec,
            data_dir=self.work / "data" / f"{spec.key}-{group}",
            log_path=self.work / "logs" / f"{spec.key}-{group}.log",
            hypercorn_config=self.hypercorn_config,
            env=env,
            checkout=Path(checkout).resolve() if checkout and spec.kind == "trio" else None,
        )
        if group.startswith("yjs-"):
            plan = self.plan
            yjs.configure(server, plan.yjs_threshold if group == "yjs-compact" else None, plan)
        return server

    def record(self, spec: Spec, values: dict[str, Any]) -> None:
        self.results.setdefault(spec.key, {}).update(values)
        for key, value in values.items():
            if not isinstance(value, dict):
                continue
            errors = {
                name: value[name]
                for name in ("status_errors", "socket_errors", "bad", "missed")
                if value.get(name)
            }
            if value.get("errors") and isinstance(value["errors"], dict):
                errors.update(value["errors"])
            for name, status in value.items():
                if name.endswith("_status") and status not in (0, 200, 201, 204):
                    errors[name] = status
            if errors:
                self.problems.append(f"{spec.key} {key}: {errors}")

    def run_group(
        self,
        spec: Spec,
        group: str,
        steps: list[tuple[str, Callable[[Server], dict[str, Any]]]],
        prepare: Callable[[Server], None] | None = None,
    ) -> None:
        """Start a fresh server (after `prepare`, given it, has filled its data dir), run the
        steps in turn, stop it."""
        server = self.server(spec, group)
        check = report.cpu_check(SERVER_CPU)
        self.results.setdefault(spec.key, {}).setdefault("cpu-check", {})[group] = check
        try:
            if prepare is not None:
                say(f"{spec.key}: preparing the data dir ({group})")
                began = time.perf_counter()
                try:
                    prepare(server)
                except Exception as error:
                    self.problems.append(f"{spec.key} {group}: preparing FAILED {error!r}")
                    traceback.print_exc()
                    return
                say(f"{spec.key}: preparing took {time.perf_counter() - began:.1f} s")
            say(f"{spec.key}: starting ({group}); CPU check {check:.2f} s")
            first_start = server.start()
            for name, step in steps:
                if not server.alive():
                    self.problems.append(f"{spec.key}: server died before {name}; restarted")
                    server.start()
                say(f"{spec.key}: {name}")
                began = time.perf_counter()
                try:
                    values = (
                        step(server)
                        if name != "restart"
                        else scenarios.restart(server, self.plan, first_start)
                    )
                    self.record(spec, values)
                except Exception as error:  # a failed scenario is a result, not the end
                    self.problems.append(f"{spec.key} {name}: FAILED {error!r}")
                    say(f"{spec.key}: {name} failed: {error!r}")
                    traceback.print_exc()
                    if not server.healthy():
                        self.problems.append(
                            f"{spec.key}: not answering after {name} ({server.snapshot()}); "
                            "restarted for the next scenario"
                        )
                        self.stop(server, group)
                        server.start()
                say(f"{spec.key}: {name} took {time.perf_counter() - began:.1f} s")
                if not server.alive():
                    self.problems.append(
                        f"{spec.key}: server exited during {name} ({server.snapshot()})"
                    )
        finally:
            self.stop(server, group)
            for line in log_problems(server.log_path):
                self.problems.append(f"{spec.key} ({group}) log: {line.strip()[:300]}")

    def append_rounds(self, specs: list[Spec]) -> None:
        """Appends in rounds, the servers taking turns (in reverse order every other round):
        this VM's CPU speed drifts over minutes, and turns spread the drift over all servers.
        Each result is the round with the median rate; every round is kept as `<key>@<n>`."""
        plan = self.plan
        for number in range(1, plan.append_rounds + 1):
            for spec in specs if number % 2 else specs[::-1]:

                def step(server: Server, number: int = number) -> dict[str, Any]:
                    values = scenarios.appends(server, plan)
                    return {f"{key}@{number}": value for key, value in values.items()}

                self.run_group(spec, f"appends-{number}", [("appends", step)])
        for spec in specs:
            values = self.results.get(spec.key, {})
            for connections in plan.append_connections:
                key = f"append-c{connections}"
                rounds = [
                    values[f"{key}@{n}"]
                    for n in range(1, plan.append_rounds + 1)
                    if f"{key}@{n}" in values
                ]
                if rounds:
                    median = sorted(rounds, key=lambda r: r["rps"])[(len(rounds) - 1) // 2]
                    values[key] = {**median, "round_rps": [r["rps"] for r in rounds]}

    def stop(self, server: Server, group: str) -> None:
        code, seconds, exited = server.stop()
        if exited:
            self.problems.append(
                f"{server.spec.key} ({group}): had exited (status {code}) before SIGTERM"
            )
        elif code not in (0, None, -15):
            self.problems.append(f"{server.spec.key} ({group}): exit status {code} on SIGTERM")
        if seconds > 10:
            self.problems.append(
                f"{server.spec.key} ({group}): took {seconds:.1f} s to stop after SIGTERM"
            )

    def run(self) -> None:
        wanted = set(self.args.scenarios.split(","))
        keys = self.args.servers.split(",")
        specs = [spec for spec in ALL if spec.key in keys]
        plan = self.plan
        if "appends" in wanted:
            self.append_rounds(specs)
        for spec in specs:
            load: list[tuple[str, Callable[[Server], dict[str, Any]]]] = []
            if "json" in wanted and spec.kind != "raw":
                load.append(("json", lambda s: scenarios.json_appends(s, plan)))
            if "catchup" in wanted and spec.kind != "raw":
                load.append(("catchup", lambda s: scenarios.catch_up(s, plan)))
            if "fanout" in wanted:
                load.append(("fanout", lambda s: scenarios.fan_out(s, plan)))
            if load:
                self.run_group(spec, "load", load)
            if spec.kind == "raw":
                continue
            if "creates" in wanted:
                self.run_group(spec, "creates", [("creates", lambda s: scenarios.creates(s, plan))])
            if "restart" in wanted and spec.on_disk:
                self.run_group(spec, "restart", [("restart", lambda s: {})])
            if spec.kind == "trio":
                self.hostile(spec, {name for name in HOSTILE if {name, "hostile"} & wanted})
            self.state(spec, {name for name in STATE if {name, "state"} & wanted})
            self.yjs(spec, {name for name in YJS if {name, "yjs"} & wanted})
        if "scale" in wanted:  # issue 16: its own servers and PostgreSQL, not --servers'
            self.results["scale"] = scale.run(plan, self.work, self.problems)

    def hostile(self, spec: Spec, wanted: set[str]) -> None:
        """Issue 9's hostile clients, each on a fresh server so that its RSS is its own."""
        plan = self.plan
        if "json-flood" in wanted:
            self.run_group(
                spec, "json-flood", [("json-flood", lambda s: hostile.json_flood(s, plan))]
            )
        if "stalled-sse" in wanted:
            self.run_group(
                spec, "stalled-sse", [("stalled-sse", lambda s: hostile.stalled_sse(s, plan))]
            )
        if "reopen" in wanted and spec.on_disk:
            built: dict[str, Any] = {}
            self.run_group(
                spec,
                "reopen",
                [("reopen", lambda s: hostile.reopen(s, plan, built))],
                prepare=lambda s: built.update(hostile.build_log(s, plan)),
            )

    def state(self, spec: Spec, wanted: set[str]) -> None:
        """Issue 11's State Protocol scenarios on one fresh server; the Node server runs the
        late joiner's full replay only (it has no snapshots, views or compaction)."""
        plan = self.plan
        steps: list[tuple[str, Callable[[Server], dict[str, Any]]]] = []
        if "late-joiner" in wanted:
            steps.append(("late-joiner", lambda s: state.late_joiner(s, plan)))
        if spec.kind == "trio" and "snapshot-latency" in wanted:
            steps.append(("snapshot-latency", lambda s: state.snapshot_latency(s, plan)))
        if spec.kind == "trio" and "view-append" in wanted:
            steps.append(("view-append", lambda s: state.view_append(s, plan)))
        if spec.kind == "trio" and spec.on_disk and "compaction" in wanted:
            steps.append(("compaction", lambda s: state.compaction(s, plan)))
        if steps:
            self.run_group(spec, "state", steps)

    def yjs(self, spec: Spec, wanted: set[str]) -> None:
        """Issue 13's Yjs scenarios: a server whose compaction threshold is far above the
        document, then one whose threshold is below it (the append latency runs there)."""
        plan = self.plan
        load = yjs.load_scenario
        if "yjs-load" in wanted:
            self.run_group(
                spec,
                "yjs-plain",
                [("yjs-load", lambda s: {"yjs-load": load(s, plan, plan.yjs_no_threshold)})],
            )
        steps: list[tuple[str, Callable[[Server], dict[str, Any]]]] = []
        if "yjs-load" in wanted:

            def compacted(server: Server) -> dict[str, Any]:
                return {"yjs-load-compacted": load(server, plan, plan.yjs_threshold)}

            steps.append(("yjs-load-compacted", compacted))
        if "yjs-append" in wanted:
            steps.append(("yjs-append", lambda s: {"yjs-append": yjs.append_latency(s, plan)}))
        if steps:
            self.run_group(spec, "yjs-compact", steps)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    plan = make_plan(args)
    if (os.cpu_count() or 1) >= 2:
        os.sched_setaffinity(0, {1})  # the load generator (this process, wrk) on CPU 1
    else:
        say("fewer than 2 CPUs: server and load generator share the CPU")
    work = Path(args.work_dir) if args.work_dir else Path(tempfile.mkdtemp(prefix="ds-bench-"))
    (work / "logs").mkdir(parents=True, exist_ok=True)
    command = os.environ.get("DS_BENCH_COMMAND") or " ".join(
        [".venv/bin/python -m benchmarks", *(argv if argv is not None else sys.argv[1:])]
    )
    machine = report.machine(work)
    say(f"work dir {work}; plan {plan}")
    began = time.time()
    bench = Bench(args, plan, work)
    try:
        bench.run()
    finally:
        machine["load_after"] = report.loadavg()
        elapsed = time.time() - began
        raw = {
            "plan": dataclasses.asdict(plan),
            "machine": machine,
            "command": command,
            "seconds": elapsed,
            "results": bench.results,
            "problems": bench.problems,
        }
        (work / "results.json").write_text(json.dumps(raw, indent=2, default=str))
    table = report.table(bench.results, plan)
    print(table)
    print()
    print(report.targets(bench.results))
    if report_hostile.has_results(bench.results):
        print()
        print(report_hostile.table(bench.results, plan))
        print()
        print(report_hostile.goals(bench.results))
    if report_state.has_results(bench.results):
        print()
        print(report_state.table(bench.results, plan))
        print()
        print(report_state.goals(bench.results))
    if report_yjs.has_results(bench.results):
        print()
        print(report_yjs.table(bench.results, plan))
        print()
        print(report_yjs.goals(bench.results))
    print("\n".join(report_scale.section(bench.results, plan)))
    if bench.problems:
        print("\nProblems seen:\n" + "\n".join(f"- {p}" for p in bench.problems))
    say(f"done in {elapsed / 60:.1f} min; raw results in {work / 'results.json'}")
    output = Path(args.output)
    if args.output != "none" and args.scenarios == "scale" and output.exists():
        separate = {**machine, "command": command, "minutes": elapsed / 60}
        lines = report_scale.section(bench.results, plan, {**separate, "problems": bench.problems})
        output.write_text(report_scale.merge(output.read_text(), lines))  # the rest stays
        say(f"merged the scale section into {args.output}")
    elif args.output != "none":
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(
            report.markdown(
                bench.results, plan, machine, command, elapsed, bench.problems, args.quick
            )
        )
        say(f"wrote {args.output}")
    if not args.keep and not args.work_dir:
        shutil.rmtree(work / "data", ignore_errors=True)
    return 0
