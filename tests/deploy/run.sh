#!/usr/bin/env bash
# tests/deploy/run.sh: CI checks of ficbroker's deployment files.
#
#   - lint: shellcheck on every shell script in deploy/, tests/deploy/ and scripts/
#   - python checks (tests/deploy/check_deploy.py): YAML parses; example configs follow
#     ficbroker's config schema; ConfigMaps equal config/*.jsonc; the Kubernetes manifests' fields
#     that matter; the Helm chart rendered and compared with the manifests; the Dockerfile (stages,
#     USER, HEALTHCHECK, COPY sources vs .dockerignore and CMakeLists.txt); the systemd unit's
#     hardening directives
#   - azure scripts: --help, argument validation, and the --dry-run config snippet they print
#   - transparent-init.sh: argument and environment validation (the real redirect is tested by
#     tests/deploy/transparent_netns_test.sh)
#   - systemd: systemd-analyze verify (no warnings allowed) and security exposure <= 2.0
#   - ficbroker --check-config on config/{kubernetes-sidecar,vm-imds,app-service,workload-identity}.jsonc
#     if a built ficbroker exists
#   - rootfs: if a built ficbroker exists and we are root, the Dockerfile's runtime-rootfs step run
#     for real on a stripped copy, then `ficbroker --version` and `probe` inside a chroot of it
#   - self-test: each check broken once on a copy of the tree (mutations) must fail
#   - with --context-build only (slow, a Release build): the Dockerfile's build stage run without
#     Docker on exactly the files its COPYs and .dockerignore let through, then the rootfs chroot
#
# Usage: tests/deploy/run.sh [--no-self-test] [--context-build] [--binary PATH]
# Needs: shellcheck, /usr/bin/python3 with python3-yaml (Debian packages); systemd-analyze optional.
# Ends with the line "deploy checks: N passed, M failed"; exits non-zero if M > 0.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PY=/usr/bin/python3
CHECKER="$ROOT/tests/deploy/check_deploy.py"
self_test=1
context_build=0
binary="${FICBROKER_BINARY:-$ROOT/build/src/ficbroker}"

while [[ $# -gt 0 ]]; do
    case "$1" in
        --no-self-test) self_test=0; shift ;;
        --context-build) context_build=1; shift ;;
        --binary) binary="${2:?--binary needs a path}"; shift 2 ;;
        -h | --help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done

passed=0
failed=0
failures=()
TMP="$(mktemp -d "${TMPDIR:-/tmp}/ficbroker-deploy.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT

pass() {
    passed=$((passed + 1))
    echo "PASS $1"
}

fail() {
    failed=$((failed + 1))
    failures+=("$1")
    echo "FAIL $1"
    if [[ -n "${2:-}" ]]; then
        head -40 <<<"$2" | while IFS= read -r line; do printf '    %s\n' "$line"; done
    fi
}

skip() {
    echo "SKIP $1"
}

section() {
    printf '\n== %s\n' "$1"
}

# Adds the counts of a check_deploy.py run (its last line is "@@counts P F") and echoes its lines.
absorb_python() {
    local out="$1" rc="$2" what="$3" counts
    grep -v '^@@counts ' <<<"$out"
    counts="$(grep '^@@counts ' <<<"$out" | tail -1)"
    if [[ -z "$counts" ]]; then
        fail "$what: check_deploy.py crashed (exit $rc)" "$out"
        return
    fi
    read -r _ p f <<<"$counts"
    passed=$((passed + p))
    failed=$((failed + f))
    if [[ "$f" -gt 0 ]]; then
        failures+=("$what: $f failed")
    fi
}

# ---------------------------------------------------------------------------------------------
section "prerequisites"
prereq_ok=1
if command -v shellcheck >/dev/null 2>&1; then
    pass "shellcheck present ($(shellcheck --version | sed -n 's/^version: //p'))"
else
    fail "shellcheck missing: apt-get install -y shellcheck"
    prereq_ok=0
fi
if [[ -x "$PY" ]] && "$PY" -c 'import yaml' 2>/dev/null; then
    pass "python3-yaml present ($("$PY" -c 'import yaml; print(yaml.__version__)'))"
else
    fail "$PY with PyYAML missing: apt-get install -y python3 python3-yaml"
    prereq_ok=0
fi

