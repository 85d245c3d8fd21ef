#!/usr/bin/env bash
# Sets everything up and runs the test suite. This is the README's test command and what CI runs.
# Needs only Python 3.11 and the package registries; tests that read ../shared/data are
# skipped (with the reason) where it is absent.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python -m pytest "$@"
