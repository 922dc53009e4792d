#!/usr/bin/env bash
# API-management cost on the proxy path: the same route through `holdfast serve` with key auth +
# rate limit + call log ON (SQLite store, default mode) against the same route with all three
# OFF, in one run. Rounds alternate so both see the same background load; median reported.
# Usage: bench/mgmt.sh   env: SECS=10 CONC=64 THREADS=2 ROUNDS=3
#   PERF=DIR: afterwards, profile each mode with `perf record -g` on its holdfast process while
#   wrk runs (DIR/on.data, DIR/off.data; read them with `perf report -i DIR/on.data`).
set -euo pipefail
cd "$(dirname "$0")/.."

SECS=${SECS:-10}
CONC=${CONC:-64}
THREADS=${THREADS:-2}
ROUNDS=${ROUNDS:-3}
TARGET=${CARGO_TARGET_DIR:-target}
TOKEN=bench-admin-token-0123456789abcdef

cargo build --release -q -p holdfast-cli
HOLDFAST="$TARGET/release/holdfast"

WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 0.5
  rm -rf "$WORK"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
declare -A PID_OF
start() { # NAME CONFIG : start holdfast serve, wait for its listener
  "$HOLDFAST" serve --config "$2" >"$WORK/$1.out" 2>"$WORK/$1.log" &
  PIDS+=($!)
  PID_OF[$1]=$!
  for _ in $(seq 1 300); do
    grep -q "holdfast: listening on" "$WORK/$1.log" && return 0
    sleep 0.1
  done
  cat "$WORK/$1.log" >&2; return 1
}

UP=$(free_port); OFF=$(free_port); ON=$(free_port); ADMIN=$(free_port); IDLE=$(free_port)
cat >"$WORK/upstream.toml" <<TOML
[server]
listen = ["127.0.0.1:$IDLE"]
demo_upstream = "127.0.0.1:$UP"
[upstreams.none]
targets = ["http://127.0.0.1:$UP"]
[[routes]]
path_prefix = "/"
upstream = "none"
TOML
common() { cat <<TOML
[upstreams.up]
targets = ["http://127.0.0.1:$UP"]
[[routes]]
name = "bench"
path_prefix = "/"
upstream = "up"
TOML
}
{ echo "[server]"; echo "listen = [\"127.0.0.1:$OFF\"]"; common; } >"$WORK/off.toml"
{ echo "[server]"; echo "listen = [\"127.0.0.1:$ON\"]"; echo "admin = \"127.0.0.1:$ADMIN\""; common
  cat <<TOML
service = "bench/bench"
[management]
store = "sqlite://$WORK/mgmt.db"
secret = "bench-secret-0123456789abcdef"
flush_interval_ms = 1000
[[management.admin_tokens]]
token = "$TOKEN"
role = "super_admin"
TOML
} >"$WORK/on.toml"
start upstream "$WORK/upstream.toml"
start off "$WORK/off.toml"
start on "$WORK/on.toml"

