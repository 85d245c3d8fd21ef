#!/usr/bin/env bash
# The README's first command: set up, then run the whole bot against the built-in X API
# sandbox (no X account needed). The first post and reply appear within ~3 minutes.
# Ctrl-C stops it. State goes to ${BOT_DATA_DIR:-data}/sandbox.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export TF_CPP_MIN_LOG_LEVEL=2
exec .venv/bin/python -m bot run --sandbox "$@"
