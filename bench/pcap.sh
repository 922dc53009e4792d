#!/usr/bin/env bash
# Benchmark of `holdfast pcap` against tshark on the same large capture, in one run.
#
# Builds a synthetic capture of at least 1 GB (many interleaved connections, full-size
# segments, about 6% of connections ending in resets of several kinds) with the
# `pcap_bench_gen` example, warms the page cache, then times:
#   holdfast pcap --json FILE               (median of HOLDFAST_RUNS, default 3)
#   tshark -n -r FILE -Y tcp.flags.reset==1 (median of TSHARK_RUNS, default 1: it is slow)
# and reports MB/s, the ratio, and max RSS (from /usr/bin/time -v). Memory flatness: the same
# holdfast run on a capture a quarter of the size must show about the same max RSS.
# Prints a Markdown block for docs/BENCHMARKS.md.
#
# Usage: bench/pcap.sh [MEGABYTES]   (default 1100)
set -euo pipefail
cd "$(dirname "$0")/.."
MB="${1:-1100}"
HOLDFAST_RUNS="${HOLDFAST_RUNS:-3}"
TSHARK_RUNS="${TSHARK_RUNS:-1}"
WORK="${BENCH_DIR:-${TMPDIR:-/tmp}/holdfast-pcap-bench}"
mkdir -p "$WORK"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"

command -v tshark >/dev/null || scripts/install-deps
[ -x /usr/bin/time ] || { echo "bench/pcap.sh: needs /usr/bin/time (apt install time)" >&2; exit 1; }

cargo build --release -q -p holdfast-cli
cargo build --release -q -p holdfast-doctor --example pcap_bench_gen
HOLDFAST="$CARGO_TARGET_DIR/release/holdfast"
GEN="$CARGO_TARGET_DIR/release/examples/pcap_bench_gen"

BIG="$WORK/big.pcap"
SMALL="$WORK/quarter.pcap"
[ -s "$BIG" ] && [ "$(stat -c %s "$BIG")" -ge $((MB * 1024 * 1024)) ] || "$GEN" "$BIG" "$MB"
[ -s "$SMALL" ] || "$GEN" "$SMALL" $((MB / 4))
cat "$BIG" "$SMALL" > /dev/null   # warm the page cache for every tool alike

# time_run OUTFILE CMD... : runs CMD under /usr/bin/time -v; echoes "seconds max_rss_kb".
time_run() {
  local out="$1"; shift
  /usr/bin/time -v "$@" > "$out" 2> "$out.time"
  local wall rss
  wall=$(awk -F': ' '/Elapsed \(wall clock\)/ {print $2}' "$out.time")
  rss=$(awk -F': ' '/Maximum resident set size/ {print $2}' "$out.time")
  # wall is [h:]m:ss.ss
  python3 -c "import sys; p=sys.argv[1].split(':'); s=sum(float(x)*60**i for i,x in enumerate(reversed(p))); print(f'{s:.3f} {sys.argv[2]}')" "$wall" "$rss"
}

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

hf_times=(); hf_rss=0
for _ in $(seq "$HOLDFAST_RUNS"); do
  read -r s rss < <(time_run "$WORK/holdfast.json" "$HOLDFAST" pcap --json "$BIG")
  hf_times+=("$s"); hf_rss=$rss
done
read -r _ small_rss < <(time_run "$WORK/holdfast-quarter.json" "$HOLDFAST" pcap --json "$SMALL")
ts_times=(); ts_rss=0
for _ in $(seq "$TSHARK_RUNS"); do
  read -r s rss < <(time_run "$WORK/tshark.txt" tshark -n -r "$BIG" -Y "tcp.flags.reset==1")
  ts_times+=("$s"); ts_rss=$rss
done

bytes=$(stat -c %s "$BIG")
hf=$(printf '%s\n' "${hf_times[@]}" | median)
ts=$(printf '%s\n' "${ts_times[@]}" | median)
resets_hf=$(python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(len(d['resets']), d['packets'], d['connections'])" "$WORK/holdfast.json")
read -r hf_resets packets connections <<< "$resets_hf"
ts_rst_packets=$(wc -l < "$WORK/tshark.txt")

python3 - "$bytes" "$hf" "$ts" "$hf_rss" "$small_rss" "$ts_rss" "$packets" "$connections" \
  "$hf_resets" "$ts_rst_packets" "$HOLDFAST_RUNS" "$TSHARK_RUNS" <<'PY'
import sys
(bytes_, hf, ts, hf_rss, small_rss, ts_rss, packets, conns, resets, ts_rst,
 hf_runs, ts_runs) = sys.argv[1:]
mb = int(bytes_) / 1e6
hf, ts = float(hf), float(ts)
print(f"""
### `holdfast pcap` vs tshark (bench/pcap.sh)

Capture: {mb:.0f} MB pcap, {int(packets):,} packets, {int(conns):,} connections, {int(resets):,} ending
in a reset ({int(ts_rst):,} RST packets found by tshark). Page cache warm.

| tool | command | wall time (median) | throughput | max RSS |
|---|---|---|---|---|
| holdfast | `holdfast pcap --json FILE` ({hf_runs} runs) | {hf:.2f} s | {mb / hf:.0f} MB/s | {int(hf_rss) / 1024:.0f} MiB |
| tshark | `tshark -n -r FILE -Y tcp.flags.reset==1` ({ts_runs} run) | {ts:.2f} s | {mb / ts:.1f} MB/s | {int(ts_rss) / 1024:.0f} MiB |

Ratio: holdfast is **{ts / hf:.1f}x** faster than tshark (goal: 20x). Memory: holdfast's max RSS
was {int(hf_rss) / 1024:.0f} MiB on the full capture and {int(small_rss) / 1024:.0f} MiB on one a quarter of
its size (flat in the file's size).
""")
PY
