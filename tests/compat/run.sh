#!/usr/bin/env bash
# Compatibility matrix: real, unmodified Azure SDK clients (and curl in the shapes of the older
# protocols) against ficbroker, with the emulator standing in for IMDS, App Service and Entra.
#
#   tests/compat/run.sh [BUILD_DIR]     BUILD_DIR (default: build) holds src/ficbroker and
#                                       emulator/ficbroker-emulator
#
# Starts the emulator and one ficbroker per source type (imds, app_service, workload_identity,
# file) on ephemeral ports, runs every check, prints `client | route | selection | result` per row,
# writes docs/compat-matrix.md (and the README block between the compat-matrix markers, if there),
# and ends with `compat: N passed, M failed`; exits non-zero on any failure.
# Needs: node + npm (deps come from the committed package-lock.json via `npm ci`), jq, curl and
# Debian's python3-azure (run as /usr/bin/python3). COMPAT_KEEP=1 keeps the work directory.
# shellcheck disable=SC2016  # the single-quoted strings are jq programs, expanded by jq
set -euo pipefail

started=$SECONDS
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
build=${1:-build}
case $build in /*) ;; *) build=$root/$build ;; esac
ficbroker=$build/src/ficbroker
emulator=$build/emulator/ficbroker-emulator
python=/usr/bin/python3

# The built-in emulator world (ficbroker-emulator --print-default-world).
home_tenant=11111111-1111-1111-1111-111111111111
tenant_b=22222222-2222-2222-2222-222222222222
tenant_c=33333333-3333-3333-3333-333333333333
app_id=cccccccc-0000-0000-0000-000000000001
uami_client_id=aaaaaaaa-0000-0000-0000-000000000001
uami_object_id=bbbbbbbb-0000-0000-0000-000000000001
uami_resource_id=/subscriptions/00000000-0000-0000-0000-000000000000/resourceGroups/rg-demo/providers/Microsoft.ManagedIdentity/userAssignedIdentities/uami-demo
oidc_subject=system:serviceaccount:default:workload
metadata_missing_body='{"error":"invalid_request","error_description":"Required metadata header not specified"}'
sources=(imds app_service workload_identity file)

# Everything here talks to 127.0.0.1 (and ficbroker to the emulator's https://localhost): a proxy
# from the caller's environment must not see any of it. The SDK scripts also drop every
# AZURE_*/IDENTITY_*/MSI_*/IMDS_*/MSAL_* variable before they load a client.
unset http_proxy https_proxy all_proxy no_proxy HTTP_PROXY HTTPS_PROXY ALL_PROXY NO_PROXY

die() { echo "compat: $*" >&2; exit 2; }
for tool in jq curl node; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is missing (CI installs: jq curl nodejs npm python3-azure)"
done
[ -x "$ficbroker" ] || die "$ficbroker not found: build first, or pass the build directory"
[ -x "$emulator" ] || die "$emulator not found: build first, or pass the build directory"

# ---- npm dependencies (test-only; never needed to build ficbroker) -------------------------
if [ ! -f "$here/node_modules/.package-lock.json" ] ||
   [ "$here/package-lock.json" -nt "$here/node_modules/.package-lock.json" ]; then
  command -v npm >/dev/null 2>&1 || die "npm is missing and tests/compat/node_modules is not installed"
  echo "compat: npm ci in tests/compat"
  (cd "$here" && npm ci --no-audit --no-fund) >&2
fi

# ---- processes and clean-up ------------------------------------------------------------------
work=$(mktemp -d "${TMPDIR:-/tmp}/ficbroker-compat.XXXXXX")
pids=()
cleanup() {
  local pid
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ "${COMPAT_KEEP:-0}" = 1 ]; then echo "compat: kept $work" >&2; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

wait_ready() {  # ready-file pid log; the emulator makes its keys first (5 s on a busy machine)
  for _ in $(seq 1 300); do
    [ -s "$1" ] && return 0
    kill -0 "$2" 2>/dev/null || { cat "$3" >&2; die "process $2 exited before writing $1"; }
    sleep 0.1
  done
  cat "$3" >&2
  die "no ready file $1 after 30 s"
}

