#!/usr/bin/env bash
# setup-aks-workload-identity.sh: let a Kubernetes service account act as the multi-tenant app.
#
# Run logged in to the APP tenant (where the multi-tenant app registration lives). It adds to the app
# registration a federated identity credential that trusts the AKS cluster's OIDC issuer directly:
#   issuer   the cluster's OIDC issuer URL (exactly as AKS reports it, trailing slash included)
#   subject  system:serviceaccount:<namespace>:<service account>
#   audience api://AzureADTokenExchange (the audience of the token the webhook projects)
# ficbroker's "workload_identity" source then presents the projected service-account token straight to
# the resource tenant as the app's client assertion: one hop.
#
# Do not chain service account -> UAMI -> app: a token obtained through a FIC cannot itself be used as a
# FIC, and Entra rejects it with AADSTS700231. That is why this FIC is on the app, not on a UAMI.
set -euo pipefail

script_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source-path=SCRIPTDIR source=common.sh
source "$script_dir/common.sh"

usage() {
    cat <<'EOF'
Usage: setup-aks-workload-identity.sh --app-id GUID (--resource-group RG --cluster NAME | --issuer URL) [options]

Adds a FIC trusting system:serviceaccount:<namespace>:<service account> of an AKS cluster to the
multi-tenant app registration, in the tenant of the current 'az login'. Safe to re-run.

Required (flag or environment variable):
  --app-id GUID             the multi-tenant app's application (client) id        FICBROKER_APP_ID
  --resource-group RG       the AKS cluster's resource group                      FICBROKER_AKS_RESOURCE_GROUP
  --cluster NAME            the AKS cluster                                       FICBROKER_AKS_CLUSTER
    or
  --issuer URL              the OIDC issuer URL, if you already have it (any Kubernetes cluster
                            with a public OIDC issuer works)                      FICBROKER_OIDC_ISSUER

Options:
  --namespace NS            service account namespace (default: default)         FICBROKER_NAMESPACE
  --service-account NAME    service account name (default: demo-app)             FICBROKER_SERVICE_ACCOUNT
  --fic-name NAME           FIC name (default: aks-<cluster>-<namespace>-<sa>)   FICBROKER_FIC_NAME
  --audience AUD            FIC audience (default: api://AzureADTokenExchange, the webhook's)
  --enable-workload-identity  first run: az aks update --enable-oidc-issuer --enable-workload-identity
  --resource-tenant GUID    resource tenant id, only for the printed config      FICBROKER_RESOURCE_TENANT
  --cloud public|usgov|china  (default: public; only recorded in the printed config)  FICBROKER_CLOUD
  --dry-run                 print the az commands instead of running them (placeholder ids)
  -h, --help                show this text

An app registration holds at most 20 FICs: one per (cluster, namespace, service account).
EOF
}

app_id="${FICBROKER_APP_ID:-}"
aks_resource_group="${FICBROKER_AKS_RESOURCE_GROUP:-}"
cluster="${FICBROKER_AKS_CLUSTER:-}"
issuer="${FICBROKER_OIDC_ISSUER:-}"
namespace="${FICBROKER_NAMESPACE:-default}"
service_account="${FICBROKER_SERVICE_ACCOUNT:-demo-app}"
fic_name="${FICBROKER_FIC_NAME:-}"
audience=api://AzureADTokenExchange
enable_wi=0
resource_tenant="${FICBROKER_RESOURCE_TENANT:-}"
cloud="${FICBROKER_CLOUD:-public}"

while [[ $# -gt 0 ]]; do
    case "$1" in
        --app-id) require_value "$1" "${2:-}"; app_id="$2"; shift 2 ;;
        --resource-group) require_value "$1" "${2:-}"; aks_resource_group="$2"; shift 2 ;;
        --cluster) require_value "$1" "${2:-}"; cluster="$2"; shift 2 ;;
        --issuer) require_value "$1" "${2:-}"; issuer="$2"; shift 2 ;;
        --namespace) require_value "$1" "${2:-}"; namespace="$2"; shift 2 ;;
        --service-account) require_value "$1" "${2:-}"; service_account="$2"; shift 2 ;;
        --fic-name) require_value "$1" "${2:-}"; fic_name="$2"; shift 2 ;;
        --audience) require_value "$1" "${2:-}"; audience="$2"; shift 2 ;;
        --enable-workload-identity) enable_wi=1; shift ;;
        --resource-tenant) require_value "$1" "${2:-}"; resource_tenant="$2"; shift 2 ;;
        --cloud) require_value "$1" "${2:-}"; cloud="$2"; shift 2 ;;
        --dry-run) DRY_RUN=1; shift ;;
        -h | --help) usage; exit 0 ;;
        *) usage_error "unknown argument '$1'" ;;
    esac
