#!/usr/bin/env bash
# tests/deploy/transparent_netns_test.sh: transparent mode for real, in a network namespace.
#
# In a namespace of its own (as a pod has), with 169.254.169.254/32 on a local interface:
#   - ficbroker-emulator plays the real IMDS on 169.254.169.254:80 (and Entra on 127.0.0.1:<random>),
#   - ficbroker runs as uid 10001 with "transparent": true, listening on 127.0.0.1:8181,
#   - deploy/kubernetes/transparent-init.sh (given CAP_NET_ADMIN and no other capability) adds
#       iptables -t nat -A OUTPUT -p tcp -d 169.254.169.254 --dport 80 \
#                -m owner ! --uid-owner 10001 -j REDIRECT --to-ports 8181
# and curl shows that every other uid's IMDS requests are answered by ficbroker (cross-tenant token,
# /healthz and /metrics on 169.254.169.254), while ficbroker's own requests still reach the emulator
# (its /_emulator/stats "imds" counter grows).
#
# Needs root, iproute2 (ip netns), iptables, curl, setpriv, and the built binaries:
#   FICBROKER_BIN  (default: build/src/ficbroker)
#   EMULATOR_BIN   (default: the first build*/emulator/ficbroker-emulator)
# Skips (exit 0, SKIP line) only when not root or when network namespaces are unavailable.
# Last line: "transparent mode: N passed, M failed"; exit status non-zero on any failure.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
INIT_SCRIPT="$ROOT/deploy/kubernetes/transparent-init.sh"
IMDS=169.254.169.254
BROKER_UID=10001
OTHER_UID=10002
PORT=8181
UAMI_CLIENT=aaaaaaaa-0000-0000-0000-000000000001 # the emulator's built-in world
APP_CLIENT=cccccccc-0000-0000-0000-000000000001
RESOURCE_TENANT=22222222-2222-2222-2222-222222222222

passed=0
failed=0
summarized=0
summary() {
    summarized=1
    echo "transparent mode: $passed passed, $failed failed"
}
pass() {
    passed=$((passed + 1))
    echo "PASS $1"
}
fail() {
    failed=$((failed + 1))
    echo "FAIL $1"
    if [[ -n "${2:-}" ]]; then
        head -c 1500 <<<"$2" | while IFS= read -r line; do printf '    %s\n' "$line"; done
    fi
}
# A failure that makes the rest meaningless.
abort() {
    fail "$@"
    summary
    exit 1
}

if [[ "$(id -u)" != 0 ]]; then
    echo "SKIP transparent mode: needs root (network namespace, iptables, setpriv)"
    summary
    exit 0
fi
if ! command -v ip >/dev/null 2>&1 || ! ip netns list >/dev/null 2>&1; then
    echo "SKIP transparent mode: 'ip netns' is unavailable (install iproute2)"
    summary
    exit 0
fi
NS="ficbroker-tp-$$"
if ! ip netns add "$NS" 2>/dev/null; then
    echo "SKIP transparent mode: cannot create a network namespace here"
    summary
    exit 0
fi