"$emulator" --http-listen 127.0.0.1:0 --https-listen 127.0.0.1:0 --ca-out "$work/ca.pem" \
  --ready-file "$work/emulator.ready" --quiet >"$work/emulator.log" 2>&1 &
pids+=($!)
wait_ready "$work/emulator.ready" "$!" "$work/emulator.log"
emu_http=$(jq -r .http "$work/emulator.ready")
emu_https=$(jq -r .https "$work/emulator.ready")
stats() { curl -sS --max-time 5 "http://$emu_http/_emulator/stats"; }

umask 077
# workload_identity: the external OIDC token (an AKS service-account token) the app's FIC trusts.
curl -sS --fail --max-time 5 -X POST -H 'Content-Type: application/json' \
  -d "{\"subject\":\"$oidc_subject\",\"audience\":\"api://AzureADTokenExchange\"}" \
  "http://$emu_http/_emulator/oidc-token" | jq -je .token >"$work/oidc.jwt"
# file: a managed-identity assertion that something else wrote to disk.
curl -sS --fail --max-time 5 -H 'Metadata: true' \
  "http://$emu_http/metadata/identity/oauth2/token?api-version=2018-02-01&resource=api://AzureADTokenExchange&client_id=$uami_client_id" |
  jq -je .access_token >"$work/assertion.jwt"

source_json() {
  case $1 in
    # The source names all of its UAMI's ids, so callers may select it by any of them.
    imds) jq -n --arg e "http://$emu_http" --arg c "$uami_client_id" --arg o "$uami_object_id" \
      --arg r "$uami_resource_id" '{type:"imds",endpoint:$e,client_id:$c,object_id:$o,resource_id:$r}' ;;
    app_service) jq -n --arg e "http://$emu_http/msi/token" --arg c "$uami_client_id" \
      --arg o "$uami_object_id" --arg r "$uami_resource_id" \
      '{type:"app_service",endpoint:$e,header:"emulator-identity-header",client_id:$c,object_id:$o,resource_id:$r}' ;;
    workload_identity) jq -n --arg p "$work/oidc.jwt" '{type:"workload_identity",path:$p}' ;;
    file) jq -n --arg p "$work/assertion.jwt" '{type:"file",path:$p}' ;;
  esac
}

declare -A broker_url broker_header broker_pid
for src in "${sources[@]}"; do
  secret=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
  jq -n --arg a "https://localhost:${emu_https##*:}" --arg ca "$work/ca.pem" --arg h "$secret" \
    --argjson s "$(source_json "$src")" --arg b "$tenant_b" --arg c "$tenant_c" --arg app "$app_id" \
    '{listen:"127.0.0.1:0", authority_host:$a, ca_file:$ca, identity_header:$h, log_level:"warn",
      sources:{uami:$s},
      targets:[{tenant_id:$b, client_id:$app, source:"uami", default:true},
               {tenant_id:$c, client_id:$app, source:"uami"}]}' >"$work/$src.json"
  "$ficbroker" --config "$work/$src.json" --ready-file "$work/$src.ready" >"$work/$src.log" 2>&1 &
  pids+=($!)
  broker_pid[$src]=$!
  broker_header[$src]=$secret
done
for src in "${sources[@]}"; do
  wait_ready "$work/$src.ready" "${broker_pid[$src]}" "$work/$src.log"
  broker_url[$src]="http://$(jq -r .listen "$work/$src.ready")"
done

# ---- rows -----------------------------------------------------------------------------------
curl_client="curl $(curl --version | head -1 | cut -d' ' -f2)"
rows_bash=$work/rows-curl.jsonl
: >"$rows_bash"

row() {  # client route selection scope source expect result detail
  jq -nc --arg client "$1" --arg route "$2" --arg selection "$3" --arg scope "$4" --arg source "$5" \
    --arg expect "$6" --arg result "$7" --arg detail "$8" \
    '{client:$client,route:$route,selection:$selection,scope:$scope,source:$source,expect:$expect,result:$result,detail:$detail}' \
    >>"$rows_bash"
}

