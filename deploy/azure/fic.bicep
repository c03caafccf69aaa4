// fic.bicep: the app-tenant side of ficbroker's identity chain, declaratively.
//
// Creates (idempotently) in the tenant and resource group you deploy to:
//   - a user-assigned managed identity (UAMI),
//   - a multi-tenant app registration (needs the Microsoft Graph Bicep extension enabled in a bicepconfig.json; see README.md),
//   - a FIC on the app trusting the UAMI: issuer <login endpoint><tenant>/v2.0, subject = the UAMI's
//     principal (object) id, audience api://AzureADTokenExchange (cloud-specific),
//   - optionally a second FIC trusting an AKS service account directly (issuer = the cluster's OIDC
//     issuer). Never point a FIC at a token that itself came from a FIC (AADSTS700231).
//
// Deploy (Bicep >= 0.36.1; the deploying user needs Application.ReadWrite.All or the
// Application Developer role in Entra, and Managed Identity Contributor on the resource group):
//   az deployment group create --resource-group <rg> --template-file deploy/azure/fic.bicep \
//     --parameters appUniqueName=ficbroker-cross-tenant
// Then, in each resource tenant: deploy/azure/setup-resource-tenant.sh --app-id <appId output>.
// The FIC does not assign the UAMI to a VM: use `az vm identity assign` (or setup-app-tenant.sh --vm-name).

extension microsoftGraphV1

@description('Name of the user-assigned managed identity.')
param identityName string = 'ficbroker-uami'

@description('Region of the managed identity.')
param location string = resourceGroup().location

@description('Immutable key of the app registration in Bicep (keep it stable across deployments).')
param appUniqueName string = 'ficbroker-cross-tenant'

@description('Display name of the app registration.')
param appDisplayName string = 'ficbroker-cross-tenant'

@description('Optional: OIDC issuer URL of an AKS cluster whose service account may act as the app ("" = none). Use the value of az aks show --query oidcIssuerProfile.issuerUrl exactly, trailing slash included.')
param aksIssuerUrl string = ''

@description('Namespace of that service account.')
param aksNamespace string = 'default'

@description('Name of that service account.')
param aksServiceAccount string = 'demo-app'

// The FIC audience differs per cloud; the issuer uses the cloud's login endpoint (it ends with '/').
var ficAudiences = {
  AzureCloud: 'api://AzureADTokenExchange'
  AzureUSGovernment: 'api://AzureADTokenExchangeUSGov'
  AzureChinaCloud: 'api://AzureADTokenExchangeChina'
}
var uamiFicAudience = ficAudiences[environment().name]
var managedIdentityIssuer = '${environment().authentication.loginEndpoint}${tenant().tenantId}/v2.0'

resource uami 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: identityName
  location: location
}

resource app 'Microsoft.Graph/applications@v1.0' = {
  uniqueName: appUniqueName
  displayName: appDisplayName
  // Multi-tenant: the app must be provisionable into the resource tenants.
  signInAudience: 'AzureADMultipleOrgs'

  // Managed identity as a FIC. The subject is the principal (object) id, case-sensitive; not the client id.
  resource uamiFic 'federatedIdentityCredentials@v1.0' = {
    name: '${appUniqueName}/uami-${identityName}'
    description: 'ficbroker: UAMI ${identityName} acts as this app'
    issuer: managedIdentityIssuer
    subject: uami.properties.principalId
    audiences: [
      uamiFicAudience
    ]
  }
}

// Direct service account -> app federation for ficbroker's workload_identity source. The token the
// azure-workload-identity webhook projects has audience api://AzureADTokenExchange in every cloud.
resource aksFic 'Microsoft.Graph/applications/federatedIdentityCredentials@v1.0' = if (!empty(aksIssuerUrl)) {
  name: '${app.uniqueName}/aks-${aksNamespace}-${aksServiceAccount}'
  description: 'ficbroker: service account ${aksNamespace}/${aksServiceAccount} acts as this app'
  issuer: aksIssuerUrl
  subject: 'system:serviceaccount:${aksNamespace}:${aksServiceAccount}'
  audiences: [
    'api://AzureADTokenExchange'
  ]
}

@description('The app (home) tenant.')
output appTenantId string = tenant().tenantId

@description('ficbroker config: sources.<name>.client_id (type imds or app_service).')
output uamiClientId string = uami.properties.clientId

@description('The FIC subject.')
output uamiPrincipalId string = uami.properties.principalId

@description('Assign this to the VM / scale set / App Service that runs ficbroker.')
output uamiResourceId string = uami.id

@description('ficbroker config: targets[].client_id; setup-resource-tenant.sh --app-id.')
output appId string = app.appId

output ficIssuer string = managedIdentityIssuer
output ficAudience string = uamiFicAudience
