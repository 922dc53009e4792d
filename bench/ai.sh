#!/usr/bin/env bash
# AI gateway benchmark: a mock OpenAI provider with a fixed delay, behind `holdfast serve`
# (and the `ai` handler alone) and behind LiteLLM's proxy, in one run on this machine.
#   1. added latency p50/p99 at fixed request rates (open loop, vs. the mock directly)
#   2. maximum sustained requests/s (closed loop) with peak memory (VmHWM) of each gateway
# Usage: bench/ai.sh   env: SECS=10 RATE=1000 LOW_RATE=100 DELAY_MS=20 CONC=256 ROUNDS=3
set -euo pipefail
cd "$(dirname "$0")/.."

SECS=${SECS:-10}
RATE=${RATE:-1000}
LOW_RATE=${LOW_RATE:-100}
DELAY_MS=${DELAY_MS:-20}
CONC=${CONC:-256}
ROUNDS=${ROUNDS:-3}
TARGET=${CARGO_TARGET_DIR:-target}
VENV=${LITELLM_VENV:-$TARGET/litellm-venv}

cargo build --release -q -p holdfast-cli
cargo build --release -q -p holdfast-ai --example ai_standalone --example ai_load
cargo build --release -q -p holdfast-mock-providers --bins
if ! "$VENV/bin/python" -c 'import litellm.proxy' 2>/dev/null; then
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check 'litellm[proxy]'
fi

WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  # `start` runs in `$(...)` subshells: their PIDs are in the .pid files, not in PIDS.
  for f in "$WORK"/*.pid; do [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

start() { # LOG PREFIX CMD... : start a process printing `PREFIX URL`, echo the URL
  local log=$1 prefix=$2; shift 2
  "$@" >"$log" 2>&1 &
  PIDS+=($!)
  echo $! >"$log.pid"
  for _ in $(seq 1 300); do
    if grep -q "^$prefix" "$log"; then sed -n "s/^$prefix//p" "$log" | head -1; return 0; fi
    sleep 0.1
  done
  cat "$log" >&2; return 1
}
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
hwm_kb() { # peak RSS of a process and its children, in KiB
  local total=0
  for p in $1 $(pgrep -P "$1" || true); do
    total=$((total + $(awk '/VmHWM/ {print $2}' "/proc/$p/status" 2>/dev/null || echo 0)))
  done
  echo $total
}

MOCK=$(start "$WORK/mock.log" "listening " "$TARGET/release/holdfast-mock-providers" --listen 127.0.0.1:0 --delay-ms "$DELAY_MS")

cat >"$WORK/holdfast.toml" <<TOML
[server]
listen = ["127.0.0.1:0"]
access_log = "$WORK/access.log"
[[routes]]
path_prefix = "/"
handler = "ai"
[ai]
[ai.models.bench]
[[ai.models.bench.deployments]]
provider = "openai"
model = "gpt-4o-mini"
base_url = "$MOCK/v1"
api_key = "sk-bench"
TOML
# The real binary (data plane + ai handler, access log to a file) ...
SERVE=$(start "$WORK/serve.log" "holdfast: listening on " "$TARGET/release/holdfast" serve --config "$WORK/holdfast.toml")
SERVE_PID=$(cat "$WORK/serve.log.pid")
# ... and the ai handler alone (crates/ai/examples/ai_standalone.rs), to see the data plane's share.
HOLDFAST=$(start "$WORK/holdfast.log" "listening " "$TARGET/release/examples/ai_standalone" "$WORK/holdfast.toml" 127.0.0.1:0)
HOLDFAST_PID=$(cat "$WORK/holdfast.log.pid")

LPORT=$(free_port)
cat >"$WORK/litellm.yaml" <<YAML
model_list:
  - model_name: bench
    litellm_params:
      model: openai/gpt-4o-mini
      api_base: $MOCK/v1
      api_key: sk-bench
YAML
export LITELLM_LOCAL_MODEL_COST_MAP=True
export LITELLM_MASTER_KEY=sk-holdfast-bench-0123456789abcdef0123456789
"$VENV/bin/litellm" --config "$WORK/litellm.yaml" --host 127.0.0.1 --port "$LPORT" >"$WORK/litellm.log" 2>&1 &
LITELLM_PID=$!
PIDS+=($LITELLM_PID)
for _ in $(seq 1 120); do
  curl -fs "http://127.0.0.1:$LPORT/health/liveliness" >/dev/null 2>&1 && break
  sleep 0.5
done
curl -fs "http://127.0.0.1:$LPORT/health/liveliness" >/dev/null || { tail -30 "$WORK/litellm.log"; exit 1; }
LITELLM="http://127.0.0.1:$LPORT"

LOAD="$TARGET/release/examples/ai_load"
run() { "$LOAD" "$1/v1/chat/completions" --key "$LITELLM_MASTER_KEY" --model bench "${@:2}"; }
field() { python3 -c "import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])" "$1" "$2"; }

echo "warming up..."
run "$MOCK" --rate 200 --secs 2 >/dev/null
run "$HOLDFAST" --rate 200 --secs 2 >/dev/null
run "$SERVE" --rate 200 --secs 2 >/dev/null
run "$LITELLM" --rate 50 --secs 3 >/dev/null

echo
echo "mock provider delay ${DELAY_MS} ms; ${SECS} s per run; $(nproc) cores; $(uname -r)"
echo
echo "Fixed rate, open loop. The mock alone, holdfast serve and the ai handler alone alternate for"
echo "$ROUNDS rounds (median of the rounds' added latency), so they see the same background load;"
echo "LiteLLM runs once per rate."
echo
echo "| rate (req/s) | target | round | ok | errors | p50 ms | p99 ms | added p50 ms | added p99 ms |"
echo "|---|---|---|---|---|---|---|---|---|"
med() { python3 -c "import statistics,sys; print(round(statistics.median(map(float,sys.argv[1:])),3))" "$@"; }
for rate in "$LOW_RATE" "$RATE"; do
  s50=(); s99=(); h50=(); h99=()
  for round in $(seq 1 "$ROUNDS"); do
    base=$(run "$MOCK" --rate "$rate" --secs "$SECS")
    bp50=$(field "$base" p50_ms); bp99=$(field "$base" p99_ms)
    echo "| $rate | mock directly | $round | $(field "$base" ok) | $(field "$base" errors) | $bp50 | $bp99 | - | - |"
    for name in serve handler; do
      url=$SERVE; label="holdfast serve"
      [ $name = handler ] && { url=$HOLDFAST; label="ai handler alone"; }
      r=$(run "$url" --rate "$rate" --secs "$SECS")
      p50=$(field "$r" p50_ms); p99=$(field "$r" p99_ms)
      add50=$(python3 -c "print(round($p50-$bp50,3))"); add99=$(python3 -c "print(round($p99-$bp99,3))")
      if [ $name = serve ]; then s50+=("$add50"); s99+=("$add99"); else h50+=("$add50"); h99+=("$add99"); fi
      echo "| $rate | $label | $round | $(field "$r" ok) | $(field "$r" errors) | $p50 | $p99 | $add50 | $add99 |"
    done
  done
  echo "| $rate | **holdfast serve, median of rounds** | | | | | | **$(med "${s50[@]}")** | **$(med "${s99[@]}")** |"
  echo "| $rate | **ai handler alone, median of rounds** | | | | | | **$(med "${h50[@]}")** | **$(med "${h99[@]}")** |"
  r=$(run "$LITELLM" --rate "$rate" --secs "$SECS")
  p50=$(field "$r" p50_ms); p99=$(field "$r" p99_ms)
  add50=$(python3 -c "print(round($p50-$bp50,3))"); add99=$(python3 -c "print(round($p99-$bp99,3))")
  echo "| $rate | litellm | 1 | $(field "$r" ok) | $(field "$r" errors) | $p50 | $p99 | $add50 | $add99 |"
done

echo
echo "| max throughput ($CONC concurrent, closed loop) | req/s | errors | p50 ms | p99 ms | peak RSS MiB |"
echo "|---|---|---|---|---|---|"
for name in serve handler litellm; do
  case $name in
    serve) url=$SERVE; pid=$SERVE_PID; label="holdfast serve" ;;
    handler) url=$HOLDFAST; pid=$HOLDFAST_PID; label="ai handler alone" ;;
    litellm) url=$LITELLM; pid=$LITELLM_PID; label="litellm" ;;
  esac
  r=$(run "$url" --closed "$CONC" --secs "$SECS")
  echo "| $label | $(field "$r" rps) | $(field "$r" errors) | $(field "$r" p50_ms) | $(field "$r" p99_ms) | $(( $(hwm_kb $pid) / 1024 )) |"
done