# One jq run per check (jq takes ~0.1 s to start here): judges a token answer and prints the row.
# A token answer passes when the status is 200 and the JWT's tid/iss/appid/aud, the echoed
# resource, token_type, expires_in and expires_on (epoch seconds on every route, the 2017 one
# included) are right: expires_on at least 5 minutes away and never after the token's exp.
judge_token='
  def b64url: gsub("-"; "+") | gsub("_"; "/") | . + ("=" * ((4 - length % 4) % 4)) | @base64d;
  def short: "\(.[0:8])…\(.[-4:])";
  ($raw | try fromjson catch null) as $b
  | (try ($b.access_token | split(".")[1] | b64url | fromjson) catch null) as $c
  | (try ($b.expires_on | tonumber) catch null) as $on
  | (if $status != "200" then ["HTTP \($status): \($raw[0:300])"]
     elif $c == null then ["no JWT access_token in: \($raw[0:200])"]
     else [ (if $c.tid != $tenant then "tid=\($c.tid), want \($tenant)" else empty end),
            (if $c.iss != "https://sts.windows.net/\($tenant)/" then "iss=\($c.iss)" else empty end),
            (if $c.appid != $appid then "appid=\($c.appid), want \($appid)" else empty end),
            (if $c.aud != $aud then "aud=\($c.aud), want \($aud)" else empty end),
            (if $b.resource != $aud then "resource echoed as \($b.resource)" else empty end),
            (if $b.token_type != "Bearer" then "token_type=\($b.token_type)" else empty end),
            (if (try ($b.expires_in | tonumber) catch 0) < 300 then "expires_in=\($b.expires_in)" else empty end),
            (if $on == null then "expires_on=\($b.expires_on) does not parse (\($shape))"
             elif $on > $c.exp then "expires_on \($on) is \($on - $c.exp) s after exp \($c.exp)"
             elif $on < $now + 300 then "expires_on only \($on - $now) s away" else empty end) ]
     end) as $problems
  | {client: $client, route: $route, selection: $selection, scope: $aud, source: $source, expect: $expect,
     result: (if $problems == [] then "PASS" else "FAIL" end),
     detail: (if $problems == [] then "tid=\($c.tid|short) appid=\($c.appid|short) aud=\($c.aud) "
                + "expires_on=\($b.expires_on) (exp\(if $on >= $c.exp then "+" else "" end)\($on - $c.exp)s)"
              else ($problems | join("; ")) end)}'

# Judges an error answer: the status, and IMDS's exact body if one is given, else any JSON error.
judge_error='
  ($raw | try fromjson catch null) as $b
  | (if $status != $want then "HTTP \($status): \($raw[0:300])"
     elif $exact != "" and $raw != $exact then "body: \($raw[0:300])"
     elif $exact == "" and (($b | type) != "object" or ($b.error | type) != "string") then "no JSON error: \($raw[0:300])"
     else null end) as $problem
  | {client: $client, route: $route, selection: $selection, scope: $scope, source: $source,
     expect: (if $exact != "" then "HTTP \($want) + IMDS exact body" else "HTTP \($want) + JSON error" end),
     result: (if $problem == null then "PASS" else "FAIL" end),
     detail: ($problem // "HTTP \($status) \($raw[0:160])")}'

# curl_token ROUTE SELECTION RESOURCE SOURCE EXPECT(target|target_c|mi) SHAPE(imds|legacy) -- curl args
curl_token() {
  local route=$1 selection=$2 resource=$3 src=$4 expect=$5 shape=$6; shift 7
  local tenant=$tenant_b appid=$app_id label="tenant ${tenant_b:0:8}…${tenant_b: -4} app token"
  case $expect in
    target_c) tenant=$tenant_c; label="tenant ${tenant_c:0:8}…${tenant_c: -4} app token" ;;
    mi) tenant=$home_tenant; appid=$uami_client_id; label="home MI token" ;;
  esac
  local status
  : >"$work/body"
  status=$(curl -sS --max-time 20 -o "$work/body" -w '%{http_code}' "$@" 2>"$work/curl.err") || true
  jq -nc --rawfile raw "$work/body" --arg status "$status" --arg shape "$shape" --argjson now "$(date +%s)" \
    --arg tenant "$tenant" --arg appid "$appid" --arg aud "$resource" --arg client "$curl_client" \
    --arg route "$route" --arg selection "$selection" --arg source "$src" --arg expect "$label" \
    "$judge_token" >>"$rows_bash"
}

