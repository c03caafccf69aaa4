#!/usr/bin/env bash
# setup-resource-tenant.sh: the resource tenant side of ficbroker's identity chain.
#
# Run logged in to the RESOURCE tenant (az login --tenant <resource tenant id>). It:
#   1. provisions the multi-tenant app (created by setup-app-tenant.sh in the app tenant) into this
#      tenant as an enterprise application (service principal): az ad sp create --id <app id>,
#   2. optionally grants that service principal an Azure RBAC role on a scope,
# and prints the ficbroker "targets" entry for this tenant. Safe to re-run.
set -euo pipefail

script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$script_dir/common.sh"

usage() {
    cat <<'EOF'
Usage: setup-resource-tenant.sh --app-id GUID [--role ROLE --scope SCOPE] [options]

Creates the service principal of the multi-tenant app in the tenant of the current 'az login' and
optionally assigns it a role. Safe to re-run.

Required (flag or environment variable):
  --app-id GUID             the multi-tenant app's application (client) id        FICBROKER_APP_ID

Options:
  --tenant GUID             expected resource tenant id; refuse to run if the current login is in
                            another tenant (default: the current login's tenant)  FICBROKER_RESOURCE_TENANT
  --subscription ID         subscription for the role assignment                 FICBROKER_SUBSCRIPTION
  --role ROLE               Azure role name or id to grant, e.g. "Reader"        FICBROKER_ROLE
  --scope SCOPE             scope of the role, e.g. /subscriptions/<id>/resourceGroups/<rg>
                                                                                 FICBROKER_SCOPE
  --source NAME             ficbroker source name for the printed config (default: uami)
  --cloud public|usgov|china  (default: public)                                 FICBROKER_CLOUD
  --dry-run                 print the az commands instead of running them (placeholder ids)
  -h, --help                show this text

Microsoft Graph application permissions are not Azure roles: an administrator of this tenant grants
them by consenting for the app (see deploy/azure/README.md).
EOF
}

app_id="${FICBROKER_APP_ID:-}"
tenant="${FICBROKER_RESOURCE_TENANT:-}"
subscription="${FICBROKER_SUBSCRIPTION:-}"
role="${FICBROKER_ROLE:-}"
scope="${FICBROKER_SCOPE:-}"
source_name=uami
cloud="${FICBROKER_CLOUD:-public}"
# Filled by query:
current_tenant="" sp_object_id="" existing_assignment=""

while [[ $# -gt 0 ]]; do
    case "$1" in
        --app-id) require_value "$1" "${2:-}"; app_id="$2"; shift 2 ;;
        --tenant) require_value "$1" "${2:-}"; tenant="$2"; shift 2 ;;
        --subscription) require_value "$1" "${2:-}"; subscription="$2"; shift 2 ;;
        --role) require_value "$1" "${2:-}"; role="$2"; shift 2 ;;
        --scope) require_value "$1" "${2:-}"; scope="$2"; shift 2 ;;
        --source) require_value "$1" "${2:-}"; source_name="$2"; shift 2 ;;
        --cloud) require_value "$1" "${2:-}"; cloud="$2"; shift 2 ;;
        --dry-run) DRY_RUN=1; shift ;;
        -h | --help) usage; exit 0 ;;
        *) usage_error "unknown argument '$1'" ;;
    esac
done

[[ -n "$app_id" ]] || usage_error "--app-id is required"
require_guid --app-id "$app_id"
[[ -z "$tenant" ]] || require_guid --tenant "$tenant"
[[ -z "$subscription" ]] || require_guid --subscription "$subscription"
if [[ -n "$role" || -n "$scope" ]]; then
    [[ -n "$role" && -n "$scope" ]] || usage_error "--role and --scope go together"
    [[ "$scope" == /* ]] || usage_error "--scope must be a resource id starting with '/', got '$scope'"
fi
[[ "$source_name" =~ ^[A-Za-z0-9_.-]+$ ]] || usage_error "--source must be a plain name, got '$source_name'"
set_cloud "$cloud"

require_az
[[ "$DRY_RUN" == 1 ]] && log "dry run: nothing is changed; ids below are placeholders"

if [[ -n "$subscription" ]]; then
    run az account set --subscription "$subscription"
fi
query current_tenant "${tenant:-$DRY_RESOURCE_TENANT}" az account show --query tenantId -o tsv
is_guid "$current_tenant" || die "could not read the tenant id of the current login"
if [[ -n "$tenant" && "${current_tenant,,}" != "${tenant,,}" ]]; then
    die "logged in to tenant $current_tenant, not $tenant: run 'az login --tenant $tenant'"
fi
log "resource tenant: $current_tenant"

# 1. The app's service principal in this tenant ("enterprise application").
if exists az ad sp show --id "$app_id"; then
    log "service principal for app $app_id already exists"
else
    run az ad sp create --id "$app_id" --output none
fi
query sp_object_id "$DRY_SP_OBJECT" az ad sp show --id "$app_id" --query id -o tsv
is_guid "$sp_object_id" || die "could not read the service principal's object id (is $app_id multi-tenant?)"
log "service principal object id: $sp_object_id"

# 2. Azure RBAC.
if [[ -n "$role" ]]; then
    query existing_assignment "" az role assignment list --assignee "$sp_object_id" --role "$role" \
        --scope "$scope" --query '[0].id' -o tsv
    if [[ -n "$existing_assignment" ]]; then
        log "role '$role' on $scope already assigned"
    else
        run az role assignment create --assignee-object-id "$sp_object_id" \
            --assignee-principal-type ServicePrincipal --role "$role" --scope "$scope" --output none
    fi
else
    log "no --role given: grant the service principal access to your resources yourself"
fi

cat >&2 <<EOF

Done. Role assignments can take a few minutes to apply.
ficbroker "targets" entry for this tenant (add it to the config printed by setup-app-tenant.sh):
EOF
cat <<EOF
{
  "targets": [
    {
      "tenant_id": "$current_tenant",
      "client_id": "$app_id",
      "source": "$source_name",
      "default": true,
      "prewarm": ["https://management.azure.com"],
      "cloud": "$cloud"
    }
  ]
}
EOF