# ---------------------------------------------------------------------------------------------
section "shellcheck"
if command -v shellcheck >/dev/null 2>&1; then
    scripts=()
    while IFS= read -r -d '' f; do
        case "$f" in
            *.sh) scripts+=("$f") ;;
            *)
                if head -c 64 "$f" 2>/dev/null | grep -Eq '^#!.*(/|env )(ba)?sh\b'; then
                    scripts+=("$f")
                fi
                ;;
        esac
    done < <(find "$ROOT/deploy" "$ROOT/tests/deploy" "$ROOT/scripts" -type f ! -name '*.py' -print0 2>/dev/null | sort -z)
    if [[ ${#scripts[@]} -eq 0 ]]; then
        fail "shellcheck: no scripts found (expected deploy/**/*.sh)"
    fi
    for f in "${scripts[@]}"; do
        rel="${f#"$ROOT"/}"
        if out="$(cd "$(dirname "$f")" && shellcheck -x "$(basename "$f")" 2>&1)"; then
            pass "shellcheck $rel"
        else
            fail "shellcheck $rel" "$out"
        fi
    done
fi

# ---------------------------------------------------------------------------------------------
section "python checks (YAML, configs, Kubernetes, Helm, Dockerfile, systemd unit)"
if [[ "$prereq_ok" == 1 ]]; then
    out="$("$PY" "$CHECKER" --root "$ROOT" 2>&1)"
    absorb_python "$out" $? "check_deploy.py"
fi

# ---------------------------------------------------------------------------------------------
section "deploy/azure scripts"
azure_dry_args() {
    case "$1" in
        setup-app-tenant.sh)
            echo --resource-group rg-ficbroker --location westeurope --vm-name vm1 \
                --resource-tenant 11111111-2222-3333-4444-555555555555 ;;
        setup-resource-tenant.sh)
            echo --app-id 11111111-2222-3333-4444-555555555555 --role Reader \
                --scope /subscriptions/11111111-2222-3333-4444-555555555555/resourceGroups/rg ;;
        setup-aks-workload-identity.sh)
            echo --app-id 11111111-2222-3333-4444-555555555555 --resource-group rg --cluster aks1 \
                --namespace apps --service-account billing ;;
    esac
}
for name in setup-app-tenant.sh setup-resource-tenant.sh setup-aks-workload-identity.sh; do
    script="$ROOT/deploy/azure/$name"
    if [[ ! -x "$script" ]]; then
        fail "azure $name: missing or not executable"
        continue
    fi
    if out="$("$script" --help 2>&1)" && grep -q '^Usage:' <<<"$out"; then
        pass "azure $name --help"
    else
        fail "azure $name --help" "$out"
    fi
    out="$("$script" 2>&1)"
    rc=$?
    if [[ "$rc" == 2 ]] && grep -q 'required' <<<"$out"; then
        pass "azure $name rejects missing required flags (exit 2)"
    else
        fail "azure $name without flags: expected exit 2 and 'required', got $rc" "$out"
    fi
    out="$("$script" --bogus-flag 2>&1)"
    rc=$?
    if [[ "$rc" == 2 ]]; then
        pass "azure $name rejects unknown flags (exit 2)"
    else
        fail "azure $name --bogus-flag: expected exit 2, got $rc" "$out"
    fi
    # shellcheck disable=SC2046  # word splitting of the fixed argument list is intended
    if out="$("$script" --dry-run $(azure_dry_args "$name") 2>"$TMP/stderr")"; then
        if [[ "$prereq_ok" == 1 ]] && snippet="$("$PY" "$CHECKER" --snippet - <<<"$out" 2>&1)"; then
            pass "azure $name --dry-run prints a valid ficbroker config snippet"
        else
            fail "azure $name --dry-run snippet invalid" "${snippet:-}"$'\n'"$out"
        fi
    else
        fail "azure $name --dry-run failed" "$(cat "$TMP/stderr")"
    fi
done
# The FIC trusting the UAMI must use the principal (object) id as subject and the v2.0 issuer.
fic_out="$("$ROOT/deploy/azure/setup-app-tenant.sh" --dry-run --resource-group rg --location westeurope 2>&1 >/dev/null)"
if grep -q '"subject": "00000000-0000-0000-0000-0000000000d4"' <<<"$fic_out" &&
    grep -q '"issuer": "https://login.microsoftonline.com/00000000-0000-0000-0000-0000000000a1/v2.0"' <<<"$fic_out" &&
    grep -q '"audiences": \["api://AzureADTokenExchange"\]' <<<"$fic_out"; then
    pass "azure setup-app-tenant.sh FIC: issuer v2.0, subject = UAMI principal id, audience api://AzureADTokenExchange"
else
    fail "azure setup-app-tenant.sh FIC parameters" "$fic_out"