# curl_error ROUTE SELECTION RESOURCE SOURCE STATUS EXACT-BODY(or empty) -- curl args
curl_error() {
  local route=$1 selection=$2 resource=$3 src=$4 want=$5 exact=$6; shift 7
  local status
  : >"$work/body"
  status=$(curl -sS --max-time 20 -o "$work/body" -w '%{http_code}' "$@" 2>"$work/curl.err") || true
  jq -nc --rawfile raw "$work/body" --arg status "$status" --arg want "$want" --arg exact "$exact" \
    --arg client "$curl_client" --arg route "$route" --arg selection "$selection" --arg scope "$resource" \
    --arg source "$src" "$judge_error" >>"$rows_bash"
}

# 1. Each source type: the first request a broker serves must fetch its assertion from that source
#    (emulator counters, compared before/after; nothing else talks to the emulator meanwhile).
judge_source='
  ($a.imds - $b.imds) as $imds | ($a.app_service - $b.app_service) as $app | ($a.entra - $b.entra) as $entra
  | [ (if $entra != 1 then "\($entra) Entra exchanges, want 1" else empty end),
      (if $a.last_entra_tenant != $tenant then "exchange at tenant \($a.last_entra_tenant)" else empty end),
      (if $source == "imds" then
         (if $imds != 1 or $app != 0 then "IMDS calls \($imds), App Service calls \($app): want 1, 0" else empty end),
         (if $a.last_imds_query.resource != "api://AzureADTokenExchange" or $a.last_imds_query.client_id != $uami
          then "IMDS was asked for \($a.last_imds_query)" else empty end)
       elif $source == "app_service" then
         (if $imds != 0 or $app != 1 then "IMDS calls \($imds), App Service calls \($app): want 0, 1" else empty end),
         (if $a.last_app_service_query.resource != "api://AzureADTokenExchange"
             or $a.last_app_service_query.client_id != $uami
          then "App Service was asked for \($a.last_app_service_query)" else empty end)
       else
         (if $imds != 0 or $app != 0 then "IMDS calls \($imds), App Service calls \($app): want 0, 0" else empty end),
         (if $a.last_entra_form.client_assertion != $len
          then "client_assertion of \($a.last_entra_form.client_assertion) chars; the file holds \($len)"
          else empty end)
       end) ] as $problems
  | {client: $client, route: "assertion source (emulator counters)", selection: "first request to this broker",
     scope: $scope, source: $source, expect: "assertion from \($source), one exchange",
     result: (if $problems == [] then "PASS" else "FAIL" end),
     detail: (if $problems == [] then "Entra +\($entra) at \($tenant[0:8])…, IMDS +\($imds), App Service +\($app)"
                + (if $len > 0 then ", client_assertion = the file (\($len) chars)" else "" end)
              else ($problems | join("; ")) end)}'
for src in "${sources[@]}"; do
  before=$(stats)
  curl_token "GET /token?resource= (first request)" "none" https://management.azure.com/ "$src" target imds -- \
    -H 'Metadata: true' "${broker_url[$src]}/token?resource=https://management.azure.com/"
  after=$(stats)
  case $src in
    workload_identity) assertion_len=$(wc -c <"$work/oidc.jwt") ;;
    file) assertion_len=$(wc -c <"$work/assertion.jwt") ;;
    *) assertion_len=0 ;;
  esac
  jq -nc --argjson b "$before" --argjson a "$after" --arg source "$src" --arg uami "$uami_client_id" \
    --argjson len "$assertion_len" --arg tenant "$tenant_b" --arg client "$curl_client" \
    --arg scope https://management.azure.com/ "$judge_source" >>"$rows_bash"
done

