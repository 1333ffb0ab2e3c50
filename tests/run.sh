#!/usr/bin/env bash
# Installs what the tests need (a virtualenv, the pinned npm conformance suite and state
# interop packages) and runs every test: lint, types, the import layering, unit and
# model-based tests, the conformance suite and the StreamDB interop.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test,bench]'
(cd tests/conformance && npm ci --no-audit --no-fund --loglevel=error)
(cd tests/state_interop && npm ci --no-audit --no-fund --loglevel=error)
.venv/bin/ruff check .
.venv/bin/mypy
# The layering (pyproject: tool.importlinter); its report is printed only when it fails.
.venv/bin/lint-imports --no-cache > .lint-imports.txt || { cat .lint-imports.txt; exit 1; }
exec .venv/bin/python -m pytest "$@"
