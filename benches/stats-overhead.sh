#!/bin/bash
# Visit statistics on vs off, in data-directory mode, through the shared nginx harness, back to
# back (compare the two runs' duanlian CPU figures; nginx's row shows the machine's drift).
# Run from the repository root after `cargo build --release`.
#
# PAIRS=N runs N pairs, every second one on before off, so that a drift of the machine over
# the runs does not always favour the same side, and ends with a table of every run and the
# medians. On this VM the same command run twice differs by up to 14%: one pair cannot resolve
# a few percent.
set -euo pipefail
cd "$(dirname "$0")/.."
pairs=${PAIRS:-1}
out=${TMPDIR:-/tmp}/dl-statsbench-runs
rm -rf "$out" && mkdir -p "$out"
run() { # mode pair
  local mode=$1 pair=$2 extra=""
  rm -rf ${TMPDIR:-/tmp}/dl-statsbench-$mode
  [ $mode = off ] && extra="--no-stats"
  echo "== pair $pair, statistics $mode"
  DUANLIAN_SERVE="{bin} serve --data-dir ${TMPDIR:-/tmp}/dl-statsbench-$mode --snapshot {snapshot} --listen {addr} --admin-listen 127.0.0.1:0 --threads 1 $extra" \
    python3 ../shared/bench/redirect-vs-nginx.py --links 1000000 2>&1 | tail -5 | tee "$out/$pair-$mode"
  du -sh ${TMPDIR:-/tmp}/dl-statsbench-$mode/clicks 2>/dev/null || true
}
for pair in $(seq 1 "$pairs"); do
  if [ $((pair % 2)) = 1 ]; then run off $pair; run on $pair; else run on $pair; run off $pair; fi
done
[ "$pairs" -gt 1 ] || exit 0
# The harness's rows: name req/s p50 p99 cpu-us user sys ready rss.
python3 - "$out" "$pairs" <<'EOF'
import statistics, sys
out, pairs = sys.argv[1], int(sys.argv[2])
def row(path, name):
    for line in open(path):
        f = line.split()
        if f and f[0] == name:
            return dict(p99=float(f[3]), cpu=float(f[4]))
    sys.exit(f"no {name} row in {path}")
# "on/off": CPU per redirect, on over off; "of ratios": the same of each run's ratio to nginx,
# which takes out the machine's drift between the two runs.
print(f"{'pair':>4} {'off cpu':>8} {'ratio':>6} {'p99':>6} {'on cpu':>8} {'ratio':>6} {'p99':>6} {'nginx p99 off/on':>17} {'on/off':>7} {'of ratios':>9}")
ratios, on_r, off_r, p99_vs = [], [], [], []
for p in range(1, pairs + 1):
    r = {m: (row(f"{out}/{p}-{m}", "duanlian"), row(f"{out}/{p}-{m}", "nginx")) for m in ("off", "on")}
    (doff, noff), (don, non) = r["off"], r["on"]
    ratios.append(don["cpu"] / doff["cpu"])
    off_r.append(doff["cpu"] / noff["cpu"])
    on_r.append(don["cpu"] / non["cpu"])
    p99_vs.append(don["p99"] / non["p99"])
    print(f"{p:>4} {doff['cpu']:>8.2f} {off_r[-1]:>6.3f} {doff['p99']:>6.0f} {don['cpu']:>8.2f} {on_r[-1]:>6.3f} "
          f"{don['p99']:>6.0f} {noff['p99']:>8.0f}/{non['p99']:<8.0f} {ratios[-1]:>7.3f} {on_r[-1] / off_r[-1]:>9.3f}")
print(f"median on/off CPU per redirect {statistics.median(ratios):.3f}; against nginx in the same run: "
      f"off {statistics.median(off_r):.3f}, on {statistics.median(on_r):.3f} "
      f"(on/off of those {statistics.median(on_r) / statistics.median(off_r):.3f}); "
      f"p99 with statistics on / nginx's: median {statistics.median(p99_vs):.2f}, worst {max(p99_vs):.2f}")
EOF