# The SDKs run (Node and Python side by side) while curl goes through the older shapes.
jq -n --arg ht "$home_tenant" --arg dt "$tenant_b" --arg app "$app_id" --arg uc "$uami_client_id" \
  --arg uo "$uami_object_id" --arg ur "$uami_resource_id" \
  --arg iu "${broker_url[imds]}" --arg ih "${broker_header[imds]}" \
  --arg au "${broker_url[app_service]}" --arg ah "${broker_header[app_service]}" \
  --arg wu "${broker_url[workload_identity]}" --arg wh "${broker_header[workload_identity]}" \
  --arg fu "${broker_url[file]}" --arg fh "${broker_header[file]}" \
  '{world:{home_tenant:$ht, default_tenant:$dt, app_client_id:$app, uami_client_id:$uc,
           uami_object_id:$uo, uami_resource_id:$ur},
    brokers:{imds:{url:$iu, identity_header:$ih}, app_service:{url:$au, identity_header:$ah},
             workload_identity:{url:$wu, identity_header:$wh}, file:{url:$fu, identity_header:$fh}}}' \
  >"$work/plan.json"
(cd "$here" && exec timeout 150 node compat.mjs "$work/plan.json") >"$work/rows-node.jsonl" 2>"$work/node.log" &
node_pid=$!
pids+=("$node_pid")
python_pid=
if "$python" -c 'import azure.identity' 2>/dev/null; then
  (cd "$here" && exec timeout 150 "$python" compat.py "$work/plan.json") >"$work/rows-python.jsonl" 2>"$work/python.log" &
  python_pid=$!
  pids+=("$python_pid")
else
  row "$python" "-" "-" "-" "-" "-" FAIL "azure.identity is not importable by $python: install python3-azure"
fi

# 2. The older protocol shapes, byte for byte as the clients that use them send them.
B=${broker_url[imds]}
H=${broker_header[imds]}
imds_path=/metadata/identity/oauth2/token
vault=https://vault.azure.net
curl_token "IMDS GET api-version=2018-02-01" "none" "$vault" imds target imds -- \
  -H 'Metadata: true' "$B$imds_path?api-version=2018-02-01&resource=$vault"
curl_token "IMDS GET api-version=2019-08-15 (Arc-era clients)" "none" "$vault" imds target imds -- \
  -H 'Metadata: true' "$B$imds_path?api-version=2019-08-15&resource=$vault"
curl_token "IMDS GET api-version=2021-02-01" "none" "$vault" imds target imds -- \
  -H 'Metadata: true' "$B$imds_path?api-version=2021-02-01&resource=$vault"
curl_token "IMDS GET //metadata/… (msal4j ≤ 1.23.1 double slash)" "none" "$vault" imds target imds -- \
  --path-as-is -H 'Metadata: true' "$B/$imds_path?api-version=2018-02-01&resource=$vault"
curl_token "IMDS GET /METADATA/… (upper-case path)" "none" "$vault" imds target imds -- \
  -H 'Metadata: true' "$B/METADATA/identity/oauth2/token?api-version=2018-02-01&resource=$vault"
curl_token "IMDS GET, header spelled METADATA: true" "none" "$vault" imds target imds -- \
  -H 'METADATA: true' "$B$imds_path?api-version=2018-02-01&resource=$vault"
curl_token "IMDS GET" "client_id = app ${app_id:0:8}…" https://database.windows.net/ imds target imds -- \
  -H 'Metadata: true' "$B$imds_path?api-version=2018-02-01&resource=https://database.windows.net/&client_id=$app_id"
curl_token "IMDS GET" "client_id = UAMI ${uami_client_id:0:8}…" https://database.windows.net/ imds mi imds -- \
  -H 'Metadata: true' "$B$imds_path?api-version=2018-02-01&resource=https://database.windows.net/&client_id=$uami_client_id"
curl_token "IMDS GET" "object_id = UAMI ${uami_object_id:0:8}…" "$vault" imds mi imds -- \
  -H 'Metadata: true' "$B$imds_path?api-version=2018-02-01&resource=$vault&object_id=$uami_object_id"
curl_token "IMDS GET" "msi_res_id = UAMI …/uami-demo" "$vault" imds mi imds -- \
  -H 'Metadata: true' --get --data-urlencode "msi_res_id=$uami_resource_id" \
  "$B$imds_path?api-version=2018-02-01&resource=$vault"
curl_error "IMDS probe: GET, no query, no Metadata (@azure/identity DAC)" "none" "-" imds 400 \
  "$metadata_missing_body" -- "$B$imds_path"
curl_error "IMDS probe: GET ?api-version=2018-02-01, no Metadata (MSAL.NET)" "none" "-" imds 400 \
  "$metadata_missing_body" -- "$B$imds_path?api-version=2018-02-01"
