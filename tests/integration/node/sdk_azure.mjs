// @azure/identity WorkloadIdentityCredential configured by the environment the AKS workload
// identity webhook sets: AZURE_TENANT_ID, AZURE_CLIENT_ID, AZURE_FEDERATED_TOKEN_FILE,
// AZURE_AUTHORITY_HOST; plus disableInstanceDiscovery (the authority is not a Microsoft cloud).
// getToken(AZURE_SCOPE, default https://cognitiveservices.azure.com/.default).
// Prints {"expires_on" (ISO 8601), "expires_on_timestamp" (ms), "token_type", "access_token"}.
import { WorkloadIdentityCredential } from "@azure/identity";

import { run } from "./sdk_common.mjs";

const scope = process.env.AZURE_SCOPE || "https://cognitiveservices.azure.com/.default";
const credential = new WorkloadIdentityCredential({ disableInstanceDiscovery: true });

await run(async () => {
  const token = await credential.getToken(scope);
  if (!token) throw new Error("getToken returned null");
  return {
    expires_on: new Date(token.expiresOnTimestamp).toISOString(),
    expires_on_timestamp: token.expiresOnTimestamp,
    token_type: token.tokenType ?? "Bearer",
    access_token: token.token,
  };
});
