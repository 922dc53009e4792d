#!/usr/bin/env bash
# A/B two holdfast builds on the plain proxy path, alternating rounds in one run.
# Usage: bench/ab.sh BIN_A BIN_B [ROUNDS=6] [SECS=4]
# Each binary runs `workers = 1` with the access log off in front of one nginx `return 200`
# upstream (port 18080); `wrk -t1 -c50` drives them in turn. Prints, per round and binary,
# requests/s, CPU µs per request (the gateway process, from /proc/PID/stat) and p99.
set -euo pipefail
A=$1; B=$2; R=${3:-6}; S=${4:-4}
TMP=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$TMP"; }
trap cleanup EXIT
cat > "$TMP/up.conf" <<CONF
worker_processes 1;
daemon off;
pid $TMP/up.pid;
error_log $TMP/up.err;
events { worker_connections 8192; }
http { access_log off; keepalive_requests 1000000;
  client_body_temp_path $TMP/b; proxy_temp_path $TMP/p; fastcgi_temp_path $TMP/f;
  uwsgi_temp_path $TMP/u; scgi_temp_path $TMP/s;
  server { listen 127.0.0.1:18080; location / { return 200 "ok\n"; } } }
CONF
nginx -c "$TMP/up.conf" & PIDS+=($!)
cfg() { cat > "$TMP/$1.toml" <<C
[server]
listen = ["127.0.0.1:$2"]
access_log = "off"
workers = 1
[upstreams.up]
targets = ["http://127.0.0.1:18080"]
[[routes]]
upstream = "up"
C
}
cfg a 18091; cfg b 18092
"$A" serve --config "$TMP/a.toml" 2>"$TMP/a.err" & PA=$!; PIDS+=($PA)
"$B" serve --config "$TMP/b.toml" 2>"$TMP/b.err" & PB=$!; PIDS+=($PB)
sleep 1
tick() { awk '{print $14+$15}' "/proc/$1/stat"; }
run() { # PID PORT -> "req/s cpu_us_per_request p99"
  local b a out rps n p99
  b=$(tick "$1"); out=$(wrk -t1 -c50 -d"${S}s" --latency "http://127.0.0.1:$2/"); a=$(tick "$1")
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out"); n=$(awk '/requests in/ {print $1}' <<<"$out")
  p99=$(awk '$1=="99%" {print $2}' <<<"$out")
  echo "$rps $(python3 -c "print(f'{($a-$b)*1e6/$(getconf CLK_TCK)/$n:.2f}')") $p99"
}
echo "round binary req/s cpu_us/req p99"
for r in $(seq 1 "$R"); do
  if [ $((r % 2)) = 1 ]; then
    echo "$r A $(run $PA 18091)"; echo "$r B $(run $PB 18092)"
  else
    echo "$r B $(run $PB 18092)"; echo "$r A $(run $PA 18091)"
  fi
done