done

[[ -n "$app_id" ]] || usage_error "--app-id is required"
require_guid --app-id "$app_id"
if [[ -z "$issuer" ]]; then
    [[ -n "$aks_resource_group" && -n "$cluster" ]] ||
        usage_error "give --resource-group and --cluster, or --issuer"
fi
if [[ -n "$aks_resource_group" || -n "$cluster" ]]; then
    [[ -n "$aks_resource_group" && -n "$cluster" ]] || usage_error "--resource-group and --cluster go together"
    require_resource_name --resource-group "$aks_resource_group"
    require_resource_name --cluster "$cluster"
fi
if [[ "$enable_wi" == 1 && -z "$cluster" ]]; then
    usage_error "--enable-workload-identity needs --resource-group and --cluster"
fi
if [[ -n "$issuer" ]]; then
    [[ "$issuer" =~ ^https://[^[:space:]]+$ ]] || usage_error "--issuer must be an https URL, got '$issuer'"
fi
require_dns1123 --namespace "$namespace"
require_dns1123 --service-account "$service_account"
[[ "$audience" =~ ^[^[:space:]*]+$ ]] || usage_error "--audience must not contain spaces or wildcards"
if [[ -z "$fic_name" ]]; then
    fic_name="aks-${cluster:-cluster}-$namespace-$service_account"
    fic_name="${fic_name//./-}"
    fic_name="${fic_name:0:120}"
fi
require_fic_name --fic-name "$fic_name"
[[ -z "$resource_tenant" ]] || require_guid --resource-tenant "$resource_tenant"
set_cloud "$cloud"

require_az
[[ "$DRY_RUN" == 1 ]] && log "dry run: nothing is changed; ids below are placeholders"

if [[ "$enable_wi" == 1 ]]; then
    run az aks update --resource-group "$aks_resource_group" --name "$cluster" \
        --enable-oidc-issuer --enable-workload-identity --output none
fi
if [[ -z "$issuer" ]]; then
    query issuer "https://westeurope.oic.prod-aks.azure.com/$DRY_APP_TENANT/00000000-0000-0000-0000-000000000000/" \
        az aks show --resource-group "$aks_resource_group" --name "$cluster" \
        --query oidcIssuerProfile.issuerUrl -o tsv
    [[ -n "$issuer" && "$issuer" != "None" ]] ||
        die "cluster $cluster has no OIDC issuer: re-run with --enable-workload-identity"
fi
log "OIDC issuer: $issuer"

subject="system:serviceaccount:$namespace:$service_account"
upsert_fic "$app_id" "$fic_name" "$issuer" "$subject" "$audience" \
    "ficbroker: service account $namespace/$service_account of ${cluster:-$issuer} acts as this app"

tenant_for_config="${resource_tenant:-$DRY_RESOURCE_TENANT}"
[[ -n "$resource_tenant" ]] || warn "no --resource-tenant given: the config below has a placeholder tenant id"

cat >&2 <<EOF

Done. New FICs can take a few minutes to be honoured (AADSTS70021 meanwhile).
Provision the app in each resource tenant with setup-resource-tenant.sh --app-id $app_id.

Kubernetes side (see deploy/kubernetes/sidecar-workload-identity.yaml):
  - ServiceAccount $namespace/$service_account, annotated azure.workload.identity/client-id: "$app_id"
  - pod label azure.workload.identity/use: "true"
  - pod annotation azure.workload.identity/skip-containers: "<your app containers>" so that the
    webhook's AZURE_FEDERATED_TOKEN_FILE stays out of the apps (it would pre-empt managed identity)

ficbroker config (sources + targets; see config/workload-identity.jsonc for the rest). The source has
no "path": ficbroker reads AZURE_FEDERATED_TOKEN_FILE, which the webhook sets in its container.
EOF
cat <<EOF
{
  "sources": {
    "service-account": {
      "type": "workload_identity"
    }
  },
  "targets": [
    {
      "tenant_id": "$tenant_for_config",
      "client_id": "$app_id",
      "source": "service-account",
      "default": true,
      "prewarm": ["https://graph.microsoft.com"],
      "cloud": "$cloud"
    }
  ]
}
EOF