curl_error "IMDS GET with resource, no Metadata" "none" "$vault" imds 400 "$metadata_missing_body" -- \
  "$B$imds_path?api-version=2018-02-01&resource=$vault"
curl_error "IMDSv2 GET /metadata/identity/getplatformmetadata (MSAL.NET probe)" "none" "-" imds 404 "" -- \
  -H 'Metadata: true' "$B/metadata/identity/getplatformmetadata?cred-api-version=2.0"
curl_token "App Service 2017-09-01 GET, secret header (Linux Consumption)" "none" "$vault" imds target imds -- \
  -H "secret: $H" "$B/msi/token?api-version=2017-09-01&resource=$vault"
curl_token "App Service 2017-09-01 GET, secret header (Linux Consumption)" "clientid = app ${app_id:0:8}…" \
  "$vault" imds target imds -- -H "secret: $H" "$B/msi/token?api-version=2017-09-01&resource=$vault&clientid=$app_id"
curl_token "App Service 2017-09-01 GET, secret header (Linux Consumption)" "clientid = UAMI ${uami_client_id:0:8}…" \
  https://database.windows.net/ imds mi imds -- -H "secret: $H" \
  "$B/msi/token?api-version=2017-09-01&resource=https://database.windows.net/&clientid=$uami_client_id"
curl_error "App Service 2019-08-01 GET, wrong X-IDENTITY-HEADER" "none" "$vault" imds 401 "" -- \
  -H 'X-IDENTITY-HEADER: not-the-secret-0123456789' "$B/msi/token?api-version=2019-08-01&resource=$vault"
curl_token "Form POST /metadata/identity/oauth2/token + Metadata (MSI_ENDPOINT style)" "none" "$vault" imds target imds -- \
  -H 'Metadata: true' --data-urlencode "resource=$vault" "$B$imds_path"
curl_token "Form POST /oauth2/token + Metadata (Cloud Shell style)" "none" https://database.windows.net/ imds target imds -- \
  -H 'Metadata: true' --data-urlencode "resource=https://database.windows.net/" "$B/oauth2/token"
curl_error "Form POST /oauth2/token, no Metadata" "none" "$vault" imds 400 "$metadata_missing_body" -- \
  --data-urlencode "resource=$vault" "$B/oauth2/token"
curl_token "GET /token + Metadata" "tenant = ${tenant_c:0:8}…" "$vault" imds target_c imds -- \
  -H 'Metadata: true' "$B/token?resource=$vault&tenant=$tenant_c"
curl_token "GET /token + Metadata" "scope=…/.default, tenant = ${tenant_c:0:8}…" https://graph.microsoft.com imds target_c imds -- \
  -H 'Metadata: true' "$B/token?scope=https://graph.microsoft.com/.default&tenant=$tenant_c"
curl_token "GET /token + Metadata" "none (default target)" https://database.windows.net/ imds target imds -- \
  -H 'Metadata: true' "$B/token?resource=https://database.windows.net/"
curl_error "IMDS GET" "client_id = UAMI ${uami_client_id:0:8}… (no managed identity behind this source)" "$vault" \
  workload_identity 400 "" -- -H 'Metadata: true' \
  "${broker_url[workload_identity]}$imds_path?api-version=2018-02-01&resource=$vault&client_id=$uami_client_id"

# 3. Collect the SDK rows.
node_rc=0; wait "$node_pid" || node_rc=$?
python_rc=0
if [ -n "$python_pid" ]; then wait "$python_pid" || python_rc=$?; fi
if [ "$node_rc" != 0 ] || [ ! -s "$work/rows-node.jsonl" ]; then
  row "node $(node --version)" "compat.mjs" "-" "-" "-" "-" FAIL \
    "exit $node_rc: $(tail -3 "$work/node.log" | tr '\n' ' ' | head -c 300)"
fi
if [ -n "$python_pid" ] && { [ "$python_rc" != 0 ] || [ ! -s "$work/rows-python.jsonl" ]; }; then
  row "$python" "compat.py" "-" "-" "-" "-" FAIL \
    "exit $python_rc: $(tail -3 "$work/python.log" | tr '\n' ' ' | head -c 300)"
fi