fi
aks_out="$("$ROOT/deploy/azure/setup-aks-workload-identity.sh" --dry-run --app-id 11111111-2222-3333-4444-555555555555 \
    --issuer https://oidc.example/issuer/ --namespace apps --service-account billing 2>&1 >/dev/null)"
if grep -q '"subject": "system:serviceaccount:apps:billing"' <<<"$aks_out" &&
    grep -q '"issuer": "https://oidc.example/issuer/"' <<<"$aks_out" &&
    grep -q 'az ad app federated-credential create --id 11111111-2222-3333-4444-555555555555' <<<"$aks_out"; then
    pass "azure setup-aks-workload-identity.sh FIC on the app: issuer kept verbatim, subject system:serviceaccount:ns:sa"
else
    fail "azure setup-aks-workload-identity.sh FIC parameters" "$aks_out"
fi

# ---------------------------------------------------------------------------------------------
section "transparent-init.sh argument handling"
tinit="$ROOT/deploy/kubernetes/transparent-init.sh"
if out="$("$tinit" --help 2>&1)" && grep -q 'uid-owner 10001 -j REDIRECT --to-ports 8181' <<<"$out"; then
    pass "transparent-init.sh --help shows the rule"
else
    fail "transparent-init.sh --help" "$out"
fi
for bad in "FICBROKER_UID=0" "FICBROKER_PORT=70000" "IMDS_ADDRESS=169.254.169" "FICBROKER_UID=abc"; do
    out="$(env "$bad" IPTABLES=/bin/false "$tinit" --check 2>&1)"
    rc=$?
    if [[ "$rc" == 1 ]] && grep -q 'transparent-init:' <<<"$out"; then
        pass "transparent-init.sh rejects $bad"
    else
        fail "transparent-init.sh should reject $bad (exit 1), got $rc" "$out"
    fi
done

# ---------------------------------------------------------------------------------------------
section "systemd"
unit="$ROOT/deploy/systemd/ficbroker.service"
if command -v systemd-analyze >/dev/null 2>&1; then
    # verify insists that ExecStart binaries exist: point them at a stub, keep everything else.
    mkdir -p "$TMP/systemd"
    printf '#!/bin/sh\nexit 0\n' >"$TMP/systemd/ficbroker"
    chmod 0755 "$TMP/systemd/ficbroker"
    sed "s|/usr/local/bin/ficbroker|$TMP/systemd/ficbroker|g" "$unit" >"$TMP/systemd/ficbroker.service"
    cp "$ROOT/deploy/systemd/ficbroker.socket" "$TMP/systemd/ficbroker.socket"
    out="$(systemd-analyze verify "$TMP/systemd/ficbroker.service" "$TMP/systemd/ficbroker.socket" 2>&1)"
    rc=$?
    if [[ "$rc" == 0 && -z "$out" ]]; then
        pass "systemd-analyze verify ficbroker.service (no warnings)"
    else
        fail "systemd-analyze verify ficbroker.service (exit $rc)" "$out"
    fi
    out="$(systemd-analyze security --offline=yes --threshold=20 "$TMP/systemd/ficbroker.service" 2>&1)"
    rc=$?
    level="$(grep -o 'Overall exposure level for [^:]*: [0-9.]*' <<<"$out" | awk '{print $NF}')"
    if [[ "$rc" == 0 && -n "$level" ]]; then
        pass "systemd-analyze security: exposure $level <= 2.0"
    else
        fail "systemd-analyze security: exposure ${level:-?} (threshold 2.0, exit $rc)" "$(tail -5 <<<"$out")"
    fi
else
    skip "systemd-analyze not installed: unit verification skipped (static checks still ran)"
fi

# ---------------------------------------------------------------------------------------------
section "ficbroker --check-config on the example configs"
if [[ -x "$binary" ]]; then
    # The configs name files that exist only where they are deployed: point identity_header_file at a
    # scratch secret. The app_service and workload_identity sources read the environment the platform
    # (or the workload identity webhook) provides.
    printf '%s\n' 0123456789abcdef0123456789abcdef >"$TMP/identity-header"
    chmod 0600 "$TMP/identity-header"
    for name in kubernetes-sidecar vm-imds app-service workload-identity; do
        sed -E "s|\"identity_header_file\": *\"[^\"]*\"|\"identity_header_file\": \"$TMP/identity-header\"|" \
            "$ROOT/config/$name.jsonc" >"$TMP/$name.jsonc"
        if out="$(IDENTITY_ENDPOINT=http://127.0.0.1:41234/msi/token IDENTITY_HEADER=platform-secret \
            AZURE_FEDERATED_TOKEN_FILE=/var/run/secrets/azure/tokens/azure-identity-token \
            "$binary" --check-config --config "$TMP/$name.jsonc" 2>&1)"; then
            pass "ficbroker --check-config config/$name.jsonc"
        else
            fail "ficbroker --check-config config/$name.jsonc" "$out"
        fi
    done
