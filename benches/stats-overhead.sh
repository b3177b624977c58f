#!/bin/bash
# Visit statistics on vs off, in data-directory mode, through the shared nginx harness, back to
# back (compare the two runs' duanlian CPU figures; nginx's row shows the machine's drift).
# Run from the repository root after `cargo build --release`.
set -euo pipefail
cd "$(dirname "$0")/.."
for mode in off on; do
  rm -rf ${TMPDIR:-/tmp}/dl-statsbench-$mode
  extra=""; [ $mode = off ] && extra="--no-stats"
  echo "== statistics $mode"
  DUANLIAN_SERVE="{bin} serve --data-dir ${TMPDIR:-/tmp}/dl-statsbench-$mode --snapshot {snapshot} --listen {addr} --admin-listen 127.0.0.1:0 --threads 1 $extra" \
    python3 ../shared/bench/redirect-vs-nginx.py --links 1000000 2>&1 | tail -5
  du -sh ${TMPDIR:-/tmp}/dl-statsbench-$mode/clicks 2>/dev/null || true
done
