#!/usr/bin/env bash
# Installs what the tests need (a virtualenv, the pinned npm conformance suite, state interop
# packages and upstream's Yjs suite) and runs every test: lint, types, the import layering,
# unit and model-based tests, the conformance suite, the StreamDB and Yjs interop.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
(cd tests/conformance && npm ci --no-audit --no-fund --loglevel=error)
(cd tests/state_interop && npm ci --no-audit --no-fund --loglevel=error)
(cd tests/yjs_upstream && npm ci --no-audit --no-fund --loglevel=error)
.venv/bin/ruff check .
.venv/bin/mypy
# The layering (pyproject: tool.importlinter); its report is printed only when it fails.
.venv/bin/lint-imports --no-cache > .lint-imports.txt || { cat .lint-imports.txt; exit 1; }
exec .venv/bin/python -m pytest "$@"
