#!/usr/bin/env bash
# Soak: ficbroker under steady load for 60 s while its refreshes fail and its upstream connections
# are reset now and then. Short token lifetimes make background refreshes happen every ~20 s.
#
#   BUILD_DIR=build-it tests/soak/soak.sh
#
# Builds nothing: it runs $BUILD_DIR/src/ficbroker and $BUILD_DIR/emulator/ficbroker-emulator.
# Loopback only; bounded (about 90 s). Samples the broker's RSS and open fds from /proc every 5 s
# and checks: no failed client request while a valid token was cached, at least one background
# refresh, RSS growth <= 2 MiB from the 10 s mark to the end, fd count within +-4.
# Ends with "soak: N passed, M failed"; exits non-zero if anything failed.
set -u -o pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BUILD_DIR=${BUILD_DIR:-}
if [[ -z "$BUILD_DIR" ]]; then
  echo "soak: set BUILD_DIR to a build directory (e.g. BUILD_DIR=build-it)" >&2
  exit 2
fi
[[ "$BUILD_DIR" = /* ]] || BUILD_DIR="$ROOT/$BUILD_DIR"
BROKER_BIN="$BUILD_DIR/src/ficbroker"
EMULATOR_BIN="$BUILD_DIR/emulator/ficbroker-emulator"
for bin in "$BROKER_BIN" "$EMULATOR_BIN"; do
  [[ -x "$bin" ]] || { echo "soak: $bin is missing: build it first" >&2; exit 2; }
done
for tool in curl jq; do
  command -v "$tool" >/dev/null || { echo "soak: $tool is required (apt-get install -y $tool)" >&2; exit 2; }
done

DURATION=${SOAK_DURATION:-60}       # seconds of load
SAMPLE_EVERY=5                      # seconds between RSS/fd samples
TOKEN_LIFETIME=40                   # Entra token lifetime at the emulator
MIN_VALIDITY=10                     # broker floor: servable 30 s, refreshed at ~20-22 s
RESOURCE=https://graph.microsoft.com

WORK=$(mktemp -d /tmp/ficbroker-soak.XXXXXX)
EMULATOR_PID=""
BROKER_PID=""
LOAD_PID=""
FAULTS_PID=""
cleanup() {
  for pid in "$FAULTS_PID" "$LOAD_PID" "$BROKER_PID" "$EMULATOR_PID"; do
    [[ -n "$pid" ]] && kill "$pid" 2>/dev/null
  done
  for pid in "$FAULTS_PID" "$LOAD_PID" "$BROKER_PID" "$EMULATOR_PID"; do
    [[ -n "$pid" ]] && wait "$pid" 2>/dev/null
  done
  rm -rf "$WORK"
}
trap cleanup EXIT

PASSED=0
FAILED=0
check() {  # check "description" <test command...>
  local what=$1
  shift
  if "$@"; then
    PASSED=$((PASSED + 1))
    echo "soak: PASS $what"
  else
    FAILED=$((FAILED + 1))
    echo "soak: FAIL $what"
  fi
}

wait_for_file() {  # wait_for_file FILE SECONDS
  local i
  for ((i = 0; i < $2 * 10; i++)); do
    [[ -s "$1" ]] && return 0
    sleep 0.1
  done
  return 1
}

# --- the emulator and the broker ---------------------------------------------------------------
"$EMULATOR_BIN" --http-listen 127.0.0.1:0 --https-listen 127.0.0.1:0 --ca-out "$WORK/ca.pem" \
  --ready-file "$WORK/emulator.ready" --token-lifetime "$TOKEN_LIFETIME" --quiet \
  >"$WORK/emulator.log" 2>&1 &
EMULATOR_PID=$!
wait_for_file "$WORK/emulator.ready" 30 || { echo "soak: the emulator did not start" >&2; cat "$WORK/emulator.log" >&2; exit 1; }
EMU_HTTP=$(jq -r .http "$WORK/emulator.ready")
EMU_HTTPS_PORT=$(jq -r .https "$WORK/emulator.ready" | sed 's/.*://')
CONTROL="http://$EMU_HTTP/_emulator"

cat >"$WORK/broker.jsonc" <<JSON
{
  "listen": "127.0.0.1:0",
  "authority_host": "https://localhost:$EMU_HTTPS_PORT",
  "ca_file": "$WORK/ca.pem",
  "log_level": "warn",
  "cache": {"min_validity_seconds": $MIN_VALIDITY},
  "sources": {"uami": {"type": "imds", "endpoint": "http://$EMU_HTTP",
                       "client_id": "aaaaaaaa-0000-0000-0000-000000000001"}},
  "targets": [{"tenant_id": "22222222-2222-2222-2222-222222222222",
               "client_id": "cccccccc-0000-0000-0000-000000000001", "source": "uami",
               "default": true}]
}
JSON
"$BROKER_BIN" --config "$WORK/broker.jsonc" --ready-file "$WORK/broker.ready" >"$WORK/broker.log" 2>&1 &
BROKER_PID=$!
wait_for_file "$WORK/broker.ready" 10 || { echo "soak: ficbroker did not start" >&2; cat "$WORK/broker.log" >&2; exit 1; }
BROKER=$(jq -r .listen "$WORK/broker.ready")
URL="http://$BROKER/token?resource=$RESOURCE"

first=$(curl -s -o "$WORK/first.json" -w '%{http_code}' -H 'Metadata: true' "$URL")
if [[ "$first" != 200 ]]; then
  echo "soak: the first token request answered $first:" >&2
  cat "$WORK/first.json" "$WORK/broker.log" >&2
  exit 1
fi

# --- faults: refreshes fail and connections are reset now and then -------------------------------
# One failure at a time, queued only when the previous one was used up and at least 8 s apart: a
# fetch retries 4 times within ~7 s, so it meets at most two failures and still succeeds, and a
# valid token stays cached throughout. Every client request must therefore get a 200.
fault() { curl -s -o /dev/null -X POST -H 'Content-Type: application/json' -d "$1" "$CONTROL/faults"; }
(
  end=$((SECONDS + DURATION))
  round=0
  last=-100
  while ((SECONDS < end)); do
    active=$(curl -s "$CONTROL/stats" | jq .active_faults)
    if [[ "$active" == 0 ]] && ((SECONDS - last >= 8)); then
      case $((round % 3)) in
        0) fault '{"target":"entra","action":"status","status":503,"count":1}' ;;
        1) fault '{"target":"any","action":"reset","count":1}' ;;
        2) fault '{"target":"entra","action":"status","status":429,"retry_after":"1","count":1}' ;;
      esac
      round=$((round + 1))
      last=$SECONDS
    fi
    sleep 1
  done
) &
FAULTS_PID=$!

# --- load ----------------------------------------------------------------------------------------
if command -v wrk >/dev/null; then
  cat >"$WORK/count.lua" <<'LUA'
wrk.headers["Metadata"] = "true"
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) total = 0; bad = 0 end
function response(status, headers, body)
  total = total + 1
  if status ~= 200 then bad = bad + 1 end
end
function done(summary, latency, requests)
  local t, b = 0, 0
  for _, thread in ipairs(threads) do
    t = t + thread:get("total")
    b = b + thread:get("bad")
  end
  local e = summary.errors
  io.write(string.format("LOAD total=%d non200=%d socket_errors=%d\n", t, b,
                         e.connect + e.read + e.write + e.timeout))
end
LUA
  wrk -t2 -c8 -d"${DURATION}s" --timeout 5s -s "$WORK/count.lua" "$URL" >"$WORK/load.out" 2>&1 &
  LOAD_PID=$!
  LOAD_TOOL=wrk
else
  echo "soak: wrk not found (apt-get install -y wrk); using a bounded curl loop instead"
  (
    end=$((SECONDS + DURATION))
    total=0
    bad=0
    while ((SECONDS < end)); do
      for _ in 1 2 3 4 5 6 7 8 9 10; do
        code=$(curl -s -o /dev/null -m 5 -w '%{http_code}' -H 'Metadata: true' "$URL")
        total=$((total + 1))
        [[ "$code" == 200 ]] || bad=$((bad + 1))
      done
    done
    echo "LOAD total=$total non200=$bad socket_errors=0"
  ) >"$WORK/load.out" 2>&1 &
  LOAD_PID=$!
  LOAD_TOOL=curl
fi

# --- samples -------------------------------------------------------------------------------------
declare -a T RSS FDS
sample() {
  local rss fds
  rss=$(awk '/^VmRSS:/ {print $2}' "/proc/$BROKER_PID/status" 2>/dev/null)
  fds=$(ls "/proc/$BROKER_PID/fd" 2>/dev/null | wc -l)
  T+=("$1")
  RSS+=("${rss:-0}")
  FDS+=("$fds")
  printf 'soak: t=%3ss rss_kb=%s fds=%s\n' "$1" "${rss:-?}" "$fds"
}
start=$SECONDS
for ((t = 0; t <= DURATION; t += SAMPLE_EVERY)); do
  while ((SECONDS - start < t)); do sleep 0.2; done
  sample "$t"
done
wait "$LOAD_PID"
LOAD_PID=""
wait "$FAULTS_PID" 2>/dev/null
FAULTS_PID=""

# --- verdict -------------------------------------------------------------------------------------
load_line=$(grep '^LOAD ' "$WORK/load.out" | tail -1)
echo "soak: load ($LOAD_TOOL): ${load_line:-no summary}"
total=$(sed -n 's/.*total=\([0-9]*\).*/\1/p' <<<"$load_line")
non200=$(sed -n 's/.*non200=\([0-9]*\).*/\1/p' <<<"$load_line")
socket_errors=$(sed -n 's/.*socket_errors=\([0-9]*\).*/\1/p' <<<"$load_line")
metrics=$(curl -s "http://$BROKER/metrics")
refreshes=$(awk '$1 == "ficbroker_cache_refreshes_total" {print $2}' <<<"$metrics")
refresh_failures=$(awk '$1 == "ficbroker_cache_refresh_failures_total" {print $2}' <<<"$metrics")
stats=$(curl -s "$CONTROL/stats")
echo "soak: broker refreshes=${refreshes:-?} refresh_failures=${refresh_failures:-?};" \
     "emulator entra=$(jq .entra <<<"$stats") entra_faulted=$(jq .entra_faulted <<<"$stats")" \
     "imds=$(jq .imds <<<"$stats") imds_faulted=$(jq .imds_faulted <<<"$stats")"

check "the load ran (${total:-0} requests)" test "${total:-0}" -gt 100
check "no non-200 answer while a valid token was cached (${non200:-?})" test "${non200:-1}" -eq 0
check "no client socket error (${socket_errors:-?})" test "${socket_errors:-1}" -eq 0
check "at least one background refresh (${refreshes:-0})" test "${refreshes:-0}" -ge 1
check "the emulator injected faults ($(jq .entra_faulted <<<"$stats"))" \
  test "$(jq '.entra_faulted + .imds_faulted' <<<"$stats")" -ge 1
check "the broker is still running" kill -0 "$BROKER_PID"

# RSS growth from the 10 s mark to the end, fd count against the 10 s mark.
ten=$((10 / SAMPLE_EVERY))
last=$((${#RSS[@]} - 1))
growth=$((RSS[last] - RSS[ten]))
check "RSS growth ${growth} KiB <= 2048 KiB (t=10s ${RSS[ten]} KiB -> t=${T[last]}s ${RSS[last]} KiB)" \
  test "$growth" -le 2048
fd_ok=true
for ((i = ten; i <= last; i++)); do
  d=$((FDS[i] - FDS[ten]))
  ((d < -4 || d > 4)) && fd_ok=false
done
check "fd count stable within +-4 of ${FDS[ten]} (${FDS[*]:ten})" $fd_ok

echo "soak: $PASSED passed, $FAILED failed"
((FAILED == 0))
