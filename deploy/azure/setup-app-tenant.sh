#!/usr/bin/env bash
# setup-app-tenant.sh: the app (home) tenant side of ficbroker's identity chain.
#
# Creates, idempotently, in the tenant you are logged in to:
#   1. a user-assigned managed identity (UAMI),
#   2. a multi-tenant app registration,
#   3. a federated identity credential (FIC) on that app that trusts the UAMI:
#        issuer   https://login.microsoftonline.com/<app tenant>/v2.0
#        subject  the UAMI's principal (object) id, NOT its client id
#        audience api://AzureADTokenExchange
#   4. optionally assigns the UAMI to a VM or VM scale set,
# and prints the ficbroker config snippet to use. Run setup-resource-tenant.sh next, logged in to
# each resource tenant.
set -euo pipefail

script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$script_dir/common.sh"

usage() {
    cat <<'EOF'
Usage: setup-app-tenant.sh --resource-group NAME --location LOCATION [options]

Creates the UAMI, the multi-tenant app registration and the FIC that lets the UAMI act as the app,
in the tenant of the current 'az login'. Safe to re-run.

Required (flag or environment variable):
  --resource-group NAME     resource group for the UAMI (created if missing)     FICBROKER_RESOURCE_GROUP
  --location LOCATION       Azure region, e.g. westeurope                         FICBROKER_LOCATION

Options:
  --subscription ID         subscription to use (default: the current one)       FICBROKER_SUBSCRIPTION
  --identity-name NAME      UAMI name (default: ficbroker-uami)                  FICBROKER_IDENTITY_NAME
  --app-name NAME           app registration display name
                            (default: ficbroker-cross-tenant)                    FICBROKER_APP_NAME
  --fic-name NAME           FIC name (default: uami-<identity name>)             FICBROKER_FIC_NAME
  --vm-name NAME            assign the UAMI to this VM                           FICBROKER_VM_NAME
  --vm-resource-group NAME  the VM's resource group (default: --resource-group)
  --vmss-name NAME          assign the UAMI to this VM scale set (e.g. an AKS node pool's)
  --vmss-resource-group NAME  the scale set's resource group (for AKS: the MC_... node resource group)
  --resource-tenant GUID    resource tenant id, only for the printed config      FICBROKER_RESOURCE_TENANT
  --cloud public|usgov|china  (default: public)                                 FICBROKER_CLOUD
  --dry-run                 print the az commands instead of running them (placeholder ids)
  -h, --help                show this text

AKS: a UAMI on the node pool's scale set serves every pod on those nodes. To bind the identity to
one service account instead, use setup-aks-workload-identity.sh (no UAMI needed).
EOF
}

resource_group="${FICBROKER_RESOURCE_GROUP:-}"
location="${FICBROKER_LOCATION:-}"
subscription="${FICBROKER_SUBSCRIPTION:-}"
identity_name="${FICBROKER_IDENTITY_NAME:-ficbroker-uami}"
app_name="${FICBROKER_APP_NAME:-ficbroker-cross-tenant}"
fic_name="${FICBROKER_FIC_NAME:-}"
vm_name="${FICBROKER_VM_NAME:-}"
vm_resource_group=""
vmss_name=""
vmss_resource_group=""
resource_tenant="${FICBROKER_RESOURCE_TENANT:-}"
cloud="${FICBROKER_CLOUD:-public}"
# Filled by query:
app_tenant="" uami_client_id="" uami_principal_id="" uami_id="" app_ids="" app_id=""

while [[ $# -gt 0 ]]; do
    case "$1" in
        --resource-group) require_value "$1" "${2:-}"; resource_group="$2"; shift 2 ;;
        --location) require_value "$1" "${2:-}"; location="$2"; shift 2 ;;
        --subscription) require_value "$1" "${2:-}"; subscription="$2"; shift 2 ;;
        --identity-name) require_value "$1" "${2:-}"; identity_name="$2"; shift 2 ;;
        --app-name) require_value "$1" "${2:-}"; app_name="$2"; shift 2 ;;
        --fic-name) require_value "$1" "${2:-}"; fic_name="$2"; shift 2 ;;
        --vm-name) require_value "$1" "${2:-}"; vm_name="$2"; shift 2 ;;
        --vm-resource-group) require_value "$1" "${2:-}"; vm_resource_group="$2"; shift 2 ;;
        --vmss-name) require_value "$1" "${2:-}"; vmss_name="$2"; shift 2 ;;
        --vmss-resource-group) require_value "$1" "${2:-}"; vmss_resource_group="$2"; shift 2 ;;
        --resource-tenant) require_value "$1" "${2:-}"; resource_tenant="$2"; shift 2 ;;
        --cloud) require_value "$1" "${2:-}"; cloud="$2"; shift 2 ;;
        --dry-run) DRY_RUN=1; shift ;;
        -h | --help) usage; exit 0 ;;
        *) usage_error "unknown argument '$1'" ;;
    esac
done