# ---- report ---------------------------------------------------------------------------------
cat "$work/rows-node.jsonl" "$work/rows-python.jsonl" "$rows_bash" 2>/dev/null |
  jq -sc '.[]' >"$work/rows.jsonl"   # drops nothing; fails loudly on a malformed row
jq -r '"\(.client) | \(.route) | \(.selection) · \(.scope) · source=\(.source) | \(.result)"' "$work/rows.jsonl"

passed=$(jq -s 'map(select(.result == "PASS")) | length' "$work/rows.jsonl")
failed=$(jq -s 'map(select(.result != "PASS")) | length' "$work/rows.jsonl")

md_escape='def md: tostring | gsub("\\|"; "\\|") | gsub("\n"; " ");'
{
  echo "# Compatibility matrix"
  echo
  echo "Generated by \`tests/compat/run.sh\` — do not edit by hand. Real, unmodified clients ask"
  echo "ficbroker for tokens; ficbroker gets its assertion from the source named in the *Source*"
  echo "column and exchanges it at the emulated Entra (the emulator's built-in world: app"
  echo "\`$app_id\`, default resource tenant \`$tenant_b\`, UAMI \`$uami_client_id\`)."
  echo "A row passes only if the decoded JWT has the expected \`tid\`/\`iss\`, \`appid\` and \`aud\`,"
  echo "and the expiry the client reports is at least 5 minutes away and not after the token's \`exp\`"
  echo "(5 s of slack: ficbroker counts \`expires_in\` from when Entra's answer arrived)."
  echo "*tenant … app token*: the exchanged token for the multi-tenant app; *home MI token*: the plain"
  echo "managed-identity token of the UAMI (a selector naming the source's own identity)."
  echo
  echo "Clients:"
  echo
  jq -rs 'map(.client) | unique | .[] | "- \(.)"' "$work/rows.jsonl"
  echo
  echo "Result: **$passed passed, $failed failed**."
  echo
  echo "| Client | Route | Selection | Scope / resource | Source | Expect | Result | Checked |"
  echo "|---|---|---|---|---|---|---|---|"
  jq -r "$md_escape"' "| \(.client|md) | \(.route|md) | \(.selection|md) | \(.scope|md) | \(.source|md) | \(.expect|md) | \(if .result == "PASS" then "PASS" else "**FAIL**" end) | \(.detail|md) |"' \
    "$work/rows.jsonl"
} >"$root/docs/compat-matrix.md"

readme=$root/README.md
if [ -f "$readme" ] && grep -q '<!-- compat-matrix:begin -->' "$readme" &&
   grep -q '<!-- compat-matrix:end -->' "$readme"; then
  {
    echo
    echo "| Client | Route | Sources | Result |"
    echo "|---|---|---|---|"
    # One line per SDK route; curl's many protocol shapes fold into two lines.
    jq -rs "$md_escape"' map(.group = (if (.client | startswith("curl")) | not then .route
                                 elif .route == "assertion source (emulator counters)" then "assertion from each source type"
                                 else "IMDS / App Service 2017 / form POST / /token shapes, probes, errors" end))
      | group_by([.client, .group]) | .[]
      | (map(select(.result == "PASS")) | length) as $p | length as $n
      | "| \(.[0].client|md) | \(.[0].group|md) | \(map(.source) | unique | join(", ") | md) | \(if $p == $n then "PASS \($p)/\($n)" else "**FAIL** \($n - $p) of \($n): " + (map(select(.result != "PASS") | .selection) | unique | join("; ") | md) end) |"' \
      "$work/rows.jsonl"
    echo
    echo "Every row and what it checked: [docs/compat-matrix.md](docs/compat-matrix.md) ($passed passed, $failed failed)."
    echo
  } >"$work/readme-block.md"
  awk -v block="$work/readme-block.md" '
    /<!-- compat-matrix:begin -->/ {
      print; while ((getline line < block) > 0) print line; close(block); skip = 1; next }
    /<!-- compat-matrix:end -->/ { skip = 0 }
    !skip { print }' "$readme" >"$work/README.md"
  cat "$work/README.md" >"$readme"
fi

echo "compat: wrote docs/compat-matrix.md in $(( SECONDS - started )) s"
echo "compat: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
