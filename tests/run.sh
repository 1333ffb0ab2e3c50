#!/usr/bin/env bash
# Installs what the tests need (a virtualenv, the pinned npm conformance suite, state interop
# packages, upstream's Yjs suite, Debian's Chromium and the collab example's page, PostgreSQL, HAProxy)
# and runs every test: lint, types, the import layering, unit and model-based tests, the
# conformance suite, the StreamDB and Yjs interop, the collab example in a browser.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test,bench]'
(cd tests/conformance && npm ci --no-audit --no-fund --loglevel=error)
(cd tests/state_interop && npm ci --no-audit --no-fund --loglevel=error)
(cd tests/yjs_upstream && npm ci --no-audit --no-fund --loglevel=error)
# The collab example: its page built (into examples/collab/dist, git-ignored), and Debian's
# Chromium for its browser test (puppeteer-core downloads no browser).
(cd examples/collab && npm ci --no-audit --no-fund --loglevel=error && npm run --silent build)
if ! command -v chromium > /dev/null; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-dejavu-core > /dev/null
  else
    echo "tests/run.sh: no chromium (apt-get install chromium): the browser test is skipped" >&2
  fi
fi
# PostgreSQL from Debian's packages, for the postgres-mode tests: tests/postgres.py starts a
# throwaway server of its own, so the package is told to create no cluster.
if ! compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null && ! command -v initdb >/dev/null \
    && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  mkdir -p /etc/postgresql-common/createcluster.d
  echo 'create_main_cluster = false' > /etc/postgresql-common/createcluster.d/no-main.conf
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql \
    > /dev/null
fi
# HAProxy from Debian's packages, the load balancer in front of two server processes
# (tests/haproxy.py runs its own, in the foreground).
if ! command -v haproxy >/dev/null && [ ! -x /usr/sbin/haproxy ] && [ "$(id -u)" = 0 ] \
    && command -v apt-get >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends haproxy \
    > /dev/null
fi
.venv/bin/ruff check .
.venv/bin/mypy
# The layering (pyproject: tool.importlinter); its report is printed only when it fails.
.venv/bin/lint-imports --no-cache > .lint-imports.txt || { cat .lint-imports.txt; exit 1; }
exec .venv/bin/python -m pytest "$@"