[[ -n "$resource_group" ]] || usage_error "--resource-group is required"
[[ -n "$location" ]] || usage_error "--location is required"
require_resource_name --resource-group "$resource_group"
[[ "$location" =~ ^[a-z0-9]+$ ]] || usage_error "--location must look like 'westeurope', got '$location'"
require_resource_name --identity-name "$identity_name"
[[ -n "$app_name" && ${#app_name} -le 120 ]] || usage_error "--app-name must be 1-120 characters"
fic_name="${fic_name:-uami-$identity_name}"
require_fic_name --fic-name "$fic_name"
[[ -z "$subscription" ]] || require_guid --subscription "$subscription"
[[ -z "$vm_name" ]] || require_resource_name --vm-name "$vm_name"
vm_resource_group="${vm_resource_group:-$resource_group}"
require_resource_name --vm-resource-group "$vm_resource_group"
if [[ -n "$vmss_name" ]]; then
    require_resource_name --vmss-name "$vmss_name"
    [[ -n "$vmss_resource_group" ]] || usage_error "--vmss-name needs --vmss-resource-group"
    require_resource_name --vmss-resource-group "$vmss_resource_group"
fi
[[ -z "$resource_tenant" ]] || require_guid --resource-tenant "$resource_tenant"
set_cloud "$cloud"

require_az
[[ "$DRY_RUN" == 1 ]] && log "dry run: nothing is changed; ids below are placeholders"

if [[ -n "$subscription" ]]; then
    run az account set --subscription "$subscription"
fi
query app_tenant "$DRY_APP_TENANT" az account show --query tenantId -o tsv
is_guid "$app_tenant" || die "could not read the tenant id of the current login"
log "app tenant: $app_tenant"

# 1. Resource group and UAMI.
if ! exists az group show --name "$resource_group"; then
    run az group create --name "$resource_group" --location "$location" --output none
fi
if ! exists az identity show --resource-group "$resource_group" --name "$identity_name"; then
    run az identity create --resource-group "$resource_group" --name "$identity_name" \
        --location "$location" --output none
fi
query uami_client_id "$DRY_UAMI_CLIENT" az identity show --resource-group "$resource_group" \
    --name "$identity_name" --query clientId -o tsv
query uami_principal_id "$DRY_UAMI_PRINCIPAL" az identity show --resource-group "$resource_group" \
    --name "$identity_name" --query principalId -o tsv
query uami_id "/subscriptions/<subscription>/resourceGroups/$resource_group/providers/Microsoft.ManagedIdentity/userAssignedIdentities/$identity_name" \
    az identity show --resource-group "$resource_group" --name "$identity_name" --query id -o tsv
is_guid "$uami_client_id" || die "unexpected UAMI client id '$uami_client_id'"
is_guid "$uami_principal_id" || die "unexpected UAMI principal id '$uami_principal_id'"
log "UAMI $identity_name: client id $uami_client_id, principal (object) id $uami_principal_id"

# 2. The multi-tenant app registration (display names are not unique: refuse to guess).
query app_ids "" az ad app list --display-name "$app_name" --query '[].appId' -o tsv
app_count=0
[[ -z "$app_ids" ]] || app_count="$(printf '%s\n' "$app_ids" | wc -l)"
if [[ "$app_count" -gt 1 ]]; then
    die "$app_count app registrations are named '$app_name'; pass a unique --app-name"
elif [[ "$app_count" -eq 1 ]]; then
    app_id="$app_ids"
    log "reusing app registration '$app_name' ($app_id)"
    run az ad app update --id "$app_id" --sign-in-audience AzureADMultipleOrgs
else
    query app_id "$DRY_APP_ID" az ad app create --display-name "$app_name" \
        --sign-in-audience AzureADMultipleOrgs --query appId -o tsv
    log "created app registration '$app_name' ($app_id)"
fi
is_guid "$app_id" || die "unexpected app id '$app_id'"

# 3. The FIC: the subject is the UAMI's principal (object) id, case-sensitive, exact.
upsert_fic "$app_id" "$fic_name" "https://$LOGIN_HOST/$app_tenant/v2.0" "$uami_principal_id" \
    "$FIC_AUDIENCE" "ficbroker: UAMI $identity_name acts as this app"

# 4. Put the UAMI where ficbroker runs.
if [[ -n "$vm_name" ]]; then
    run az vm identity assign --resource-group "$vm_resource_group" --name "$vm_name" \
        --identities "$uami_id" --output none
fi
if [[ -n "$vmss_name" ]]; then
    run az vmss identity assign --resource-group "$vmss_resource_group" --name "$vmss_name" \
        --identities "$uami_id" --output none
    log "scale sets with a manual upgrade policy also need: az vmss update-instances --resource-group $vmss_resource_group --name $vmss_name --instance-ids '*'"
fi
if [[ -z "$vm_name" && -z "$vmss_name" ]]; then
    log "the UAMI is not assigned anywhere yet: use --vm-name/--vmss-name, or assign it to your App Service / Container App"
fi

tenant_for_config="${resource_tenant:-$DRY_RESOURCE_TENANT}"
[[ -n "$resource_tenant" ]] || warn "no --resource-tenant given: the config below has a placeholder tenant id"

cat >&2 <<EOF

Done. New FICs can take a few minutes to be honoured (AADSTS70021 meanwhile).
Next, logged in to each resource tenant:
  deploy/azure/setup-resource-tenant.sh --app-id $app_id --role <role> --scope <scope>

ficbroker config (sources + targets; see config/vm-imds.jsonc for the rest):
EOF
cat <<EOF
{
  "sources": {
    "uami": {
      "type": "imds",
      "endpoint": "http://169.254.169.254",
      "client_id": "$uami_client_id"
    }
  },
  "targets": [
    {
      "tenant_id": "$tenant_for_config",
      "client_id": "$app_id",
      "source": "uami",
      "default": true,
      "prewarm": ["https://graph.microsoft.com"],
      "cloud": "$cloud"
    }
  ]
}
EOF
