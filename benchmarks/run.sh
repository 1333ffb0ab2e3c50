#!/usr/bin/env bash
# The benchmark in one command: installs what it needs if missing (the virtualenv with pycrdt,
# wrk, the pinned Node reference server and upstream's YjsServer), then runs every scenario and
# writes docs/benchmarks.md.
#   bash benchmarks/run.sh            # full run, about 45 minutes on 2 cores
#   bash benchmarks/run.sh --quick    # a few minutes
#   bash benchmarks/run.sh --help     # scenario / server subsets, sizes
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
apt_install() {
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -c 'import streams.app, trio, hypercorn, pycrdt' 2>/dev/null \
  || .venv/bin/python -m pip install -q --disable-pip-version-check -e '.[bench]'
command -v wrk >/dev/null || apt_install wrk
command -v taskset >/dev/null || apt_install util-linux
command -v node >/dev/null || apt_install nodejs npm
if [ ! -f benchmarks/node/node_modules/@durable-streams/server/package.json ] \
  || [ ! -f benchmarks/node/node_modules/@durable-streams/y-durable-streams/package.json ]; then
  (cd benchmarks/node && npm ci --no-audit --no-fund --loglevel=error)
fi

export DS_BENCH_COMMAND="bash benchmarks/run.sh${*:+ $*}"
exec .venv/bin/python -m benchmarks "$@"