TMP="$(mktemp -d "${TMPDIR:-/tmp}/ficbroker-tp.XXXXXX")"
EMU_PID=""
BROKER_PID=""
cleanup() {
    local status=$? pid
    if [[ "$summarized" == 0 ]]; then
        # set -e stopped the script somewhere unexpected: still report, and fail.
        failed=$((failed + 1))
        echo "FAIL the test stopped unexpectedly (exit status $status)"
        summary
        status=1
    fi
    for pid in "$BROKER_PID" "$EMU_PID"; do
        if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid" 2>/dev/null || true
            for _ in 1 2 3 4 5 6 7 8 9 10; do
                kill -0 "$pid" 2>/dev/null || break
                sleep 0.2
            done
            kill -KILL "$pid" 2>/dev/null || true
        fi
    done
    ip netns del "$NS" 2>/dev/null || true
    rm -rf "$TMP"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

in_ns() {
    ip netns exec "$NS" "$@"
}
as_uid() {
    local uid="$1"
    shift
    in_ns setpriv --reuid="$uid" --regid="$uid" --clear-groups "$@"
}
wait_for_file() {
    local file="$1" seconds="$2" i
    for ((i = 0; i < seconds * 10; i++)); do
        [[ -s "$file" ]] && return 0
        sleep 0.1
    done
    return 1
}
emulator_imds_count() {
    # The emulator's own counter, read as ficbroker's uid (not redirected).
    { as_uid "$BROKER_UID" curl -sS --max-time 5 "http://$IMDS/_emulator/stats" 2>/dev/null || true; } |
        grep -o '"imds":[0-9]*' | cut -d: -f2 || true
}

# --- prerequisites -----------------------------------------------------------------------------
for tool in iptables curl setpriv grep; do
    command -v "$tool" >/dev/null 2>&1 || abort "'$tool' is required (apt-get install -y iptables curl util-linux)"
done
FICBROKER_BIN="${FICBROKER_BIN:-$ROOT/build/src/ficbroker}"
if [[ -z "${EMULATOR_BIN:-}" ]]; then
    for candidate in "$ROOT"/build*/emulator/ficbroker-emulator; do
        if [[ -x "$candidate" ]]; then
            EMULATOR_BIN="$candidate"
            break
        fi
    done
fi
[[ -x "$FICBROKER_BIN" ]] || abort "ficbroker binary not found at $FICBROKER_BIN (build it first, or set FICBROKER_BIN)"
[[ -x "${EMULATOR_BIN:-}" ]] || abort "ficbroker-emulator not found under $ROOT/build*/emulator (build it first, or set EMULATOR_BIN)"
echo "ficbroker: $FICBROKER_BIN ($("$FICBROKER_BIN" --version 2>&1 | head -1))"
echo "emulator:  $EMULATOR_BIN"
echo "namespace: $NS"

# The binaries must be reachable by uid 10001 (they may sit under /root): use copies in $TMP.
chmod 0755 "$TMP"
install -m 0755 "$FICBROKER_BIN" "$TMP/ficbroker"
install -m 0755 "$EMULATOR_BIN" "$TMP/ficbroker-emulator"

# --- the namespace: lo, and 169.254.169.254/32 on a dummy link (on lo if dummy links are unavailable)
in_ns ip link set lo up
if in_ns ip link add imds0 type dummy 2>/dev/null; then
    in_ns ip addr add "$IMDS/32" dev imds0
    in_ns ip link set imds0 up
    echo "169.254.169.254/32 on dummy link imds0"
else
    in_ns ip addr add "$IMDS/32" dev lo
    echo "169.254.169.254/32 on lo (this kernel has no dummy links)"
fi

# --- the "real IMDS": the emulator, as root ------------------------------------------------------
# Started with ip netns exec directly (not through a function), so that $! is the emulator itself:
# ip and setpriv exec their command.
ip netns exec "$NS" "$TMP/ficbroker-emulator" --http-listen "$IMDS:80" --https-listen 127.0.0.1:0 \
    --ca-out "$TMP/ca.pem" --ready-file "$TMP/emulator.ready" --quiet >"$TMP/emulator.log" 2>&1 &
EMU_PID=$!
wait_for_file "$TMP/emulator.ready" 20 || abort "emulator did not become ready" "$(cat "$TMP/emulator.log")"
entra="$(grep -o '"https":"[^"]*"' "$TMP/emulator.ready" | cut -d'"' -f4)"
[[ -n "$entra" ]] || abort "no https address in the emulator's ready file" "$(cat "$TMP/emulator.ready")"
chmod 0644 "$TMP/ca.pem"
echo "emulator: IMDS on $IMDS:80, Entra on https://$entra"

out="$(in_ns curl -sS --max-time 5 "http://$IMDS/_emulator/stats" 2>&1 || true)"
if grep -q '"imds":' <<<"$out"; then
    pass "before the rule: root reaches the emulator on $IMDS:80"
else
    abort "before the rule: root cannot reach the emulator on $IMDS:80" "$out"
fi

# --- ficbroker as uid 10001 ----------------------------------------------------------------------
install -d -m 0750 -o "$BROKER_UID" -g "$BROKER_UID" "$TMP/broker"
head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$TMP/broker/identity-header"
chown "$BROKER_UID:$BROKER_UID" "$TMP/broker/identity-header"
chmod 0600 "$TMP/broker/identity-header"
cat >"$TMP/broker/config.jsonc" <<EOF
// transparent_netns_test.sh: the emulator is IMDS (through the real address) and Entra.
{
  "listen": "127.0.0.1:$PORT",
  "transparent": true,
  "authority_host": "https://$entra",
  "ca_file": "$TMP/ca.pem",
  "identity_header_file": "$TMP/broker/identity-header",
  "log_level": "info",
  "sources": {
    "imds": {"type": "imds", "endpoint": "http://$IMDS", "client_id": "$UAMI_CLIENT"}
  },
  "targets": [
    {"tenant_id": "$RESOURCE_TENANT", "client_id": "$APP_CLIENT", "source": "imds",
     "default": true, "prewarm": ["https://graph.microsoft.com"]}
  ]
}
EOF
chown "$BROKER_UID:$BROKER_UID" "$TMP/broker/config.jsonc"
if out="$(as_uid "$BROKER_UID" "$TMP/ficbroker" --check-config --config "$TMP/broker/config.jsonc" 2>&1)"; then
    pass "ficbroker --check-config accepts the transparent config"
else
    abort "ficbroker --check-config rejects the config" "$out"
fi
ip netns exec "$NS" setpriv --reuid="$BROKER_UID" --regid="$BROKER_UID" --clear-groups \
    "$TMP/ficbroker" --config "$TMP/broker/config.jsonc" --ready-file "$TMP/broker/ready" >"$TMP/broker.log" 2>&1 &
BROKER_PID=$!
ready=0
for _ in $(seq 1 150); do
    kill -0 "$BROKER_PID" 2>/dev/null || break
    if [[ "$(in_ns curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.1:$PORT/readyz" || true)" == 200 ]]; then
        ready=1
        break
    fi
    sleep 0.2
done
[[ "$ready" == 1 ]] || abort "ficbroker did not report /readyz 200 within 30 s" "$(tail -20 "$TMP/broker.log")"
pass "ficbroker (uid $BROKER_UID) is ready: prewarm token cached via the emulator"

# --- the rule, added by transparent-init.sh with CAP_NET_ADMIN only ------------------------------
if out="$(in_ns setpriv --bounding-set=-all,+net_admin --inh-caps=-all "$INIT_SCRIPT" --apply 2>&1)"; then
    pass "transparent-init.sh --apply with only CAP_NET_ADMIN"
else
    abort "transparent-init.sh --apply failed" "$out"
fi
in_ns setpriv --bounding-set=-all,+net_admin --inh-caps=-all "$INIT_SCRIPT" --apply >/dev/null 2>&1 || true
rules="$(in_ns iptables -t nat -S OUTPUT)"
expected_rule="-A OUTPUT -d $IMDS/32 -p tcp -m tcp --dport 80 -m owner ! --uid-owner $BROKER_UID -j REDIRECT --to-ports $PORT"
if [[ "$(grep -cxF -- "$expected_rule" <<<"$rules")" == 1 ]]; then
    pass "exactly one REDIRECT rule after applying twice (idempotent)"
else
    fail "expected exactly one '$expected_rule'" "$rules"
fi
while IFS= read -r line; do printf '    %s\n' "$line"; done <<<"$rules"

# --- other uids reach ficbroker ------------------------------------------------------------------
imds_before="$(emulator_imds_count)"
token_url="http://$IMDS/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://graph.microsoft.com"
body="$(in_ns curl -sS --max-time 10 -H 'Metadata: true' -D "$TMP/headers" "$token_url" 2>&1 || true)"
status="$(head -1 "$TMP/headers" 2>/dev/null | awk '{print $2}')"
if [[ "$status" == 200 ]] && grep -q '"access_token"' <<<"$body" && grep -q "\"client_id\":\"$APP_CLIENT\"" <<<"$body"; then
    pass "root: IMDS token request to $IMDS answered by ficbroker (cross-tenant app $APP_CLIENT, not the UAMI)"
else
    fail "root: IMDS token request to $IMDS (HTTP ${status:-none})" "$body"
fi
imds_after="$(emulator_imds_count)"
if [[ -n "$imds_before" && "$imds_before" == "$imds_after" ]]; then
    pass "root's token request did not reach the emulator's IMDS (count stayed $imds_before)"
else
    fail "root's token request reached the emulator's IMDS (count $imds_before -> $imds_after)"
fi

code="$(in_ns curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://$IMDS/healthz" || true)"
if [[ "$code" == 200 ]]; then
    pass "root: GET http://$IMDS/healthz is 200 (a path only ficbroker serves)"
else
    fail "root: GET http://$IMDS/healthz returned $code"
fi
metrics="$(in_ns curl -sS --max-time 5 "http://$IMDS/metrics" 2>&1 || true)"
if grep -q '^ficbroker_' <<<"$metrics"; then
    pass "root: GET http://$IMDS/metrics returns ficbroker's Prometheus metrics"
else
    fail "root: GET http://$IMDS/metrics did not return ficbroker metrics" "$(head -5 <<<"$metrics")"
fi
stats="$(in_ns curl -sS --max-time 5 "http://$IMDS/_emulator/stats" 2>&1 || true)"
if ! grep -q '"imds":' <<<"$stats"; then
    pass "root: the emulator's own /_emulator/stats is no longer reachable on $IMDS:80"
else
    fail "root still reaches the emulator on $IMDS:80" "$stats"
fi
code="$(as_uid "$OTHER_UID" curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://$IMDS/healthz" || true)"
if [[ "$code" == 200 ]]; then
    pass "uid $OTHER_UID (an app container's uid) is redirected to ficbroker too"
else
    fail "uid $OTHER_UID: GET http://$IMDS/healthz returned $code"
fi
code="$(in_ns curl -s -o /dev/null -w '%{http_code}' --max-time 5 \
    "http://$IMDS/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://graph.microsoft.com" || true)"
if [[ "$code" == 400 ]]; then
    pass "root: a token request without 'Metadata: true' gets IMDS's 400 from ficbroker"
else
    fail "root: a token request without 'Metadata: true' returned $code, expected 400"
fi

# --- ficbroker's own requests bypass the rule ------------------------------------------------------
stats="$(as_uid "$BROKER_UID" curl -sS --max-time 5 "http://$IMDS/_emulator/stats" 2>&1 || true)"
if grep -q '"imds":' <<<"$stats"; then
    pass "uid $BROKER_UID still reaches the emulator on $IMDS:80 (exempt from the redirect)"
else
    fail "uid $BROKER_UID does not reach the emulator" "$stats"
fi
# A managed-identity token for a resource ficbroker has not fetched yet (client_id = the UAMI):
# ficbroker must ask the real IMDS for it, as uid 10001, while the rule is in place.
before="$(emulator_imds_count)"
mi_url="http://$IMDS/metadata/identity/oauth2/token?api-version=2018-02-01&resource=https://vault.azure.net&client_id=$UAMI_CLIENT"
body="$(in_ns curl -sS --max-time 10 -H 'Metadata: true' "$mi_url" 2>&1 || true)"
after="$(emulator_imds_count)"
if grep -q '"access_token"' <<<"$body" && [[ -n "$before" && -n "$after" && "$after" -gt "$before" ]]; then
    pass "ficbroker's own IMDS request reached the emulator while the rule is active (imds count $before -> $after)"
else
    fail "ficbroker's own IMDS request under the rule (imds count ${before:-?} -> ${after:-?})" "$body"$'\n'"$(tail -5 "$TMP/broker.log")"
fi

# --- removing the rule restores direct access ------------------------------------------------------
if in_ns setpriv --bounding-set=-all,+net_admin --inh-caps=-all "$INIT_SCRIPT" --delete >/dev/null 2>&1 &&
    in_ns curl -sS --max-time 5 "http://$IMDS/_emulator/stats" 2>/dev/null | grep -q '"imds":'; then
    pass "transparent-init.sh --delete: root reaches the emulator again"
else
    fail "transparent-init.sh --delete did not restore direct access"
fi

if kill -0 "$BROKER_PID" 2>/dev/null; then
    pass "ficbroker still running"
    # As the kubelet stops a sidecar: SIGTERM, then ficbroker drains and exits 0.
    kill -TERM "$BROKER_PID"
    for _ in $(seq 1 100); do
        kill -0 "$BROKER_PID" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$BROKER_PID" 2>/dev/null; then
        fail "ficbroker still running 10 s after SIGTERM"
    else
        rc=0
        wait "$BROKER_PID" 2>/dev/null || rc=$?
        if [[ "$rc" == 0 ]]; then
            pass "ficbroker exits 0 on SIGTERM"
        else
            fail "ficbroker exited with status $rc on SIGTERM (expected 0)" "$(tail -5 "$TMP/broker.log")"
        fi
    fi
    BROKER_PID=""
else
    fail "ficbroker exited during the test" "$(tail -20 "$TMP/broker.log")"
fi

summary
[[ "$failed" == 0 ]]
