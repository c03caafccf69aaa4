#!/usr/bin/env bash
# ficbroker benchmarks: one command runs them all and writes bench/results/latest.md (the report)
# and bench/results/raw/ (every raw output the report is computed from).
#
#   bench/run.sh [BUILD_DIR]          BUILD_DIR defaults to ./build-bench (configured and built
#                                     here when needed: Release, FICBROKER_BUILD_BENCH=ON)
#
# Environment:
#   BENCH_QUICK=1        shorter runs everywhere (refresh-under-load: 60 s instead of 5 min)
#   BENCH_ONLY="a b"     subset of: micro throughput stampede refresh coldpath footprint
#   BENCH_PAIRS=N        throughput: ficbroker/nginx pairs (default 5; quick 3)
#   BENCH_DURATION=S     throughput: seconds per wrk run (default 10; quick 3)
#   BENCH_NO_BUILD=1     use BUILD_DIR as it is
#   BENCH_KEEP_WORK=1    keep the temporary directory (configs, logs, world file)
#
# Everything listens on 127.0.0.1 with ports chosen by the kernel (or found free a moment
# before, for nginx and the start-up probe). Every load loop is bounded in count and time.
# Servers run pinned to CPU 0 and load generators to CPU 1 where the benchmark says so.
set -Eeuo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD=${1:-$ROOT/build-bench}
[[ $BUILD = /* ]] || BUILD=$PWD/$BUILD
RESULTS=$ROOT/bench/results
RAW=$RESULTS/raw
PY=/usr/bin/python3
QUICK=${BENCH_QUICK:-0}
ONLY=${BENCH_ONLY:-micro throughput stampede refresh coldpath footprint}
if [[ $QUICK = 1 ]]; then
  PAIRS=${BENCH_PAIRS:-3}; DURATION=${BENCH_DURATION:-3}
  REFRESH_SECONDS=60; REFRESH_LIFETIME=320
  MISSES=50; COLD_RESTARTS=5; STARTUP_RUNS=20; MICRO_MIN_TIME=0.05
else
  PAIRS=${BENCH_PAIRS:-5}; DURATION=${BENCH_DURATION:-10}
  REFRESH_SECONDS=300; REFRESH_LIFETIME=420
  MISSES=200; COLD_RESTARTS=30; STARTUP_RUNS=20; MICRO_MIN_TIME=0.5
fi
STAMPEDE_N=1000
FOOTPRINT_KEYS=10000
REFRESH_DELAY_MS=500

TENANT=22222222-2222-2222-2222-222222222222
APP=cccccccc-0000-0000-0000-000000000001
UAMI=aaaaaaaa-0000-0000-0000-000000000001
RESOURCE=https://graph.microsoft.com

BROKER=$BUILD/src/ficbroker
EMULATOR=$BUILD/emulator/ficbroker-emulator
CACHE_BENCH=$BUILD/bench/ficbroker_cache_bench
STAMPEDE=$BUILD/bench/ficbroker_stampede
COLDPATH=$BUILD/bench/ficbroker_coldpath
STARTUP=$BUILD/bench/ficbroker_startup

WORK=$(mktemp -d /tmp/ficbroker-bench.XXXXXX)
PIDS=()

log() { printf '[bench %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

# ---- process bookkeeping: only what this script started, by pid ---------------------------------

stop_pid() {
  local pid=$1 i
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < 100; i++)); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  local kept=() p
  for p in "${PIDS[@]}"; do [[ $p = "$pid" ]] || kept+=("$p"); done
  PIDS=("${kept[@]}")
}

cleanup() {
  local p
  for p in "${PIDS[@]}"; do stop_pid "$p"; done
}

final_cleanup() {
  cleanup
  if [[ ${BENCH_KEEP_WORK:-0} = 1 ]]; then
    log "work directory kept: $WORK"
  else
    rm -rf "$WORK"
  fi
}
INTERRUPTED=0
trap final_cleanup EXIT
# Ctrl-C reaches every process of the foreground group: the running benchmark's subshell exits,
# its trap stops what it started, and the loop below stops before the next benchmark.
trap 'INTERRUPTED=1' INT TERM

# ---- helpers -------------------------------------------------------------------------------------

# Quotes a word for the command log only when it needs it.
shquote() {
  local w=$1
  if [[ $w = '&' ]]; then printf '&'; return; fi
  if [[ $w =~ ^[A-Za-z0-9_./:=,@%+-]+$ ]]; then printf '%s' "$w"; else printf "'%s'" "${w//\'/\'\\\'\'}"; fi
}
# Appends a command to raw/commands.tsv under a benchmark name (the report prints them).
record() {
  local bench=$1 line="" w
  shift
  for w in "$@"; do line+="$(shquote "$w") "; done
  printf '%s\t%s\n' "$bench" "${line% }" >>"$RAW/commands.tsv"
}
# Records and runs a command in the foreground.
run() {
  local bench=$1
  shift
  record "$bench" "$@"
  "$@"
}

json_get() { "$PY" -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"; }
free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }
# utime + stime in clock ticks of a pid, or of a pid and its children (nginx master + workers).
cpu_ticks() {
  local total=0 pid t
  for pid in "$@"; do
    t=$(awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$pid/stat" 2>/dev/null || echo 0)
    total=$((total + t))
  done
  echo "$total"
}
rss_kib() { awk -v k="${2:-VmRSS}:" '$1 == k { print $2 }' "/proc/$1/status"; }

wait_for_file() {
  local file=$1 pid=$2 timeout=${3:-30} i
  for ((i = 0; i < timeout * 50; i++)); do
    [[ -s $file ]] && return 0
    kill -0 "$pid" 2>/dev/null || die "process $pid exited before writing $file"
    sleep 0.02
  done
  die "timed out waiting for $file"
}

# start_emulator NAME [emulator args...]: sets EMU_PID EMU_HTTP EMU_HTTPS EMU_DIR.
# EMU_LOG=1 keeps the per-request log (needed by the cold-path benchmark).
start_emulator() {
  local name=$1
  shift
  EMU_DIR=$WORK/$name
  mkdir -p "$EMU_DIR"
  local args=(--http-listen 127.0.0.1:0 --https-listen 127.0.0.1:0 --ca-out "$EMU_DIR/ca.pem"
              --ready-file "$EMU_DIR/emu.ready")
  [[ ${EMU_LOG:-0} = 1 ]] || args+=(--quiet)
  record "$BENCH" "$EMULATOR" "${args[@]}" "$@" '&'
  "$EMULATOR" "${args[@]}" "$@" >"$EMU_DIR/emu.out" 2>"$EMU_DIR/emu.err" &
  EMU_PID=$!
  PIDS+=("$EMU_PID")
  wait_for_file "$EMU_DIR/emu.ready" "$EMU_PID" 60
  EMU_HTTP=$(json_get "$EMU_DIR/emu.ready" http)
  EMU_HTTPS=$(json_get "$EMU_DIR/emu.ready" https)
  log "emulator $name: pid $EMU_PID, http $EMU_HTTP, https $EMU_HTTPS"
}

emu() {  # emu METHOD PATH [JSON]
  if [[ $# -ge 3 ]]; then
    curl -sS -X "$1" -H 'Content-Type: application/json' --data "$3" "http://$EMU_HTTP$2"
  else
    curl -sS -X "$1" "http://$EMU_HTTP$2"
  fi
}

# broker_config FILE [extra top-level JSON members, with a trailing comma]
broker_config() {
  cat >"$1" <<EOF
{
  ${2:-}
  "listen": "${LISTEN:-127.0.0.1:0}",
  "log_level": "warn",
  "authority_host": "https://localhost:${EMU_HTTPS##*:}",
  "ca_file": "$EMU_DIR/ca.pem",
  "sources": {"uami": {"type": "imds", "endpoint": "http://$EMU_HTTP", "client_id": "$UAMI"}},
  "targets": [{"tenant_id": "$TENANT", "client_id": "$APP", "source": "uami", "default": true}],
  "cache": {"min_validity_seconds": 300${CACHE_EXTRA:-}}
}
EOF
}

# start_broker NAME CONFIG [pin CPU]: sets BROKER_PID BROKER_ADDR.
start_broker() {
  local name=$1 config=$2 cpu=${3:-} dir=$WORK/$1
  mkdir -p "$dir"
  rm -f "$dir/broker.ready"
  local pin=()
  [[ -n $cpu ]] && pin=(taskset -c "$cpu")
  record "$BENCH" "${pin[@]}" "$BROKER" --config "$config" --ready-file "$dir/broker.ready" '&'
  "${pin[@]}" "$BROKER" --config "$config" --ready-file "$dir/broker.ready" \
    >>"$dir/broker.out" 2>>"$dir/broker.err" &
  BROKER_PID=$!
  PIDS+=("$BROKER_PID")
  wait_for_file "$dir/broker.ready" "$BROKER_PID" 30
  BROKER_ADDR=$(json_get "$dir/broker.ready" listen)
}

token_url() { echo "http://$BROKER_ADDR/token?resource=${1:-$RESOURCE}"; }
get_token() { curl -sS -o "${2:-/dev/null}" -w '%{http_code}' -H 'Metadata: true' "$(token_url "$1")"; }
metric() { curl -sS "http://$BROKER_ADDR/metrics" | awk -v n="$1" '$1 == n { print $2 }'; }

world_file() {  # the built-in world plus FOOTPRINT_KEYS resources https://res-N.example in $TENANT
  local out=$WORK/world.json
  if [[ ! -s $out ]]; then
    "$EMULATOR" --print-default-world | "$PY" -c '
import json, sys
world = json.load(sys.stdin)
for t in world["tenants"]:
    if t["id"] == sys.argv[1]:
        t["resources"] += ["https://res-%d.example" % i for i in range(int(sys.argv[2]))]
json.dump(world, open(sys.argv[3], "w"))
' "$TENANT" "$FOOTPRINT_KEYS" "$out"
  fi
  echo "$out"
}

# ---- 6. microbenchmarks --------------------------------------------------------------------------

bench_micro() {
  log "microbenchmarks (Google Benchmark, pinned to CPU 0)"
  run micro taskset -c 0 "$CACHE_BENCH" --benchmark_min_time="$MICRO_MIN_TIME" \
    --benchmark_out="$RAW/micro.json" --benchmark_out_format=json | tee "$RAW/micro.txt"
}

# ---- 1. cache-hit throughput vs nginx -----------------------------------------------------------

bench_throughput() {
  start_emulator throughput
  local dir=$WORK/throughput
  broker_config "$dir/ficbroker.json"
  start_broker throughput "$dir/ficbroker.json" 0
  log "ficbroker pid $BROKER_PID on $BROKER_ADDR (CPU 0); priming the cache"
  [[ $(get_token "$RESOURCE" "$dir/body.json") = 200 ]] || die "priming request failed"
  [[ $(get_token "$RESOURCE" "$dir/body.json") = 200 ]] || die "second request failed"
  [[ $(metric ficbroker_cache_hits_total) -ge 1 ]] || die "second request was not a cache hit"

  # nginx serving a file with the same bytes as ficbroker's body.
  local ng=$dir/nginx port
  mkdir -p "$ng/www"
  cp "$dir/body.json" "$ng/www/token"
  port=$(free_port)
  cat >"$ng/nginx.conf" <<EOF
# Generated by bench/run.sh: one worker, no access log, a static file equal to ficbroker's body.
worker_processes 1;
daemon off;
pid $ng/nginx.pid;
error_log $ng/error.log warn;
$([[ $(id -u) = 0 ]] && echo "user root;")
events { worker_connections 1024; }
http {
  access_log off;
  server_tokens off;
  etag off;
  open_file_cache max=16 inactive=600s;
  open_file_cache_valid 600s;
  keepalive_requests 100000000;
  keepalive_timeout 75s;
  types { }
  default_type application/json;
  server {
    listen 127.0.0.1:$port;
    location = /token { root $ng/www; }
  }
}
EOF
  record throughput taskset -c 0 nginx -p "$ng" -e "$ng/error.log" -c "$ng/nginx.conf" '&'
  taskset -c 0 nginx -p "$ng" -e "$ng/error.log" -c "$ng/nginx.conf" >"$ng/out" 2>&1 &
  local nginx_pid=$! i
  PIDS+=("$nginx_pid")
  for ((i = 0; ; i++)); do
    [[ $(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/token" || true) = 200 ]] && break
    kill -0 "$nginx_pid" 2>/dev/null || die "nginx exited: $(cat "$ng/error.log" 2>/dev/null)"
    ((i < 250)) || die "nginx did not answer on 127.0.0.1:$port"
    sleep 0.02
  done
  local nginx_url="http://127.0.0.1:$port/token?resource=$RESOURCE"
  curl -sS -o "$ng/body" -H 'Metadata: true' "$nginx_url"
  cmp -s "$ng/body" "$dir/body.json" || die "nginx does not serve ficbroker's bytes"
  curl -sS -D "$RAW/throughput-ficbroker-response-head.txt" -o /dev/null -H 'Metadata: true' "$(token_url)"
  curl -sS -D "$RAW/throughput-nginx-response-head.txt" -o /dev/null -H 'Metadata: true' "$nginx_url"
  cp "$ng/nginx.conf" "$RAW/throughput-nginx.conf"
  wc -c <"$dir/body.json" >"$RAW/throughput-body-bytes.txt"
  local workers
  workers=$(pgrep -P "$nginx_pid" | tr '\n' ' ')
  log "nginx master $nginx_pid, worker(s) $workers on 127.0.0.1:$port (CPU 0)"

  local wrk_args=(-t1 -c64 -d"${DURATION}s" --latency -H 'Metadata: true')
  # Warm-up, discarded.
  taskset -c 1 wrk -t1 -c64 -d2s -H 'Metadata: true' "$(token_url)" >/dev/null
  taskset -c 1 wrk -t1 -c64 -d2s -H 'Metadata: true' "$nginx_url" >/dev/null
  local pair server url pids before after wall0 wall1 TIMEFORMAT='%3R %3U %3S'
  for ((pair = 1; pair <= PAIRS; pair++)); do
    for server in ficbroker nginx; do
      if [[ $server = ficbroker ]]; then url=$(token_url); pids=$BROKER_PID; else url=$nginx_url; pids="$nginx_pid $workers"; fi
      log "throughput pair $pair/$PAIRS: $server (${DURATION}s, load $(loadavg))"
      record throughput taskset -c 1 wrk "${wrk_args[@]}" "$url"
      before=$(cpu_ticks $pids)
      wall0=$(date +%s.%N)
      { time taskset -c 1 wrk "${wrk_args[@]}" "$url" >"$RAW/throughput-$pair-$server.wrk"; } 2>"$RAW/throughput-$pair-$server.wrktime"
      wall1=$(date +%s.%N)
      after=$(cpu_ticks $pids)
      printf 'server_cpu_ticks=%s clk_tck=%s wall_s=%s load=%s\n' "$((after - before))" "$(getconf CLK_TCK)" \
"$(awk -v a="$wall0" -v b="$wall1" 'BEGIN { printf "%.3f", b - a }')" "$(loadavg | tr ' ' ,)" >"$RAW/throughput-$pair-$server.cpu"
    done
  done
  stop_pid "$nginx_pid"
}

# ---- 2. stampede ---------------------------------------------------------------------------------

stampede_once() {  # stampede_once TAG DELAY_MS
  local tag=$1 delay=$2 dir=$WORK/stampede
  emu POST /_emulator/reset >/dev/null
  emu POST /_emulator/settings "{\"delay_ms\":$delay}" >/dev/null
  start_broker stampede "$dir/ficbroker.json" 0
  log "stampede ($tag): $STAMPEDE_N connections, then $STAMPEDE_N requests for one key; upstream delay ${delay} ms"
  local rss0
  rss0=$(rss_kib "$BROKER_PID")
  local rc=0
  run stampede taskset -c 1 "$STAMPEDE" --port "${BROKER_ADDR##*:}" --connections "$STAMPEDE_N" \
    --path "/token?resource=$RESOURCE" --header 'Metadata: true' --timeout-ms 60000 \
    --latencies "$RAW/stampede-$tag-latencies.txt" >"$RAW/stampede-$tag.json" || rc=$?
  emu GET /_emulator/stats >"$RAW/stampede-$tag-emulator-stats.json"
  curl -sS "http://$BROKER_ADDR/metrics" >"$RAW/stampede-$tag-metrics.txt"
  local rss1
  rss1=$(rss_kib "$BROKER_PID")
  sleep 3  # every client connection is closed by now: does the memory go back?
  printf 'rss_before_kib=%s rss_after_kib=%s rss_3s_later_kib=%s hwm_kib=%s open_connections=%s client_exit=%s\n' \
    "$rss0" "$rss1" "$(rss_kib "$BROKER_PID")" "$(rss_kib "$BROKER_PID" VmHWM)" \
    "$(metric ficbroker_connections_open)" "$rc" >"$RAW/stampede-$tag-broker.txt"
  cat "$RAW/stampede-$tag.json" >&2
  stop_pid "$BROKER_PID"
}

bench_stampede() {
  start_emulator stampede
  broker_config "$WORK/stampede/ficbroker.json"
  stampede_once nodelay 0
  stampede_once delay500 500
}

# ---- 3. refresh under load -----------------------------------------------------------------------

bench_refresh() {
  local resources="https://graph.microsoft.com https://vault.azure.net https://storage.azure.com"
  start_emulator refresh --token-lifetime "$REFRESH_LIFETIME"
  emu POST /_emulator/settings "{\"token_lifetime\":$REFRESH_LIFETIME,\"delay_ms\":$REFRESH_DELAY_MS}" \
    >"$RAW/refresh-emulator-settings.json"
  record refresh curl -X POST "http://EMULATOR/_emulator/settings" --data \
    "{\"token_lifetime\":$REFRESH_LIFETIME,\"delay_ms\":$REFRESH_DELAY_MS}"
  local dir=$WORK/refresh r
  broker_config "$dir/ficbroker.json"
  start_broker refresh "$dir/ficbroker.json" 0
  log "refresh under load: priming $(wc -w <<<"$resources") keys (each upstream call takes ${REFRESH_DELAY_MS} ms)"
  for r in $resources; do
    [[ $(get_token "$r") = 200 ]] || die "priming $r failed"
  done
  emu GET /_emulator/stats >"$RAW/refresh-emulator-stats-before.json"
  curl -sS "http://$BROKER_ADDR/metrics" >"$RAW/refresh-metrics-before.txt"

  # Sample each key's expiry every 2 s while wrk runs: a jump up is a background refresh.
  (
    end=$((SECONDS + REFRESH_SECONDS + 15))
    while ((SECONDS < end)); do
      printf '# t=%s\n' "$(date +%s)"
      curl -sS --max-time 2 "http://$BROKER_ADDR/metrics" | grep '^ficbroker_token_expiry_seconds' || true
      sleep 2
    done
  ) >"$RAW/refresh-expiry-samples.txt" 2>/dev/null &
  local sampler=$!
  PIDS+=("$sampler")

  log "refresh under load: wrk -c16 for ${REFRESH_SECONDS}s (token lifetime ${REFRESH_LIFETIME}s, floor 300s; load $(loadavg))"
  local rc=0
  run refresh env BENCH_REFRESH_RESOURCES="$resources" taskset -c 1 wrk -t1 -c16 -d"${REFRESH_SECONDS}s" \
    --latency --timeout 2s -s "$ROOT/bench/refresh.lua" "http://$BROKER_ADDR/" >"$RAW/refresh.wrk" || rc=$?
  stop_pid "$sampler"
  emu GET /_emulator/stats >"$RAW/refresh-emulator-stats-after.json"
  curl -sS "http://$BROKER_ADDR/metrics" >"$RAW/refresh-metrics-after.txt"
  { printf '# t=%s (after wrk)\n' "$(date +%s)"; grep '^ficbroker_token_expiry_seconds' "$RAW/refresh-metrics-after.txt"; } \
    >>"$RAW/refresh-expiry-samples.txt"
  printf 'resources=%s\nseconds=%s\ntoken_lifetime=%s\ndelay_ms=%s\nwrk_exit=%s\n' "$resources" \
    "$REFRESH_SECONDS" "$REFRESH_LIFETIME" "$REFRESH_DELAY_MS" "$rc" >"$RAW/refresh-params.txt"
  cat "$RAW/refresh.wrk" >&2
}

# ---- 4. cold-path overhead -----------------------------------------------------------------------

bench_coldpath() {
  local world
  world=$(world_file)
  EMU_LOG=1 start_emulator coldpath --world "$world"
  local dir=$WORK/coldpath common
  broker_config "$dir/ficbroker.json"
  common=(--imds "$EMU_HTTP" --entra "$EMU_HTTPS" --ca "$EMU_DIR/ca.pem" --tenant "$TENANT"
          --app "$APP" --uami "$UAMI")

  start_broker coldpath "$dir/ficbroker.json"
  log "cold path A: $MISSES misses on distinct resources (assertion cached, pooled connections)"
  run coldpath "$COLDPATH" misses --broker "$BROKER_ADDR" "${common[@]}" --prefix https://res- \
    --suffix .example --from 0 --count "$MISSES" >"$RAW/coldpath-misses.txt"
  stop_pid "$BROKER_PID"

  log "cold path B: $COLD_RESTARTS first requests on a freshly started ficbroker"
  : >"$RAW/coldpath-cold.txt"
  local i
  for ((i = 1; i <= COLD_RESTARTS; i++)); do
    start_broker coldpath "$dir/ficbroker.json"
    [[ $i = 1 ]] && record coldpath "$COLDPATH" cold --broker "$BROKER_ADDR" "${common[@]}" --resource "$RESOURCE"
    "$COLDPATH" cold --broker "$BROKER_ADDR" "${common[@]}" --resource "$RESOURCE" >>"$RAW/coldpath-cold.txt"
    stop_pid "$BROKER_PID"
  done
  # The emulator's request log: its own time for every call (X-Emulator-Time-Us).
  cp "$EMU_DIR/emu.out" "$RAW/coldpath-emulator-log.txt"
}

# ---- 5. footprint --------------------------------------------------------------------------------

bench_footprint() {
  local world
  world=$(world_file)
  start_emulator footprint --world "$world"
  local dir=$WORK/footprint
  mkdir -p "$dir"
  # max_entries: the 10,000 tokens are over the default bounds (10,000 caller keys in total,
  # 1,000 per target).
  CACHE_EXTRA=', "max_entries": 20000, "max_entries_per_target": 20000' broker_config "$dir/ficbroker.json"
  start_broker footprint "$dir/ficbroker.json"
  sleep 1
  {
    echo "idle_vmrss_kib=$(rss_kib "$BROKER_PID")"
    echo "idle_rssanon_kib=$(rss_kib "$BROKER_PID" RssAnon)"
    echo "idle_rssfile_kib=$(rss_kib "$BROKER_PID" RssFile)"
  } >"$RAW/footprint.txt"
  cp "/proc/$BROKER_PID/smaps_rollup" "$RAW/footprint-idle-smaps_rollup.txt" 2>/dev/null || true
  log "footprint: idle VmRSS $(rss_kib "$BROKER_PID") KiB; caching $FOOTPRINT_KEYS tokens"
  run footprint "$COLDPATH" fill --broker "$BROKER_ADDR" --prefix https://res- --suffix .example \
    --from 0 --count "$FOOTPRINT_KEYS" --connections 8 | tee "$RAW/footprint-fill.txt"
  sleep 1
  {
    echo "entries=$(metric ficbroker_cache_entries)"
    echo "evictions=$(metric ficbroker_cache_evictions_total)"
    echo "full_vmrss_kib=$(rss_kib "$BROKER_PID")"
    echo "full_rssanon_kib=$(rss_kib "$BROKER_PID" RssAnon)"
    echo "full_vmhwm_kib=$(rss_kib "$BROKER_PID" VmHWM)"
    curl -sS -o "$WORK/metrics.txt" -w 'metrics_bytes=%{size_download}\nmetrics_seconds=%{time_total}\n' \
      "http://$BROKER_ADDR/metrics"
    echo "metrics_lines=$(wc -l <"$WORK/metrics.txt")"
    echo "after_metrics_vmrss_kib=$(rss_kib "$BROKER_PID")"
  } >>"$RAW/footprint.txt"
  cp "/proc/$BROKER_PID/smaps_rollup" "$RAW/footprint-full-smaps_rollup.txt" 2>/dev/null || true
  cat "$RAW/footprint.txt" >&2
  stop_pid "$BROKER_PID"

  log "footprint: start-to-ready, $STARTUP_RUNS runs"
  LISTEN='127.0.0.1:@PORT@' broker_config "$dir/startup-template.json"
  run footprint "$STARTUP" --binary "$BROKER" --config-template "$dir/startup-template.json" \
    --workdir "$dir" --runs "$STARTUP_RUNS" | tee "$RAW/footprint-startup.txt"
}

# ---- main ----------------------------------------------------------------------------------------

main() {
  command -v wrk >/dev/null && command -v nginx >/dev/null && command -v taskset >/dev/null \
    && command -v curl >/dev/null && command -v pgrep >/dev/null || {
    if [[ $(id -u) = 0 ]]; then
      log "installing wrk, nginx-light, curl, procps"
      apt-get install -y wrk nginx-light curl procps util-linux >&2
    else
      die "needs wrk, nginx (nginx-light), taskset, curl and pgrep"
    fi
  }
  [[ -x $PY ]] || die "needs $PY"
  [[ $(nproc) -ge 2 ]] || log "warning: fewer than 2 CPUs; pinning to CPU 1 will fail"

  if [[ ${BENCH_NO_BUILD:-0} != 1 ]]; then
    if [[ ! -f $BUILD/CMakeCache.txt ]]; then
      log "configuring $BUILD"
      cmake -S "$ROOT" -B "$BUILD" -G Ninja -DCMAKE_BUILD_TYPE=Release -DFICBROKER_BUILD_TESTS=OFF \
        -DFICBROKER_BUILD_BENCH=ON >&2
    fi
    log "building $BUILD"
    cmake --build "$BUILD" --target ficbroker ficbroker-emulator ficbroker_cache_bench \
      ficbroker_stampede ficbroker_coldpath ficbroker_startup >&2
  fi
  local b
  for b in "$BROKER" "$EMULATOR" "$CACHE_BENCH" "$STAMPEDE" "$COLDPATH" "$STARTUP"; do
    [[ -x $b ]] || die "missing $b (build with -DFICBROKER_BUILD_BENCH=ON)"
  done

  rm -rf "$RAW"
  mkdir -p "$RAW"
  : >"$RAW/commands.tsv"
  {
    echo "date=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "git_commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
    echo "git_dirty=$(git -C "$ROOT" status --porcelain -- src include emulator 2>/dev/null | wc -l)"
    echo "build_type=$(awk -F= '/^CMAKE_BUILD_TYPE:/ { print $2 }' "$BUILD/CMakeCache.txt" 2>/dev/null)"
    echo "kernel=$(uname -r)"
    echo "cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)"
    echo "cpus=$(nproc)"
    echo "hypervisor=$(lscpu 2>/dev/null | awk -F': *' '/Hypervisor vendor/ { print $2 }')"
    echo "mem_total=$(awk '/MemTotal/ { print $2 " kB" }' /proc/meminfo)"
    echo "load_start=$(loadavg)"
    echo "quick=$QUICK"
    echo "wrk=$(dpkg-query -W -f='${Version}' wrk 2>/dev/null || echo unknown)"
    echo "nginx=$(nginx -v 2>&1 | sed 's/.*: //')"
    echo "only=$ONLY"
    echo "build_dir=$BUILD"
    echo "work_dir=$WORK"
    echo "root=$ROOT"
  } >"$RAW/meta.txt"

  local status=0
  for BENCH in micro throughput stampede refresh coldpath footprint; do
    [[ " $ONLY " = *" $BENCH "* ]] || continue
    log "=== $BENCH (load $(loadavg)) ==="
    echo "$BENCH load_before=$(loadavg)" >>"$RAW/load.txt"
    local t0=$SECONDS rc=0
    # Each benchmark in its own subshell: a failure ends that benchmark (its processes are
    # stopped by its own trap) and the others still run. Not `( … ) || rc=$?`: errexit would be
    # off inside the subshell.
    set +e
    (
      set -e
      trap cleanup EXIT
      trap 'exit 130' INT TERM
      PIDS=()
      "bench_$BENCH"
    )
    rc=$?
    set -e
    echo "$BENCH rc=$rc seconds=$((SECONDS - t0)) load_after=$(loadavg)" >>"$RAW/load.txt"
    if [[ $INTERRUPTED = 1 || $rc = 130 ]]; then
      log "interrupted during $BENCH; not starting the rest"
      INTERRUPTED=1
      status=130
      break
    fi
    if [[ $rc != 0 ]]; then
      log "$BENCH failed (exit $rc); continuing"
      status=1
    fi
  done
  echo "load_end=$(loadavg)" >>"$RAW/meta.txt"
  [[ $INTERRUPTED = 1 ]] && echo "interrupted=1" >>"$RAW/meta.txt"

  log "writing $RESULTS/latest.md"
  "$PY" "$ROOT/bench/report.py" "$RAW" "$RESULTS/latest.md"
  log "done: $RESULTS/latest.md (raw outputs in $RAW)"
  return "$status"
}

main "$@"
