#!/usr/bin/env bash
# Creates .venv (if missing) and installs the project with every dependency pinned.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -c requirements.lock -e '.[test]'