else
    skip "no ficbroker binary at $binary: --check-config of the example configs skipped (schema checked above)"
fi

# ---------------------------------------------------------------------------------------------
section "Dockerfile runtime rootfs"
if [[ ! -x "$binary" ]]; then
    skip "no ficbroker binary at $binary: rootfs smoke test skipped"
elif [[ "$(id -u)" != 0 ]]; then
    skip "not root: rootfs smoke test (chroot) skipped"
elif [[ "$prereq_ok" == 1 ]]; then
    out="$("$PY" "$CHECKER" --root "$ROOT" --rootfs-smoke "$binary" 2>&1)"
    absorb_python "$out" $? "rootfs smoke"
fi

if [[ "$context_build" == 1 && "$prereq_ok" == 1 ]]; then
    section "Dockerfile build stage without Docker"
    if [[ "$(id -u)" != 0 ]]; then
        skip "not root: --context-build needs chroot"
    else
        out="$("$PY" "$CHECKER" --root "$ROOT" --context-build 2>&1)"
        absorb_python "$out" $? "context build"
    fi
fi

# ---------------------------------------------------------------------------------------------
if [[ "$self_test" == 1 && "$prereq_ok" == 1 ]]; then
    section "self-test: every check must catch a deliberate break"
    out="$("$PY" "$CHECKER" --root "$ROOT" --self-test 2>&1)"
    absorb_python "$out" $? "self-test"

    # The same for the checks that live in this script.
    mut="$TMP/mutations"
    mkdir -p "$mut"
    # shellcheck disable=SC2016  # the $ is meant literally: it goes into the mutated script
    sed 's/^is_port "\$IMDS_PORT" ||/echo $IMDS_PORT; is_port "$IMDS_PORT" ||/' "$tinit" >"$mut/transparent-init.sh"
    if cmp -s "$tinit" "$mut/transparent-init.sh"; then
        fail "mutation not applied: unquoted expansion in transparent-init.sh"
    elif ! shellcheck "$mut/transparent-init.sh" >/dev/null 2>&1; then
        pass "mutation detected: shellcheck flags an unquoted expansion"
    else
        fail "mutation missed: shellcheck passed a script with an unquoted expansion"
    fi
    if command -v systemd-analyze >/dev/null 2>&1; then
        sed 's/^ProtectHome=yes/ProtecHome=yes/' "$TMP/systemd/ficbroker.service" >"$mut/ficbroker.service"
        out="$(systemd-analyze verify "$mut/ficbroker.service" 2>&1)"
        if [[ -n "$out" ]]; then
            pass "mutation detected: systemd-analyze verify reports a misspelt directive"
        else
            fail "mutation missed: systemd-analyze verify was silent about ProtecHome="
        fi
        sed -e 's/^PrivateTmp=yes/PrivateTmp=no/' -e 's/^ProtectSystem=strict/ProtectSystem=no/' \
            -e 's/^CapabilityBoundingSet=$/CapabilityBoundingSet=CAP_SYS_ADMIN CAP_NET_ADMIN/' \
            -e '/^SystemCallFilter=/d' -e '/^RestrictAddressFamilies=/d' -e '/^PrivateDevices=/d' \
            "$TMP/systemd/ficbroker.service" >"$mut/weak.service"
        if ! systemd-analyze security --offline=yes --threshold=20 "$mut/weak.service" >/dev/null 2>&1; then
            pass "mutation detected: security exposure threshold fails a weakened unit"
        else
            fail "mutation missed: a weakened unit passed the exposure threshold"
        fi
    fi
    out="$("$ROOT/deploy/azure/setup-app-tenant.sh" --dry-run --resource-group rg --location westeurope 2>/dev/null |
        sed 's/"client_id"/"clientid"/')"
    if ! "$PY" "$CHECKER" --snippet - <<<"$out" >/dev/null 2>&1; then
        pass "mutation detected: snippet check rejects a misspelt config key"
    else
        fail "mutation missed: snippet check accepted \"clientid\""
    fi
fi

echo
if [[ ${#failures[@]} -gt 0 ]]; then
    echo "failures:"
    printf '  - %s\n' "${failures[@]}"
fi
echo "deploy checks: $passed passed, $failed failed"
[[ "$failed" == 0 ]]