# Provision: tenant, service with a rate limit that never refuses, consumer, key, subscription.
export HOLDFAST_ADMIN_URL="http://127.0.0.1:$ADMIN" HOLDFAST_ADMIN_TOKEN=$TOKEN HOLDFAST_TENANT=bench
"$HOLDFAST" admin tenant create bench >/dev/null
"$HOLDFAST" admin service create bench --rps 100000000 --rpm 1000000000 >/dev/null
"$HOLDFAST" admin consumer create c1 --rps 100000000 >/dev/null
KEY=$("$HOLDFAST" admin --json key issue --consumer c1 --rps 100000000 | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')
"$HOLDFAST" admin subscribe --consumer c1 --service bench >/dev/null
code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $KEY" "http://127.0.0.1:$ON/")
[ "$code" = 200 ] || { echo "managed route answered $code" >&2; exit 1; }
code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$ON/")
[ "$code" = 401 ] || { echo "managed route without key answered $code" >&2; exit 1; }

cpu_ticks() { # PID -> utime + stime of the process, in clock ticks
  awk '{print $14 + $15}' "/proc/$1/stat"
}
bench() { # PID URL [HEADER] -> "rps p99_ms non2xx cpu_us_per_request"
  local out before after
  before=$(cpu_ticks "$1")
  if [ -n "${3:-}" ]; then
    out=$(wrk -t"$THREADS" -c"$CONC" -d"${SECS}s" --latency -H "$3" "$2")
  else
    out=$(wrk -t"$THREADS" -c"$CONC" -d"${SECS}s" --latency "$2")
  fi
  after=$(cpu_ticks "$1")
  python3 - "$out" "$((after - before))" "$(getconf CLK_TCK)" <<'PY'
import re, sys
out, ticks, hz = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
total = int(re.search(r"(\d+) requests in", out).group(1))
m = re.search(r"\s99%\s+([\d.]+)(us|ms|s)", out)
p99 = float(m.group(1)) * {"us": 0.001, "ms": 1, "s": 1000}[m.group(2)]
bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
cpu_us = ticks * 1e6 / hz / max(total, 1)
print(f"{rps:.0f} {p99:.2f} {bad.group(1) if bad else 0} {cpu_us:.1f}")
PY
}

wrk -t1 -c8 -d2s "http://127.0.0.1:$OFF/" >/dev/null
wrk -t1 -c8 -d2s -H "Authorization: Bearer $KEY" "http://127.0.0.1:$ON/" >/dev/null
echo "wrk -t$THREADS -c$CONC -d${SECS}s, $ROUNDS alternating rounds; $(nproc) cores; $(uname -r)"
echo
echo "| round | mode | req/s | p99 ms | non-2xx | holdfast CPU µs/request |"
echo "|---|---|---|---|---|---|"
OFF_RPS=(); ON_RPS=(); OFF_P99=(); ON_P99=(); OFF_CPU=(); ON_CPU=(); RATIOS=()
for r in $(seq 1 "$ROUNDS"); do
  read -r rps p99 bad cpu <<<"$(bench "${PID_OF[off]}" "http://127.0.0.1:$OFF/")"
  echo "| $r | off | $rps | $p99 | $bad | $cpu |"; OFF_RPS+=("$rps"); OFF_P99+=("$p99"); OFF_CPU+=("$cpu")
  off_rps=$rps
  read -r rps p99 bad cpu <<<"$(bench "${PID_OF[on]}" "http://127.0.0.1:$ON/" "Authorization: Bearer $KEY")"
  echo "| $r | on | $rps | $p99 | $bad | $cpu |"; ON_RPS+=("$rps"); ON_P99+=("$p99"); ON_CPU+=("$cpu")
  RATIOS+=("$(python3 -c "print($rps/$off_rps)")")
done
sleep 1.5
# GET /admin/calllog: stored rows and the writer's counters (cheap, unlike a stats query
# over a million rows).
STORED=$(curl -s -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$ADMIN/admin/calllog" | python3 -c 'import json,sys; v=json.load(sys.stdin); print(v["stored"], v["writer"]["overflow"])') || STORED="(GET /admin/calllog failed)"
med() { python3 -c "import statistics,sys; print(f'{statistics.median(map(float,sys.argv[1:])):.6g}')" "$@"; }
OFF_M=$(med "${OFF_RPS[@]}"); ON_M=$(med "${ON_RPS[@]}")
PAIRED=$(med "${RATIOS[@]}")
OFF_C=$(med "${OFF_CPU[@]}"); ON_C=$(med "${ON_CPU[@]}")
echo
echo "median req/s: off $OFF_M, on $ON_M; cost $(python3 -c "print(f'{(1-$ON_M/$OFF_M)*100:.1f}%')") (goal <= 10%)"
echo "median of the per-round on/off ratios: cost $(python3 -c "print(f'{(1-$PAIRED)*100:.1f}%')") (each round's two runs are adjacent in time)"
echo "median holdfast CPU per request: off $OFF_C µs, on $ON_C µs (+$(python3 -c "print(f'{($ON_C/$OFF_C-1)*100:.1f}%')"))"
echo "median p99 ms: off $(med "${OFF_P99[@]}"), on $(med "${ON_P99[@]}")"
echo "call log: stored calls, overflow = $STORED"

if [ -n "${PERF:-}" ]; then
  mkdir -p "$PERF"
  for mode in off on; do
    if [ "$mode" = on ]; then url="http://127.0.0.1:$ON/"; hdr="Authorization: Bearer $KEY"; else url="http://127.0.0.1:$OFF/"; hdr="X-Bench: 1"; fi
    perf record ${PERF_CG:--g} -o "$PERF/$mode.data" -p "${PID_OF[$mode]}" -- sleep "$SECS" 2>"$PERF/$mode.perf.log" &
    perf_pid=$!
    wrk -t"$THREADS" -c"$CONC" -d"${SECS}s" -H "$hdr" "$url" | grep Requests/sec | sed "s/^/$mode under perf: /"
    wait "$perf_pid" || true
  done
  echo "profiles: perf report -i $PERF/on.data (and off.data)"
fi
