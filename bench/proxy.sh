#!/usr/bin/env bash
# Holdfast vs nginx vs haproxy as reverse proxies (one worker each) in front of one nginx
# upstream answering a fixed 200, driven by wrk; then a fault mix behind each proxy.
# Usage: bench/proxy.sh            (SECS=10 CONNS=50 ROUNDS=3 to change the run)
#        BASELINE=/path/to/older/holdfast bench/proxy.sh   adds that build as `hf-base` to the
#        throughput rounds (same config, port 18084), for before/after comparisons in one run.
# Throughput rounds alternate the proxies (the order rotates each round) and report medians,
# plus each proxy's CPU time per request split into user space and kernel, from /proc.
# Needs: nginx haproxy wrk (apt), a release build (done here).
set -euo pipefail
cd "$(dirname "$0")/.."
SECS=${SECS:-10}
CONNS=${CONNS:-50}
ROUNDS=${ROUNDS:-3}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
cargo build --release -q -p holdfast-cli -p holdfast-testkit --bins --examples
HF="$CARGO_TARGET_DIR/release/holdfast"
MIS="$CARGO_TARGET_DIR/release/examples/misbehave"
TMP=$(mktemp -d /tmp/holdfast-bench.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  exec 3>&- 2>/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT

nginx_conf() { # $1 = name, $2 = http block body
  cat > "$TMP/$1.conf" <<CONF
worker_processes 1;
daemon off;
pid $TMP/$1.pid;
error_log $TMP/$1.err;
events { worker_connections 8192; }
http {
  access_log off;
  keepalive_requests 1000000;
  client_body_temp_path $TMP/$1-body; proxy_temp_path $TMP/$1-proxy;
  fastcgi_temp_path $TMP/$1-fcgi; uwsgi_temp_path $TMP/$1-uwsgi; scgi_temp_path $TMP/$1-scgi;
  $2
}
CONF
  nginx -c "$TMP/$1.conf" & PIDS+=($!)
  LAST_PID=$!
}

haproxy_conf() { # $1 = name, $2 = port, $3 = server lines
  cat > "$TMP/$1.cfg" <<CONF
global
  nbthread 1
  maxconn 4000
defaults
  mode http
  timeout connect 2s
  timeout client 30s
  timeout server 30s
  retries 3
  option redispatch
  retry-on conn-failure empty-response junk-response response-timeout
  http-reuse always
frontend f
  bind 127.0.0.1:$2
  default_backend b
backend b
  balance roundrobin
$3
CONF
  haproxy -f "$TMP/$1.cfg" -db & PIDS+=($!)
  LAST_PID=$!
}

holdfast_conf() { # $1 = name, $2 = port, $3 = targets (TOML list body), $4 = binary (default: this build)
  cat > "$TMP/$1.toml" <<CONF
[server]
listen = ["127.0.0.1:$2"]
access_log = "off"
workers = 1
[upstreams.up]
targets = [$3]
[[routes]]
upstream = "up"
CONF
  "${4:-$HF}" serve --config "$TMP/$1.toml" 2>"$TMP/$1.err" & PIDS+=($!)
  LAST_PID=$!
}

cpu_ticks() { # PID -> "utime stime" in clock ticks (all threads)
  awk '{print $14, $15}' "/proc/$1/stat"
}
median() { python3 -c "import statistics,sys; print(f'{statistics.median(map(float,sys.argv[1:])):.2f}')" "$@"; }

run_wrk() { # $1 = url -> "rps p99_ms errors requests"
  local out
  out=$(wrk -t1 -c"$CONNS" -d"${SECS}s" --latency "$1" 2>&1)
  local rps p99 reqs non2xx sock
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p99=$(awk '$1=="99%" {v=$2; if (v ~ /us$/) {sub(/us/,"",v); v=v/1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v=v*1000}; print v}' <<<"$out")
  reqs=$(awk '/requests in/ {print $1}' <<<"$out")
  non2xx=$(awk '/Non-2xx/ {print $NF}' <<<"$out")
  sock=$(awk '/Socket errors/ {gsub(",",""); print $4+$6+$8+$10}' <<<"$out")
  echo "$rps ${p99:-0} $(( ${non2xx:-0} + ${sock:-0} )) ${reqs:-0}"
}

wait_port() { for _ in $(seq 1 100); do (exec 9<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 never opened" >&2; return 1; }

# --- Throughput: one upstream, three proxies -------------------------------------------------
declare -A PID_OF
nginx_conf upstream 'server { listen 127.0.0.1:18080; location / { return 200 "ok\n"; } }'
nginx_conf nginxproxy 'upstream up { server 127.0.0.1:18080; keepalive 64; }
  server { listen 127.0.0.1:18082; location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection ""; } }'
NGINX_MASTER=$LAST_PID
haproxy_conf haproxy 18083 "  server s1 127.0.0.1:18080"
PID_OF[haproxy]=$LAST_PID
holdfast_conf holdfast 18081 '"http://127.0.0.1:18080"'
PID_OF[holdfast]=$LAST_PID
PORTS=(18080 18081 18082 18083)
if [ -n "${BASELINE:-}" ]; then
  holdfast_conf hfbase 18084 '"http://127.0.0.1:18080"' "$BASELINE"
  PID_OF[hf-base]=$LAST_PID
  PORTS+=(18084)
fi
for p in "${PORTS[@]}"; do wait_port $p; done
# nginx answers from its one worker process, the master's child.
PID_OF[nginx]=$(pgrep -P "$NGINX_MASTER" | head -1)
PID_OF[direct]=""
declare -A PORT_OF=([direct]=18080 [holdfast]=18081 [nginx]=18082 [haproxy]=18083 [hf-base]=18084)

echo "== throughput: wrk -t1 -c$CONNS -d${SECS}s, one worker per proxy, $ROUNDS rounds =="
printf "%-6s %-10s %12s %10s %8s %12s %12s\n" round proxy "req/s" "p99 ms" errors "user us/req" "sys us/req"
declare -A RPS P99 UCPU SCPU
ORDER=(direct holdfast nginx haproxy)
[ -n "${BASELINE:-}" ] && ORDER+=(hf-base)
HZ=$(getconf CLK_TCK)
for r in $(seq 1 "$ROUNDS"); do
  for name in "${ORDER[@]}"; do
    pid=${PID_OF[$name]}
    [ -n "$pid" ] && read -r u0 s0 < <(cpu_ticks "$pid")
    read -r rps p99 errs reqs < <(run_wrk "http://127.0.0.1:${PORT_OF[$name]}/")
    user=-; sys=-
    if [ -n "$pid" ] && [ "${reqs:-0}" -gt 0 ]; then
      read -r u1 s1 < <(cpu_ticks "$pid")
      user=$(awk -v t=$((u1 - u0)) -v n="$reqs" -v hz="$HZ" 'BEGIN{printf "%.2f", t*1e6/hz/n}')
      sys=$(awk -v t=$((s1 - s0)) -v n="$reqs" -v hz="$HZ" 'BEGIN{printf "%.2f", t*1e6/hz/n}')
      UCPU[$name]+=" $user"; SCPU[$name]+=" $sys"
    fi
    RPS[$name]+=" $rps"; P99[$name]+=" $p99"
    printf "%-6s %-10s %12s %10s %8s %12s %12s\n" "$r" "$name" "$rps" "$p99" "$errs" "$user" "$sys"
  done
  # Rotate the proxies' order so no one always runs first (or right after the direct run).
  ORDER=("${ORDER[0]}" "${ORDER[@]:2}" "${ORDER[1]}")
done
echo
echo "medians over $ROUNDS rounds:"
printf "%-10s %12s %10s %12s %12s\n" proxy "req/s" "p99 ms" "user us/req" "sys us/req"
declare -A MRPS MP99
for name in "${ORDER[@]}"; do
  # shellcheck disable=SC2086
  MRPS[$name]=$(median ${RPS[$name]}); MP99[$name]=$(median ${P99[$name]})
  mu=-; ms=-
  # shellcheck disable=SC2086
  if [ -n "${UCPU[$name]:-}" ]; then mu=$(median ${UCPU[$name]}); ms=$(median ${SCPU[$name]}); fi
  printf "%-10s %12.0f %10.2f %12s %12s\n" "$name" "${MRPS[$name]}" "${MP99[$name]}" "$mu" "$ms"
done
best=nginx; awk -v a="${MRPS[haproxy]}" -v b="${MRPS[nginx]}" 'BEGIN{exit !(a>b)}' && best=haproxy
awk -v h="${MRPS[holdfast]}" -v b="${MRPS[$best]}" -v hp="${MP99[holdfast]}" -v bp="${MP99[$best]}" -v n="$best" \
  'BEGIN{printf "holdfast / best peer (%s), medians: throughput %.2fx, p99 %.2fx\n", n, h/b, hp/bp}'
if [ -n "${BASELINE:-}" ]; then
  awk -v h="${MRPS[holdfast]}" -v b="${MRPS[hf-base]}" -v hp="${MP99[holdfast]}" -v bp="${MP99[hf-base]}" \
    'BEGIN{printf "holdfast / baseline build, medians: throughput %.2fx, p99 %.2fx\n", h/b, hp/bp}'
fi

# --- Fault mix: the same misbehaving set behind each proxy ------------------------------------
exec 3> >("$MIS" idle-close:200 reset-on-accept > "$TMP/mis.txt")
sleep 0.5
mapfile -t MISURLS < "$TMP/mis.txt"
REFUSED=127.0.0.1:18099   # nothing listens here
IDLE=${MISURLS[0]#http://}; RESET=${MISURLS[1]#http://}
holdfast_conf holdfastfault 18091 "\"http://127.0.0.1:18080\", \"http://$IDLE\", \"http://$RESET\", \"http://$REFUSED\""
nginx_conf nginxfault "upstream up { server 127.0.0.1:18080; server $IDLE; server $RESET; server $REFUSED; keepalive 64; }
  server { listen 127.0.0.1:18092; location / { proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection \"\"; } }"
haproxy_conf haproxyfault 18093 "  server s1 127.0.0.1:18080
  server s2 $IDLE
  server s3 $RESET
  server s4 $REFUSED"
for p in 18091 18092 18093; do wait_port $p; done
echo
echo "== fault mix: targets = nginx 200, idle-close 200 ms, reset-on-accept, refused port =="
printf "%-10s %12s %10s %14s\n" proxy "req/s" errors "errors/10k"
for entry in "holdfast 18091" "nginx 18092" "haproxy 18093"; do
  set -- $entry
  read -r rps _ errs reqs < <(run_wrk "http://127.0.0.1:$2/")
  per=$(awk -v e="$errs" -v r="$reqs" 'BEGIN{ if (r>0) printf "%.2f", e*10000/r; else print "n/a"}')
  printf "%-10s %12s %10s %14s\n" "$1" "$rps" "$errs" "$per"
done
