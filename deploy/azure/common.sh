# shellcheck shell=bash disable=SC2034  # (the DRY_* constants are used by the scripts that source this)
# Helpers shared by the deploy/azure/setup-*.sh scripts. Sourced, not run.

# 1 while --dry-run: commands are printed, not run, and queries return placeholder ids.
DRY_RUN="${DRY_RUN:-0}"
# Placeholder ids used by --dry-run (GUID-shaped so the printed config has the real format).
readonly DRY_APP_TENANT=00000000-0000-0000-0000-0000000000a1
readonly DRY_RESOURCE_TENANT=00000000-0000-0000-0000-0000000000b2
readonly DRY_UAMI_CLIENT=00000000-0000-0000-0000-0000000000c3
readonly DRY_UAMI_PRINCIPAL=00000000-0000-0000-0000-0000000000d4
readonly DRY_APP_ID=00000000-0000-0000-0000-0000000000e5
readonly DRY_SP_OBJECT=00000000-0000-0000-0000-0000000000f6

log() {
    printf '==> %s\n' "$*" >&2
}

warn() {
    printf 'warning: %s\n' "$*" >&2
}

die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}

# usage_error MESSAGE: bad invocation; exit status 2 like other CLI tools.
usage_error() {
    printf 'error: %s\n' "$*" >&2
    printf 'Run with --help for usage.\n' >&2
    exit 2
}

show_cmd() {
    local word out='+'
    for word in "$@"; do
        out+=" $(printf '%q' "$word")"
    done
    printf '%s\n' "$out" >&2
}

# run CMD...: a command that changes something. Printed; skipped under --dry-run.
run() {
    show_cmd "$@"
    if [[ "$DRY_RUN" == 1 ]]; then
        return 0
    fi
    "$@"
}

# query VAR PLACEHOLDER CMD...: capture CMD's trimmed stdout in VAR; under --dry-run VAR=PLACEHOLDER.
query() {
    local __var="$1" __placeholder="$2" __out
    shift 2
    show_cmd "$@"
    if [[ "$DRY_RUN" == 1 ]]; then
        printf -v "$__var" '%s' "$__placeholder"
        return 0
    fi
    __out="$("$@")"
    __out="${__out//$'\r'/}"
    printf -v "$__var" '%s' "${__out%$'\n'}"
}

# exists CMD...: 0 if CMD succeeds (output discarded). Under --dry-run: assume absent.
exists() {
    show_cmd "$@"
    if [[ "$DRY_RUN" == 1 ]]; then
        return 1
    fi
    "$@" >/dev/null 2>&1
}

require_value() {
    # require_value FLAG VALUE: the flag needs an argument.
    [[ -n "${2:-}" && "${2:0:2}" != "--" ]] || usage_error "$1 needs a value"
}

is_guid() {
    [[ "$1" =~ ^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$ ]]
}

require_guid() {
    # require_guid NAME VALUE
    is_guid "$2" || usage_error "$1 must be a GUID, got '$2'"
}

# Azure resource names used here: letters, digits, '-', '_', '.', 1..90 characters.
require_resource_name() {
    [[ "$2" =~ ^[A-Za-z0-9][A-Za-z0-9._-]{0,89}$ ]] || usage_error "$1 is not a valid name: '$2'"
}

# Kubernetes namespace / service account names (DNS-1123 label / subdomain).
require_dns1123() {
    [[ "$2" =~ ^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$ ]] || usage_error "$1 is not a valid Kubernetes name: '$2'"
}

# FIC names: 3..120 characters, letters, digits, '-' and '_' (no wildcards).
require_fic_name() {
    [[ "$2" =~ ^[A-Za-z0-9][A-Za-z0-9_-]{2,119}$ ]] || usage_error "$1 must be 3-120 of [A-Za-z0-9_-], got '$2'"
}

# set_cloud NAME: sets LOGIN_HOST and FIC_AUDIENCE for public | usgov | china.
set_cloud() {
    case "$1" in
        public)
            LOGIN_HOST=login.microsoftonline.com
            FIC_AUDIENCE=api://AzureADTokenExchange
            ;;
        usgov)
            LOGIN_HOST=login.microsoftonline.us
            FIC_AUDIENCE=api://AzureADTokenExchangeUSGov
            ;;
        china)
            LOGIN_HOST=login.chinacloudapi.cn
            FIC_AUDIENCE=api://AzureADTokenExchangeChina
            ;;
        *) usage_error "--cloud must be public, usgov or china, got '$1'" ;;
    esac
    export LOGIN_HOST FIC_AUDIENCE
}

require_az() {
    if [[ "$DRY_RUN" == 1 ]]; then
        return 0
    fi
    command -v az >/dev/null 2>&1 || die "the Azure CLI (az) is not installed; see https://learn.microsoft.com/cli/azure/install-azure-cli"
    az account show >/dev/null 2>&1 || die "not logged in: run 'az login --tenant <tenant id>' first"
}

# json_string VALUE: VALUE as a JSON string literal (ids and URLs here; escapes \ and ").
json_string() {
    local s="$1"
    s="${s//\\/\\\\}"
    s="${s//\"/\\\"}"
    printf '"%s"' "$s"
}

# ensure_scratch_dir: sets SCRATCH_DIR to a private temporary directory, made once and removed at exit.
# (Not called in $(...): the variable and the trap must be set in this shell.)
SCRATCH_DIR=""
ensure_scratch_dir() {
    if [[ -z "$SCRATCH_DIR" ]]; then
        SCRATCH_DIR="$(mktemp -d "${TMPDIR:-/tmp}/ficbroker-azure.XXXXXX")"
        # shellcheck disable=SC2064  # expand now: remove this very directory
        trap "rm -rf '$SCRATCH_DIR'" EXIT
    fi
}

# upsert_fic APP_ID NAME ISSUER SUBJECT AUDIENCE DESCRIPTION: create or update a FIC on an app registration.
upsert_fic() {
    local app_id="$1" name="$2" issuer="$3" subject="$4" audience="$5" description="$6"
    local params existing
    ensure_scratch_dir
    params="$SCRATCH_DIR/fic-$name.json"
    cat >"$params" <<EOF
{
  "name": $(json_string "$name"),
  "issuer": $(json_string "$issuer"),
  "subject": $(json_string "$subject"),
  "description": $(json_string "$description"),
  "audiences": [$(json_string "$audience")]
}
EOF
    log "federated identity credential '$name' on app $app_id:"
    sed 's/^/    /' "$params" >&2
    query existing "" az ad app federated-credential list --id "$app_id" \
        --query "[?name=='$name'].name | [0]" -o tsv
    if [[ -n "$existing" ]]; then
        run az ad app federated-credential update --id "$app_id" \
            --federated-credential-id "$name" --parameters "@$params" --output none
    else
        run az ad app federated-credential create --id "$app_id" \
            --parameters "@$params" --output none
    fi
}
