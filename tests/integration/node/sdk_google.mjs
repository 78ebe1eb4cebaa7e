// google-auth-library with an external_account credential configuration found the usual way
// (GOOGLE_APPLICATION_CREDENTIALS; an executable credential_source also needs
// GOOGLE_EXTERNAL_ACCOUNT_ALLOW_EXECUTABLES=1): gets an access token. Then, when
// VERTEX_API_ENDPOINT (host:port) is set, @google-cloud/vertexai generateContent there, with its
// own GoogleAuth (it bundles google-auth-library 9.x) picking up the same configuration.
// VERTEX_PROJECT (or GOOGLE_CLOUD_PROJECT), VERTEX_LOCATION, VERTEX_MODEL, SDK_PROMPT choose the call.
// Prints {"client", "access_token", "expiry", "service_account", "vertex_text", "vertex_model"}.
import { GoogleAuth } from "google-auth-library";

import { run } from "./sdk_common.mjs";

const CLOUD_PLATFORM = "https://www.googleapis.com/auth/cloud-platform";
const apiEndpoint = process.env.VERTEX_API_ENDPOINT;
const project = process.env.VERTEX_PROJECT || process.env.GOOGLE_CLOUD_PROJECT || "test-project";
const location = process.env.VERTEX_LOCATION || "us-central1";
const modelName = process.env.VERTEX_MODEL || "gemini-2.0-flash-001";
const prompt = process.env.SDK_PROMPT || "hello from brokerd";

// projectId: GoogleAuth.getClient() looks the project up while building the client; with no
// project given here or in GOOGLE_CLOUD_PROJECT, an external_account client asks
// cloudresourcemanager.googleapis.com for the pool's project (with a freshly exchanged token),
// which fails offline. Credentials are still found the usual way.
const auth = new GoogleAuth({ scopes: [CLOUD_PLATFORM], projectId: project });
let model = null;
if (apiEndpoint) {
  // Imported only when used: it prints a deprecation warning on stderr when constructed.
  const { VertexAI } = await import("@google-cloud/vertexai");
  // googleAuthOptions.projectId: the same project lookup, in its own google-auth-library 9.x.
  model = new VertexAI({
    project, location, apiEndpoint, googleAuthOptions: { projectId: project },
  }).getGenerativeModel({ model: modelName });
}

await run(async () => {
  const client = await auth.getClient();
  const { token } = await client.getAccessToken();
  if (!token) throw new Error("google-auth-library returned no access token");
  const out = {
    client: client.constructor.name,
    access_token: token,
    expiry: client.credentials?.expiry_date
      ? new Date(client.credentials.expiry_date).toISOString() : null,
    service_account: client.getServiceAccountEmail?.() ?? null,
    vertex_text: null,
    vertex_model: null,
  };
  if (model) {
    const result = await model.generateContent({
      contents: [{ role: "user", parts: [{ text: prompt }] }],
    });
    const candidate = result.response.candidates?.[0];
    out.vertex_text = candidate?.content?.parts?.map((p) => p.text).join("") ?? null;
    out.vertex_model = result.response.modelVersion ?? modelName;
  }
  return out;
});
